"""A lock's settings from its municipality's profile (issue #23): the `[lock]` table of the
profile that judges the provider of the lock's customers, resolved here because the commands
that need it live in store (`kvitto command schedule`) and install (`kvitto provision`), and
neither may import verify (the import-linter layers).

    settings, given = lock_settings(store, ["c-1001"])   # LockSettings, "profile haninge"
"""

from __future__ import annotations

from kvitto.errors import KvittoError
from kvitto.store.db import Store
from kvitto.store.schedules import customer_municipalities
from kvitto.verify.rules import LockSettings, load_profile


def lock_settings(store: Store, customers: list[str]) -> tuple[LockSettings, str]:
    """The [lock] settings of the profile of these customers' providers and where they came
    from. kvitto's defaults (said so) when no provider serves any of them yet; KvittoError when
    their providers are judged by different profiles (a shared entrance lock across
    municipalities: give the values explicitly)."""
    found = customer_municipalities(store, customers)
    names = sorted({name for name in found.values() if name})
    if not names:
        unserved = ", ".join(customers)
        return LockSettings(), f"kvitto's defaults: no provider serves {unserved} yet"
    if len(names) > 1:
        raise KvittoError(
            f"the customers {', '.join(customers)} are served by providers of different "
            f"municipality profiles ({', '.join(names)}): give the lock's values explicitly"
        )
    return load_profile(names[0]).lock, f"profile {names[0]}"


def profile_tolerance(store: Store, customers: list[str]) -> tuple[int, str]:
    """`kvitto command schedule`'s tolerance in minutes without --tolerance-min."""
    settings, given = lock_settings(store, customers)
    return settings.tolerance_min, given
