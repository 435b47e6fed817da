"""Case bundles (FORMATS.md §3): their types (Registry, Order, Claim, Case), the field parsers
each reader shares, and registry.toml.

    registry = parse_registry(text)            # raises CaseError naming file, line and field
    case = read_case(Path("case/"))    # kvitto.verify.case_read: a bundle's folder, all files
    orders = parse_orders(text)        # kvitto.verify.case_csv: orders.csv and claims.csv
    write_case(Path("copy/"), ...)    # kvitto.verify.case_write: the same files written

Times are ISO 8601 with offset, or local Europe/Stockholm time when the offset is left out.
Nothing is dropped silently: the first unusable field stops the read with its location.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

try:
    import tomllib  # pyright: ignore[reportMissingImports]
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

from kvitto.errors import KvittoError
from kvitto.evidence.cose import DEVICE_ID, read_messages
from kvitto.store.registry import CREDENTIAL_ID, Customer

STOCKHOLM = ZoneInfo("Europe/Stockholm")
ORDER_FIELDS = (
    "customer", "activity", "granted_minutes_month", "valid_from", "valid_to",
    "double_staffing", "tag_exempt",
)  # fmt: skip
CLAIM_FIELDS = (
    "claim_id", "customer", "staff", "activity", "start", "end", "registered_via",
    "registered_at", "approved_at", "adjusted_at", "double_staffing", "count", "reason",
    "planned_start", "planned_end", "notified_at", "proof",
)  # fmt: skip
REGISTERED_VIA = frozenset({"tag", "lock", "alarm_unit", "manual"})
DEVICE_ROLES = frozenset({"tag", "lock", "alarm"})
CREDENTIAL_KINDS = frozenset({"badge", "ntag424", "phone"})
AGE_GROUPS = frozenset({"65+", "<65", "<65-psych"})


class CaseError(KvittoError):
    """A case bundle that cannot be used as it is: the message names file, line and field."""


@dataclass(frozen=True)
class Device:
    id: str
    customer: str
    role: str
    public_key: bytes
    installed: date | None = None
    revoked: date | None = None
    # A shared entrance lock (issue #23): its building and the customers it serves; customer
    # is then "". Its events are access records, never presence (RULES E6, kvitto.verify.visits).
    building: str = ""
    customers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Credential:
    id: str  # hex of the 16-byte credential id
    staff: str
    provider: str
    kind: str
    revoked: date | None = None
    # Key material to check a tap's proof (kvitto.verify.taps); empty when the bundle has none:
    # a phone's Ed25519 public key; an NTAG 424 badge's SDM meta and file read keys.
    public_key: bytes = b""
    sdm_meta_key: bytes = b""
    sdm_file_key: bytes = b""


@dataclass
class Registry:
    customers: dict[str, Customer] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)

    def household_of(self, customer: str) -> str:
        """The household id, or the customer's own id when it lives alone."""
        found = self.customers.get(customer)
        return found.household if found and found.household else customer

    def staff_provider(self, staff: str) -> str:
        """The provider of a staff pseudonym's (first) credential, "" when unknown."""
        index = self.__dict__.get("_providers")
        if index is None or len(index[1]) != len(self.credentials):
            providers: dict[str, str] = {}
            for credential in self.credentials.values():
                providers.setdefault(credential.staff, credential.provider)
            index = (providers, dict(self.credentials))
            self.__dict__["_providers"] = index
        return index[0].get(staff, "")


# The record types a month's verification holds by the million (claims, orders) have slots:
# no per-instance __dict__, a third of the memory (issue #10).
@dataclass(frozen=True, slots=True)
class Order:
    customer: str
    activity: str
    granted_minutes_month: int
    valid_from: date
    valid_to: date | None
    double_staffing: bool = False
    tag_exempt: bool = False
    line: int = 0
    # Optional column `ended_at`: when the end (valid_to: service ended, customer died) was
    # registered (004 Uppehåll, verkställighet och avslut; RULES.md X5 with D5).
    ended_at: datetime | None = None

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: str
    customer: str
    staff: str
    activity: str
    start: datetime
    end: datetime
    registered_via: str = "manual"
    registered_at: datetime | None = None
    approved_at: datetime | None = None
    adjusted_at: datetime | None = None
    double_staffing: bool = False
    count: int = 0
    reason: str = ""
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    notified_at: datetime | None = None
    proof: str = ""
    line: int = 0
    # Computed once on first use, in slots (a cached_property needs a __dict__ per claim);
    # not part of the claim: no constructor argument, not compared, not shown.
    _minutes: int | None = field(default=None, init=False, repr=False, compare=False)
    _local_start: datetime | None = field(default=None, init=False, repr=False, compare=False)
    _local_end: datetime | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def minutes(self) -> int:
        found = self._minutes
        if found is None:
            found = round((self.end - self.start).total_seconds() / 60)
            object.__setattr__(self, "_minutes", found)
        return found

    @property
    def planned_minutes(self) -> int | None:
        if self.planned_start is None or self.planned_end is None:
            return None
        return round((self.planned_end - self.planned_start).total_seconds() / 60)

    @property
    def local_start(self) -> datetime:
        found = self._local_start
        if found is None:
            found = self.start.astimezone(STOCKHOLM)
            object.__setattr__(self, "_local_start", found)
        return found

    @property
    def local_end(self) -> datetime:
        found = self._local_end
        if found is None:
            found = self.end.astimezone(STOCKHOLM)
            object.__setattr__(self, "_local_end", found)
        return found


@dataclass
class Case:
    path: Path
    registry: Registry
    orders: list[Order]
    claims: list[Claim]
    evidence_path: Path | None

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """(position, COSE_Sign1 bytes) from the bundle's evidence file, in file order."""
        if self.evidence_path is None:
            return iter(())
        return read_messages(self.evidence_path)


# -- field parsers: each names where the bad value is ------------------------------------------


# FORMATS.md §3's times: a date, T or a space, hours and minutes with a colon, optional seconds
# and fraction, optional offset. Python's fromisoformat takes far more (week dates, basic
# format, fractions of an hour: "07.30" was 07:00:00.3, the Swedish 07:30 misread), so a value
# must match this first; anything else is refused with file, line and field.
_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:[Zz]|[+-]\d{2}:\d{2})?"
)
_SWEDISH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}\.\d{2}(?:\.\d{2})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str) -> datetime:
    """ISO 8601 with offset (or Z), or local Europe/Stockholm wall time without one:
    YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM] (a space for the T is fine). ValueError with
    what is wrong otherwise."""
    text = text.strip()
    if not _TIME.fullmatch(text):
        if _SWEDISH_TIME.fullmatch(text):
            raise ValueError("hours and minutes go with a colon (07:30), not a dot (07.30)")
        raise ValueError("expected YYYY-MM-DDTHH:MM[:SS][+HH:MM]")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        # FORMATS.md §3: no offset means Stockholm local time; fold=0 picks the first (summer)
        # reading of the repeated hour at the October change, the usual convention.
        value = value.replace(tzinfo=STOCKHOLM)
    # Kept in UTC: arithmetic between two Stockholm times with the same tzinfo would ignore a
    # daylight-saving change between them (Python subtracts wall times within one zone).
    return value.astimezone(timezone.utc)


def _where(source: str, line: int, name: str) -> str:
    return f"{source} line {line}, field {name}"


def _time(text: str, source: str, line: int, name: str, required: bool = False) -> datetime | None:
    if not text.strip():
        if required:
            raise CaseError(f"{_where(source, line, name)}: missing")
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise CaseError(
            f"{_where(source, line, name)}: {text!r} is not an ISO 8601 time ({error})"
        ) from None


def _time_required(text: str, source: str, line: int, name: str) -> datetime:
    value = _time(text, source, line, name, required=True)
    if value is None:  # _time raises for a missing required field; this narrows the type
        raise CaseError(f"{_where(source, line, name)}: missing")
    return value


def _date(text: Any, source: str, line: int, name: str, required: bool = False) -> date | None:
    if isinstance(text, date) and not isinstance(text, datetime):
        return text  # TOML dates arrive parsed
    if not isinstance(text, str):
        raise CaseError(f"{_where(source, line, name)}: {text!r} is not a date")
    if not text.strip():
        if required:
            raise CaseError(f"{_where(source, line, name)}: missing")
        return None
    try:
        if not _DATE.fullmatch(text.strip()):
            raise ValueError("not YYYY-MM-DD")  # fromisoformat also takes 20261111, 2026-W45
        return date.fromisoformat(text.strip())
    except ValueError:
        raise CaseError(
            f"{_where(source, line, name)}: {text!r} is not a date (YYYY-MM-DD)"
        ) from None


def _flag(text: str, source: str, line: int, name: str) -> bool:
    value = text.strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise CaseError(f"{_where(source, line, name)}: {text!r} must be 0 or 1")


def _whole(text: str, source: str, line: int, name: str) -> int:
    value = text.strip()
    if not value:
        return 0
    if not value.isdigit():
        raise CaseError(f"{_where(source, line, name)}: {text!r} is not a whole number")
    return int(value)


def _text(row: dict[str, str], source: str, line: int, name: str) -> str:
    value = (row.get(name) or "").strip()
    if not value:
        raise CaseError(f"{_where(source, line, name)}: missing")
    return value


# -- registry.toml ----------------------------------------------------------------------------


def _toml_lines(raw: str, table: str) -> list[int]:
    """Lines of the [[table]] headers in order, so TOML errors point at a line too (found in
    one pass: a registry of 10k customers is read by every judgement)."""
    header = f"[[{table}]]"
    return [n for n, text in enumerate(raw.splitlines(), start=1) if text.strip() == header]


def parse_registry(raw: str, source: str = "registry.toml") -> Registry:
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as error:
        raise CaseError(f"{source}: not valid TOML: {error}") from None
    registry = Registry()

    def entries(table: str) -> Iterator[tuple[int, dict[str, Any]]]:
        items = data.get(table, [])
        if not isinstance(items, list):
            raise CaseError(f"{source}: '{table}' must be an array of tables ([[{table}]])")
        lines = _toml_lines(raw, table)
        for index, item in enumerate(items):
            yield (lines[index] if index < len(lines) else 0), item

    def string(item: dict[str, Any], line: int, name: str, required: bool = True) -> str:
        value = item.get(name, "")
        if not isinstance(value, str):
            raise CaseError(f"{_where(source, line, name)}: must be a string")
        if required and not value.strip():
            raise CaseError(f"{_where(source, line, name)}: missing")
        return value.strip()

    for line, item in entries("customer"):
        customer = Customer(
            id=string(item, line, "id"),
            household=string(item, line, "household", required=False),
            age_group=string(item, line, "age_group", required=False),
        )
        if customer.age_group and customer.age_group not in AGE_GROUPS:
            raise CaseError(
                f"{_where(source, line, 'age_group')}: {customer.age_group!r} is not one of "
                f"{', '.join(sorted(AGE_GROUPS))}"
            )
        if customer.id in registry.customers:
            raise CaseError(f"{_where(source, line, 'id')}: customer {customer.id} twice")
        registry.customers[customer.id] = customer
    for line, item in entries("device"):
        device_id = string(item, line, "id")
        if not DEVICE_ID.fullmatch(device_id):
            raise CaseError(
                f"{_where(source, line, 'id')}: {device_id!r} is not [a-z0-9-]{{3,32}}"
            )
        building = string(item, line, "building", required=False)
        served: tuple[str, ...] = ()
        if building:
            customer = ""
            served = _served(item, registry, source, line)
        else:
            customer = string(item, line, "customer")
            if customer not in registry.customers:
                raise CaseError(
                    f"{_where(source, line, 'customer')}: unknown customer {customer!r}"
                )
        role = string(item, line, "role")
        if role not in DEVICE_ROLES:
            raise CaseError(f"{_where(source, line, 'role')}: {role!r} is not tag, lock or alarm")
        if building and role != "lock":
            raise CaseError(f"{_where(source, line, 'building')}: only a lock serves a building")
        key_text = string(item, line, "public_key")
        try:
            public_key = bytes.fromhex(key_text)
        except ValueError:
            public_key = b""
        if len(public_key) != 32:
            raise CaseError(
                f"{_where(source, line, 'public_key')}: must be the hex of a 32-byte Ed25519 key"
            )
        if device_id in registry.devices:
            raise CaseError(f"{_where(source, line, 'id')}: device {device_id} twice")
        registry.devices[device_id] = Device(
            id=device_id,
            customer=customer,
            role=role,
            public_key=public_key,
            installed=_date(item.get("installed", ""), source, line, "installed"),
            revoked=_date(item.get("revoked", ""), source, line, "revoked"),
            building=building,
            customers=served,
        )
    for line, item in entries("credential"):
        credential_id = string(item, line, "id").lower()
        if not CREDENTIAL_ID.fullmatch(credential_id):
            raise CaseError(
                f"{_where(source, line, 'id')}: must be the hex of a 16-byte credential id"
            )
        kind = string(item, line, "kind")
        if kind not in CREDENTIAL_KINDS:
            raise CaseError(
                f"{_where(source, line, 'kind')}: {kind!r} is not badge, ntag424 or phone"
            )
        registry.credentials[credential_id] = Credential(
            id=credential_id,
            staff=string(item, line, "staff"),
            provider=string(item, line, "provider"),
            kind=kind,
            revoked=_date(item.get("revoked", ""), source, line, "revoked"),
            **_credential_keys(item, kind, source, line),
        )
    return registry


def _served(item: dict[str, Any], registry: Registry, source: str, line: int) -> tuple[str, ...]:
    """An entrance lock's `customers`: a list of the bundle's customers (may be empty: a
    bundle of one provider holds only its own customers of the building)."""
    value = item.get("customers")
    where = _where(source, line, "customers")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise CaseError(f"{where}: must be a list of customer ids")
    for customer in value:
        if customer not in registry.customers:
            raise CaseError(f"{where}: unknown customer {customer!r}")
    return tuple(value)


# Optional key material per credential kind: field -> (kind, length in bytes).
CREDENTIAL_KEYS = {
    "public_key": ("phone", 32),
    "sdm_meta_key": ("ntag424", 16),
    "sdm_file_key": ("ntag424", 16),
}


def _credential_keys(item: dict[str, Any], kind: str, source: str, line: int) -> dict[str, bytes]:
    """A credential's optional keys (hex): a phone's `public_key`; an NTAG 424 badge's
    `sdm_meta_key` and `sdm_file_key` (both or neither)."""

    def where(name: str) -> str:
        return _where(source, line, name)

    keys: dict[str, bytes] = {}
    for name, (owner, length) in CREDENTIAL_KEYS.items():
        text = item.get(name, "")
        if not isinstance(text, str):
            raise CaseError(f"{where(name)}: must be a string")
        if not text.strip():
            continue
        if kind != owner:
            raise CaseError(f"{where(name)}: only a {owner} credential has {name}")
        try:
            value = bytes.fromhex(text.strip())
        except ValueError:
            value = b""
        if len(value) != length:
            raise CaseError(f"{where(name)}: must be the hex of {length} bytes")
        keys[name] = value
    if ("sdm_meta_key" in keys) != ("sdm_file_key" in keys):
        raise CaseError(f"{where('sdm_file_key')}: give sdm_meta_key and sdm_file_key together")
    return keys


# -- orders.csv and claims.csv ----------------------------------------------------------------
