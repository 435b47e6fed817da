"""Users, roles, passwords (Argon2id), login throttling and server-side sessions.

    add_user(store, "samordnare-p1", "coordinator", "lösenord…", provider="p-1")
    user = authenticate(store, "samordnare-p1", "lösenord…", now_ms)   # None, or raises Throttled
    session_id = start_session(store, user, now_ms)                      # a new id at every login

A user name is a role account or a pseudonym, never a person's name (no personal data). The
password hash is argon2-cffi's PasswordHasher (Argon2id, its RFC 9106 low-memory profile).
Sessions live in the store: the cookie carries only a random id (signed by Starlette's
SessionMiddleware), the store its SHA-256, so logout and the idle timeout end a session for good
and a login always issues a new id (no session fixation, ASVS V3.2.1).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kvitto.errors import KvittoError
from kvitto.store.db import Store
from kvitto.web.personnummer import find_personnummer

ROLES = ("coordinator", "auditor", "admin")
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
MIN_PASSWORD = 12  # ASVS V2.1.1
# Login throttling (ASVS V2.2.1): this many failures for one name within the window lock
# further attempts for that name until the oldest failure leaves the window.
MAX_FAILURES = 5
FAILURE_WINDOW_MS = 15 * 60 * 1000
IDLE_TIMEOUT_MS = 30 * 60 * 1000  # ASVS V3.3.2: re-authentication after 30 idle minutes

_HASHER = PasswordHasher()
# Checked when the name is unknown, so that an unknown name costs as much time as a known one.
_DUMMY_HASH = _HASHER.hash("kvitto-no-such-user")


class AccountError(KvittoError):
    """A user that cannot be added as asked (bad name, role, password)."""


class Throttled(KvittoError):
    """Too many failed logins for this name; try again later."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    provider: str = ""
    municipality: str = ""


def add_user(
    store: Store,
    name: str,
    role: str,
    password: str,
    *,
    provider: str = "",
    municipality: str = "",
    now_ms: int = 0,
) -> User:
    """Create a user; the provider or municipality its role needs must exist in the store."""
    if not USER_NAME.fullmatch(name):
        raise AccountError(
            f"user name {name!r}: 3-64 characters a-z 0-9 . _ - (a role account or pseudonym)"
        )
    if find_personnummer(name):
        raise AccountError(f"user name {name!r} contains a personal identity number")
    if role not in ROLES:
        raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if role == "coordinator":
        rows = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
        if not rows:
            raise AccountError(f"provider {provider!r} is not in the store (kvitto provider add)")
        municipality = str(rows[0][0])
    elif role == "auditor":
        provider = ""
        if not store.execute("SELECT 1 FROM providers WHERE municipality = ?", (municipality,)):
            raise AccountError(f"municipality {municipality!r} has no provider in the store")
    else:
        provider, municipality = "", ""
    if store.execute("SELECT 1 FROM users WHERE name = ?", (name,)):
        raise AccountError(f"user {name!r} exists already")
    store.execute(
        "INSERT INTO users (name, role, provider, municipality, password_hash, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, role, provider, municipality, _HASHER.hash(password), now_ms),
    )
    return User(name, role, provider, municipality)


def get_user(store: Store, name: str) -> User | None:
    rows = store.execute(
        "SELECT name, role, provider, municipality FROM users WHERE name = ? AND disabled = 0",
        (name,),
    )
    return User(*rows[0]) if rows else None


def users(store: Store) -> list[User]:
    rows = store.execute(
        "SELECT name, role, provider, municipality FROM users WHERE disabled = 0 ORDER BY name"
    )
    return [User(*row) for row in rows]


def authenticate(store: Store, name: str, password: str, now_ms: int) -> User | None:
    """The user if the password is right; None if not. Raises Throttled while locked out
    (even for the right password: an attacker must not learn it from the answer)."""
    since = now_ms - FAILURE_WINDOW_MS
    failures = store.execute(
        "SELECT COUNT(*) FROM login_failures WHERE username = ? AND at > ?", (name, since)
    )
    if int(failures[0][0]) >= MAX_FAILURES:
        raise Throttled("too many failed logins; wait 15 minutes")
    rows = store.execute(
        "SELECT password_hash FROM users WHERE name = ? AND disabled = 0", (name,)
    )
    stored = str(rows[0][0]) if rows else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password)
        ok = bool(rows)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok:
        store.execute("INSERT INTO login_failures (username, at) VALUES (?, ?)", (name, now_ms))
        return None
    store.execute("DELETE FROM login_failures WHERE username = ?", (name,))
    if _HASHER.check_needs_rehash(stored):
        store.execute(
            "UPDATE users SET password_hash = ? WHERE name = ?", (_HASHER.hash(password), name)
        )
    return get_user(store, name)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(store: Store, user: User, now_ms: int) -> str:
    """A fresh random session id for `user` (never one the browser brought along)."""
    session_id = secrets.token_urlsafe(32)
    store.execute(
        "INSERT INTO sessions (id_hash, username, created_at, last_seen) VALUES (?, ?, ?, ?)",
        (_digest(session_id), user.name, now_ms, now_ms),
    )
    return session_id


def session_user(store: Store, session_id: str, now_ms: int) -> User | None:
    """The session's user while it is alive; touching it restarts the idle clock."""
    if not session_id:
        return None
    digest = _digest(session_id)
    rows = store.execute("SELECT username, last_seen FROM sessions WHERE id_hash = ?", (digest,))
    if not rows:
        return None
    username, last_seen = str(rows[0][0]), int(rows[0][1])
    if now_ms - last_seen > IDLE_TIMEOUT_MS:
        store.execute("DELETE FROM sessions WHERE id_hash = ?", (digest,))
        return None
    if now_ms - last_seen > 10_000:  # spare the store a write per request
        store.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now_ms, digest))
    return get_user(store, username)


def end_session(store: Store, session_id: str) -> None:
    if session_id:
        store.execute("DELETE FROM sessions WHERE id_hash = ?", (_digest(session_id),))


def add_provider(
    store: Store, provider: str, municipality: str, alarm_duty: bool | None = None
) -> None:
    """A provider and the municipality (profile name) whose rules judge it; `alarm_duty`: it
    answers the municipality's safety alarms, and an open alarm opens its customers' locks to
    its credentials (kvitto.collect.alarm_access); None leaves that as it was."""
    from kvitto.verify.rules import load_profile

    load_profile(municipality)  # an unknown profile fails here, with the profile's message
    store.execute(
        "INSERT INTO providers (id, municipality) VALUES (?, ?) "
        "ON CONFLICT (id) DO UPDATE SET municipality = excluded.municipality",
        (provider, municipality),
    )
    if alarm_duty is not None:
        store.execute(
            "UPDATE providers SET alarm_duty = ? WHERE id = ?", (int(alarm_duty), provider)
        )


def assign_customers(store: Store, provider: str, customers: list[str]) -> None:
    """The provider serving each of `customers` (a customer has one provider at a time)."""
    store.executemany(
        "INSERT INTO customer_providers (customer, provider) VALUES (?, ?) "
        "ON CONFLICT (customer) DO UPDATE SET provider = excluded.provider",
        [(customer, provider) for customer in customers],
    )
