"""The registry: customers, devices, staff credentials, orders and MQTT accounts, in the store.

    registry = Registry(open_store("sqlite:///kvitto.db"))
    registry.add_customer("c-1001", household="h-17", age_group="65+")
    registry.add_device("tag-0042", "c-1001", "tag", public_key, installed="2026-09-01")

Pseudonyms only (FORMATS.md §3). A device is bound to one customer for good: binding it to
another is refused. A shared entrance lock (issue #23) is bound to a building and the customers
it serves instead (kvitto.store.entrance; its `customer` reads "", its `customers` the list). Revocation marks a row with its date; nothing is ever deleted, because
evidence signed before the revocation still counts (RULES.md I1).
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kvitto.errors import KvittoError
from kvitto.evidence.cose import DEVICE_ID, split_sign1
from kvitto.evidence.events import decode_payload
from kvitto.store.db import Store
from kvitto.store.entrance import check_same_board

PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CREDENTIAL_ID = re.compile(r"[0-9a-f]{32}")
ROLES = ("tag", "lock", "alarm")
KINDS = ("badge", "ntag424", "phone")
AGE_GROUPS = ("", "65+", "<65", "<65-psych")
LOCAL = ZoneInfo("Europe/Stockholm")
# The most events a journal holds: 4,096 segments of 4 KiB (firmware device/evidence/journal.py)
# over a signed event of at least 64 bytes. A larger reported backlog is no count of events.
MAX_BACKLOG = 4096 * 4096 // 64


def check_device_id(device_id: str, where: str = "device id") -> str:
    """The id itself, or a KvittoError: ids become MQTT usernames and topic levels."""
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise KvittoError(
            f"{where}: {device_id!r} is not a device id (3 to 32 of a-z, 0-9 and '-')"
        )
    return device_id


@dataclass(frozen=True)
class DeviceAccount:
    """One device's MQTT login as the registry holds it (there: `MqttAccount`): username =
    device id, `$7$` hash."""

    device_id: str
    password_hash: str


@dataclass(frozen=True)
class Customer:
    """A customer pseudonym, its household and age group: one record for the store and for a
    case bundle's registry.toml (kvitto.verify.case reads it into this class too)."""

    id: str
    household: str = ""
    age_group: str = ""


@dataclass(frozen=True)
class Device:
    id: str
    customer: str
    role: str
    public_key: bytes
    installed: str
    revoked: str = ""
    building: str = ""  # a shared entrance lock's building; its customer is then ""
    customers: tuple[str, ...] = ()  # the customers an entrance lock serves

    @property
    def served(self) -> tuple[str, ...]:
        """The customers whose doors this device is at: its customer, or an entrance's list."""
        return self.customers if self.building else (self.customer,)

    @property
    def revoked_at(self) -> int | None:
        """The revocation as Unix seconds (a bare date means local midnight), or None."""
        return instant(self.revoked) if self.revoked else None


@dataclass(frozen=True)
class Credential:
    """A staff credential. `key_material`: NTAG 424 diversification data or a phone's public
    key, as the enrolling tool wrote it; empty for plain badges."""

    id: str
    staff: str
    provider: str
    kind: str
    key_material: bytes = b""
    revoked: str = ""


@dataclass(frozen=True)
class Order:
    customer: str
    activity: str
    granted_minutes_month: int
    valid_from: str
    valid_to: str
    double_staffing: int = 0
    tag_exempt: int = 0


# A device's broker login (username = device id, a mosquitto `$7$` password hash): the row
# kept here is the record broker_config writes the password file from.
MqttAccount = DeviceAccount


def instant(text: str) -> int:
    """Unix seconds of an ISO date or date-time; local Europe/Stockholm time without offset."""
    try:
        if len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), LOCAL)
        else:
            moment = dt.datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=LOCAL)
    except ValueError:
        raise KvittoError(f"{text!r} is not an ISO date (YYYY-MM-DD) or date-time") from None
    return int(moment.timestamp())


def _today() -> str:
    return dt.datetime.now(LOCAL).date().isoformat()


def _checked_moment(field: str, text: str) -> str:
    instant(text)  # raises with the value named
    return text


class Registry:
    """Registry operations on a `Store`. Every method is one transaction."""

    def __init__(self, store: Store):
        self.store = store

    # -- customers ------------------------------------------------------------------------

    def add_customer(self, customer_id: str, household: str = "", age_group: str = "") -> Customer:
        """Add a customer, or update household and age group of an existing one."""
        if not PSEUDONYM.fullmatch(customer_id):
            raise KvittoError(f"customer id {customer_id!r} is not a pseudonym like 'c-1001'")
        if household and not PSEUDONYM.fullmatch(household):
            raise KvittoError(f"household {household!r} is not a pseudonym like 'h-17'")
        if age_group not in AGE_GROUPS:
            raise KvittoError(f"age_group {age_group!r}: use one of {', '.join(AGE_GROUPS[1:])}")
        self.store.execute(
            "INSERT INTO customers (id, household, age_group) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET household = excluded.household, "
            "age_group = excluded.age_group",
            (customer_id, household, age_group),
        )
        return Customer(customer_id, household, age_group)

    def customer(self, customer_id: str) -> Customer | None:
        rows = self.store.execute(
            "SELECT id, household, age_group FROM customers WHERE id = ?", (customer_id,)
        )
        return Customer(*rows[0]) if rows else None

    def customers(self) -> list[Customer]:
        rows = self.store.execute("SELECT id, household, age_group FROM customers ORDER BY id")
        return [Customer(*row) for row in rows]

    # -- devices --------------------------------------------------------------------------

    def add_device(
        self,
        device_id: str,
        customer: str,
        role: str,
        public_key: bytes,
        installed: str | None = None,
    ) -> Device:
        """Register a device for a customer. Registering the same device again with the same
        customer and key changes nothing; another customer or key is refused."""
        if not DEVICE_ID.fullmatch(device_id):
            raise KvittoError(f"device id {device_id!r} must match [a-z0-9-]{{3,32}}")
        if role not in ROLES:
            raise KvittoError(f"device {device_id}: role {role!r} is not one of {ROLES}")
        if len(public_key) != 32:
            raise KvittoError(f"device {device_id}: an Ed25519 public key is 32 bytes")
        installed = _checked_moment("installed", installed or _today())
        with self.store.transaction():
            if self.customer(customer) is None:
                raise KvittoError(f"device {device_id}: customer {customer!r} is not registered")
            existing = self.device(device_id)
            if existing is not None and existing.building:
                raise KvittoError(
                    f"device {device_id} is the entrance lock of building {existing.building}; "
                    "it cannot be bound to one customer"
                )
            if existing is not None:
                if existing.customer != customer:
                    raise KvittoError(
                        f"device {device_id} is bound to customer {existing.customer}; "
                        f"it cannot be re-bound to {customer} (install a new device instead)"
                    )
                check_same_board(existing, public_key)
                return existing
            self.store.execute(
                "INSERT INTO devices (id, customer, role, public_key, installed, revoked) "
                "VALUES (?, ?, ?, ?, ?, '')",
                (device_id, customer, role, public_key, installed),
            )
        return Device(device_id, customer, role, public_key, installed)

    def revoke_device(self, device_id: str, when: str | None = None) -> Device:
        """Mark a device revoked from `when` (default today); its earlier evidence still counts,
        but only up to the sequence it had reached now (its highest stored, plus the backlog
        it last reported): a stolen key cannot add to its past (store `revocations`)."""
        when = _checked_moment("revoked", when or _today())
        with self.store.transaction():
            device = self.device(device_id)
            if device is None:
                raise KvittoError(f"device {device_id!r} is not registered")
            if device.revoked:
                return device
            self.store.execute("UPDATE devices SET revoked = ? WHERE id = ?", (when, device_id))
            backlog = reported_backlog(self.store, device_id)
            self.store.record_revocation(device_id, int(time.time() * 1000), backlog)
        return Device(**{**device.__dict__, "revoked": when})

    def device(self, device_id: str) -> Device | None:
        rows = self.store.execute(
            "SELECT id, customer, role, public_key, installed, revoked, building FROM devices "
            "WHERE id = ?",
            (device_id,),
        )
        return _device(rows[0], self._served()) if rows else None

    def devices(self) -> list[Device]:
        rows = self.store.execute(
            "SELECT id, customer, role, public_key, installed, revoked, building FROM devices "
            "ORDER BY id"
        )
        served = self._served()
        return [_device(row, served) for row in rows]

    def _served(self) -> dict[str, tuple[str, ...]]:
        """Entrance locks' customers by device (few rows: one per customer of a building)."""
        served: dict[str, list[str]] = {}
        for device, customer in self.store.execute(
            "SELECT device, customer FROM device_customers ORDER BY device, customer"
        ):
            served.setdefault(device, []).append(customer)
        return {device: tuple(customers) for device, customers in served.items()}

    # -- credentials ----------------------------------------------------------------------

    def add_credential(
        self,
        credential_id: str,
        staff: str,
        provider: str,
        kind: str,
        key_material: bytes = b"",
    ) -> Credential:
        """Register a staff credential (id = hex of the 16-byte keyed hash, FORMATS.md §1)."""
        credential_id = credential_id.lower()
        if not CREDENTIAL_ID.fullmatch(credential_id):
            raise KvittoError(f"credential id {credential_id!r} must be 32 hex digits")
        for field, value in (("staff", staff), ("provider", provider)):
            if not PSEUDONYM.fullmatch(value):
                raise KvittoError(f"credential {credential_id}: {field} {value!r} is no pseudonym")
        if kind not in KINDS:
            raise KvittoError(f"credential {credential_id}: kind {kind!r} is not one of {KINDS}")
        with self.store.transaction():
            existing = self.credential(credential_id)
            if existing is not None:
                if (existing.staff, existing.provider, existing.kind) != (staff, provider, kind):
                    raise KvittoError(
                        f"credential {credential_id} is enrolled for {existing.staff} "
                        f"({existing.provider}); revoke it before enrolling it again"
                    )
                return existing
            self.store.execute(
                "INSERT INTO credentials (id, staff, provider, kind, key_material, revoked) "
                "VALUES (?, ?, ?, ?, ?, '')",
                (credential_id, staff, provider, kind, key_material or None),
            )
        return Credential(credential_id, staff, provider, kind, key_material)

    def revoke_credential(self, credential_id: str, when: str | None = None) -> Credential:
        when = _checked_moment("revoked", when or _today())
        with self.store.transaction():
            credential = self.credential(credential_id.lower())
            if credential is None:
                raise KvittoError(f"credential {credential_id!r} is not registered")
            if credential.revoked:
                return credential
            self.store.execute(
                "UPDATE credentials SET revoked = ? WHERE id = ?", (when, credential.id)
            )
        return Credential(**{**credential.__dict__, "revoked": when})

    def credential(self, credential_id: str) -> Credential | None:
        rows = self.store.execute(
            "SELECT id, staff, provider, kind, key_material, revoked FROM credentials "
            "WHERE id = ?",
            (credential_id,),
        )
        return _credential(rows[0]) if rows else None

    def credentials(self, provider: str | None = None) -> list[Credential]:
        rows = self.store.execute(
            "SELECT id, staff, provider, kind, key_material, revoked FROM credentials ORDER BY id"
        )
        found = [_credential(row) for row in rows]
        return [c for c in found if provider is None or c.provider == provider]

    # -- orders ---------------------------------------------------------------------------

    def add_order(self, order: Order) -> Order:
        if self.customer(order.customer) is None:
            raise KvittoError(f"order: customer {order.customer!r} is not registered")
        self.store.execute(
            "INSERT INTO orders (customer, activity, granted_minutes_month, valid_from, "
            "valid_to, double_staffing, tag_exempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                order.customer, order.activity, order.granted_minutes_month, order.valid_from,
                order.valid_to, order.double_staffing, order.tag_exempt,
            ),
        )  # fmt: skip
        return order

    def orders(self) -> list[Order]:
        rows = self.store.execute(
            "SELECT customer, activity, granted_minutes_month, valid_from, valid_to, "
            "double_staffing, tag_exempt FROM orders ORDER BY id"
        )
        return [Order(*row) for row in rows]

    # -- MQTT accounts --------------------------------------------------------------------

    def set_mqtt_account(self, device_id: str, password_hash: str) -> MqttAccount:
        """Keep a device's broker login (the hash only; broker_config writes the file)."""
        if self.device(device_id) is None:
            raise KvittoError(f"MQTT account: device {device_id!r} is not registered")
        if not password_hash.startswith("$"):
            raise KvittoError(f"MQTT account {device_id}: expected a mosquitto '$7$…' hash")
        self.store.execute(
            "INSERT INTO mqtt_accounts (username, password_hash) VALUES (?, ?) "
            "ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash",
            (device_id, password_hash),
        )
        return MqttAccount(device_id, password_hash)

    def mqtt_accounts(self, include_revoked: bool = False) -> list[MqttAccount]:
        """Broker logins; devices revoked as of now are left out unless asked for."""
        rows = self.store.execute(
            "SELECT a.username, a.password_hash, d.revoked FROM mqtt_accounts a "
            "JOIN devices d ON d.id = a.username ORDER BY a.username"
        )
        now = dt.datetime.now(LOCAL).timestamp()
        return [
            MqttAccount(username, password_hash)
            for username, password_hash, revoked in rows
            if include_revoked or not revoked or instant(revoked) > now
        ]

    # -- registry.toml (FORMATS.md §3) ----------------------------------------------------

    def import_toml(self, path: Path) -> None:
        """Load customers, devices and credentials from a case bundle's registry.toml."""
        try:
            # tomllib is standard from Python 3.11 (pyright checks against 3.10).
            tomllib = importlib.import_module("tomllib")
        except ImportError:
            raise KvittoError("reading registry.toml needs Python 3.11 or later") from None
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise KvittoError(f"{path}: {error}") from None
        with self.store.transaction():
            for number, entry in enumerate(data.get("customer", []), start=1):
                where = f"{path} [[customer]] #{number}"
                self.add_customer(
                    _field(entry, "id", where),
                    entry.get("household", ""),
                    entry.get("age_group", ""),
                )
            for number, entry in enumerate(data.get("device", []), start=1):
                where = f"{path} [[device]] #{number}"
                try:
                    key = bytes.fromhex(_field(entry, "public_key", where))
                except ValueError:
                    raise KvittoError(f"{where}, field public_key: not hex") from None
                device_id = _field(entry, "id", where)
                try:
                    if "building" in entry:
                        from kvitto.store.entrance import add_entrance_lock

                        add_entrance_lock(
                            self,
                            device_id,
                            _field(entry, "building", where),
                            _customer_list(entry, where),
                            key,
                            entry.get("installed") or None,
                        )
                        if entry.get("revoked"):
                            self.revoke_device(device_id, str(entry["revoked"]))
                        continue
                    self.add_device(
                        device_id,
                        _field(entry, "customer", where),
                        entry.get("role", "tag"),
                        key,
                        entry.get("installed") or None,
                    )
                    if entry.get("revoked"):
                        self.revoke_device(device_id, str(entry["revoked"]))
                except KvittoError as error:
                    raise KvittoError(f"{where}: {error}") from None
            for number, entry in enumerate(data.get("credential", []), start=1):
                where = f"{path} [[credential]] #{number}"
                try:
                    credential_id = _field(entry, "id", where)
                    self.add_credential(
                        credential_id,
                        _field(entry, "staff", where),
                        _field(entry, "provider", where),
                        entry.get("kind", "badge"),
                        _phone_key(entry, where),
                    )
                    if entry.get("revoked"):
                        self.revoke_credential(credential_id, str(entry["revoked"]))
                except KvittoError as error:
                    raise KvittoError(f"{where}: {error}") from None

    def to_toml(
        self,
        customers: list[Customer] | None = None,
        devices: list[Device] | None = None,
        credentials: list[Credential] | None = None,
    ) -> str:
        """registry.toml text for the given rows (default: the whole registry)."""
        lines: list[str] = []
        for customer in self.customers() if customers is None else customers:
            lines += ["[[customer]]", f"id = {toml_string(customer.id)}"]
            if customer.household:
                lines.append(f"household = {toml_string(customer.household)}")
            if customer.age_group:
                lines.append(f"age_group = {toml_string(customer.age_group)}")
            lines.append("")
        written = None if customers is None else {c.id for c in customers}
        for device in self.devices() if devices is None else devices:
            if device.building:
                # an entrance lock: the customers it serves that this file holds (§3)
                served = [c for c in device.customers if written is None or c in written]
                bound = [
                    f"building = {toml_string(device.building)}",
                    "customers = [" + ", ".join(toml_string(c) for c in served) + "]",
                ]
            else:
                bound = [f"customer = {toml_string(device.customer)}"]
            lines += [
                "[[device]]",
                f"id = {toml_string(device.id)}",
                *bound,
                f"role = {toml_string(device.role)}",
                f"public_key = {toml_string(device.public_key.hex())}",
                f"installed = {toml_string(device.installed)}",
                f"revoked = {toml_string(device.revoked)}",
                "",
            ]
        for credential in self.credentials() if credentials is None else credentials:
            lines += [
                "[[credential]]",
                f"id = {toml_string(credential.id)}",
                f"staff = {toml_string(credential.staff)}",
                f"provider = {toml_string(credential.provider)}",
                f"kind = {toml_string(credential.kind)}",
                f"revoked = {toml_string(credential.revoked)}",
            ]
            if credential.kind == "phone" and len(credential.key_material) == 32:
                # public: lets a verifier check the phone's answers (kvitto.verify.taps)
                lines.append(f"public_key = {toml_string(credential.key_material.hex())}")
            lines.append("")
        return "\n".join(lines)


def _phone_key(entry: dict, where: str) -> bytes:
    """A phone credential's `public_key` (hex) as its key material; b"" for other kinds."""
    text = entry.get("public_key", "")
    if entry.get("kind") != "phone" or not text:
        return b""
    try:
        return bytes.fromhex(str(text))
    except ValueError:
        raise KvittoError(f"{where}, field public_key: not hex") from None


def _customer_list(entry: dict, where: str) -> list[str]:
    value = entry.get("customers")
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise KvittoError(f"{where}, field customers: a list of customer ids")
    return value


def _field(entry: dict, name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise KvittoError(f"{where}, field {name}: missing or not text")
    return value


def toml_string(text: str) -> str:
    """A TOML basic string (registry.toml here and in kvitto.verify.case's bundles): backslash and
    quote escaped; pseudonyms and hex need nothing more."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _device(row: tuple, served: dict[str, tuple[str, ...]]) -> Device:
    device_id, customer, role, public_key, installed, revoked, building = row
    if building:  # an entrance lock is no one customer's: the first stands in the column only
        customer = ""
    customers = served.get(device_id, ()) if building else ()
    return Device(
        device_id, customer, role, bytes(public_key), installed, revoked, building, customers
    )


def _credential(row: tuple) -> Credential:
    credential_id, staff, provider, kind, key_material, revoked = row
    return Credential(credential_id, staff, provider, kind, bytes(key_material or b""), revoked)


def run_list(store_url: str, what: str, output_format: str) -> list[dict[str, Any]]:
    """`kvitto registry list devices|staff|customers`: one line (or JSON object) per row,
    revoked ones with their date; staff as their credentials, the ids `revoke` takes."""
    import json

    import click

    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        registry = Registry(store)
        if what == "devices":
            rows = [{"device": d.id, "customer": d.customer or f"{d.building}: "
                     + ",".join(d.customers), "role": d.role,
                     "installed": d.installed, "revoked": d.revoked}
                    for d in registry.devices()]  # fmt: skip
        elif what == "staff":
            rows = [{"staff": c.staff, "provider": c.provider, "kind": c.kind,
                     "credential": c.id, "revoked": c.revoked}
                    for c in sorted(registry.credentials(), key=lambda c: (c.staff, c.id))]  # fmt: skip
        else:
            rows = [{"customer": c.id, "household": c.household, "age_group": c.age_group}
                    for c in registry.customers()]  # fmt: skip
    if output_format == "json":
        click.echo(json.dumps(rows))
        return rows
    if not rows:
        click.echo(f"no {what} in the registry")
    for row in rows:
        revoked = row.pop("revoked", "")
        click.echo("  ".join(f"{v}" for v in row.values() if v != "")
                   + (f"  revoked {revoked}" if revoked else ""))  # fmt: skip
    return rows


def reported_backlog(store: Store, device: str) -> int | None:
    """`backlog` of the device's newest stored health report: events journaled and not yet
    acknowledged (docs/formats-v1-additions.md); None without a report or a count in it."""
    rows = store.execute(
        "SELECT message FROM events WHERE device = ? AND type = 'health' "
        "ORDER BY seq DESC LIMIT 1",
        (device,),
    )
    x = decode_payload(split_sign1(bytes(rows[0][0]))[2]).x if rows else None
    backlog = (x or {}).get("backlog")
    return backlog if type(backlog) is int and 0 <= backlog <= MAX_BACKLOG else None
