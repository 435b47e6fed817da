"""Who may see what: the gate every Scope (kvitto.web.scope) is built on.

    Visibility(store, user, now).providers   # coordinator: [own]; auditor: the municipality's
    .provider(p), .customer_provider(c), .month(p, m), .own_phone(id)   # the id, or NotFound
    .devices(now_ms)                         # the Enheter page's rows: admin all, coordinator own

An id the user may not see is NotFound, the same answer as an id that does not exist. Also
the errors the pages turn into answers (NotFound: 404, Refused: the form says why) and the
times as the store keeps them (ms, moment).
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta, timezone

from kvitto.errors import KvittoError
from kvitto.fleet.status import DeviceStatus, fleet_status
from kvitto.store.db import Store
from kvitto.store.registry import Registry
from kvitto.verify.rules import Profile, load_profile
from kvitto.verify.workdays import STOCKHOLM, local, month_bounds, parse_month
from kvitto.web.accounts import User


class NotFound(KvittoError):
    """Not there, or not the user's to see (the two are one answer on purpose)."""


class Refused(KvittoError):
    """An action the form must say no to, with the reason for the person (shown in the page)."""


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def moment(value_ms: int) -> datetime:
    return datetime.fromtimestamp(value_ms / 1000, timezone.utc)


class Visibility:
    """The user's providers and the one gate to them; kvitto.web.scope.Scope reads through it."""

    def __init__(self, store: Store, user: User, now: datetime):
        self.store = store
        self.user = user
        self.now = now
        if user.role == "coordinator":
            self.providers = [user.provider]
        elif user.role == "auditor":
            rows = store.execute(
                "SELECT id FROM providers WHERE municipality = ? ORDER BY id", (user.municipality,)
            )
            self.providers = [str(row[0]) for row in rows]
        else:
            self.providers = []
        self._profiles: dict[str, Profile] = {}

    # -- the one gate -------------------------------------------------------------------

    def provider(self, provider: str) -> str:
        if provider not in self.providers:
            raise NotFound(provider)
        return provider

    def customer_provider(self, customer: str) -> str:
        marks = ", ".join("?" * len(self.providers)) or "''"
        rows = self.store.execute(
            f"SELECT provider FROM customer_providers WHERE customer = ? AND provider IN ({marks})",
            (customer, *self.providers),
        )
        if not rows:
            raise NotFound(customer)
        return str(rows[0][0])

    def own_phone(self, credential_id: str) -> str:
        """A staff phone's credential of the coordinator's provider (docs/phone.md); NotFound
        for another provider's, a badge or an unknown id."""
        rows = self.store.execute(
            "SELECT id FROM credentials WHERE id = ? AND provider = ? AND kind = 'phone'",
            (credential_id.lower(), self.own),
        )
        if not rows:
            raise NotFound(credential_id)
        return str(rows[0][0])

    def profile(self, provider: str) -> Profile:
        self.provider(provider)
        if provider not in self._profiles:
            rows = self.store.execute(
                "SELECT municipality FROM providers WHERE id = ?", (provider,)
            )
            self._profiles[provider] = _profile(str(rows[0][0]))
        return self._profiles[provider]

    @property
    def own(self) -> str:
        """The coordinator's provider (NotFound for anyone else: the page does not exist)."""
        if self.user.role != "coordinator":
            raise NotFound("coordinator pages")
        return self.user.provider

    def devices(self, now_ms: int) -> list[DeviceStatus]:
        """The fleet view (kvitto.fleet.status) the user may see: an admin every device, a
        coordinator those at the doors of the provider's customers (an entrance lock: any of
        the customers it serves), anyone else none."""
        rows = fleet_status(self.store, now_ms)
        if self.user.role == "admin":
            return rows
        if self.user.role != "coordinator":
            raise NotFound("devices")
        customers = {str(row[0]) for row in self.store.execute(
            "SELECT customer FROM customer_providers WHERE provider = ?", (self.own,))}  # fmt: skip
        served = {device.id: device.served for device in Registry(self.store).devices()}
        return [row for row in rows if customers.intersection(served.get(row.device, ()))]

    # -- months -------------------------------------------------------------------------

    def months(self, provider: str) -> list[str]:
        # every month with claims is judged on import (and on every record): `judged` lists
        # them in a row each, where the claims table would be scanned by the million
        rows = self.store.execute(
            "SELECT month FROM judged WHERE provider = ? ORDER BY month DESC",
            (self.provider(provider),),
        )
        return [str(row[0]) for row in rows]

    def open_months(self, provider: str) -> list[str]:
        """This month and the one before (its deadlines run into this one)."""
        today = local(self.now).date()
        first = today.replace(day=1)
        previous = (first - timedelta(days=1)).replace(day=1)
        wanted = {f"{first:%Y-%m}", f"{previous:%Y-%m}"}
        return [m for m in self.months(provider) if m in wanted]

    def month(self, provider: str, month: str) -> str:
        if month not in self.months(provider):
            raise NotFound(month)
        return month


@functools.cache
def _profile(name: str) -> Profile:
    """Profiles are files of the installed package: read once per process."""
    return load_profile(name)


def month_range(month: str) -> tuple[datetime, datetime]:
    start, end = month_bounds(*parse_month(month))
    return start, end


def local_day(text: str | None, now: datetime) -> date:
    if text:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise NotFound(text) from None
    return now.astimezone(STOCKHOLM).date()
