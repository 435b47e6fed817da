"""Visit rules (RULES.md): one module per family, each rule a small function with its id.

    from kvitto.verify.rules import Facts, run_rules, load_profile
    profile = load_profile("norrtalje")
    findings = run_rules(Facts(profile, 2026, 10, registry, claims, orders, evidence))

A rule is `fn(facts, params) -> list[Finding]`, pure over plain data (claims, orders, presence
intervals); `params` is the rule's table in the profile. A rule that needs data the bundle does
not have appends to `facts.not_checked` instead of passing silently.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

try:
    import tomllib  # pyright: ignore[reportMissingImports]
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

from kvitto.errors import KvittoError
from kvitto.verify.case import Claim, Order, Registry
from kvitto.verify.reasons import DEFAULT, Reason
from kvitto.verify.visits import Evidence

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
OUTCOMES = ("reject", "adjust", "follow_up")
WHERE = frozenset({"tag", "elsewhere", "tag_or_elsewhere", "alarm"})


class ProfileError(KvittoError):
    """A profile that cannot be used: unknown rule, bad activity entry."""


@dataclass(frozen=True, slots=True)
class Finding:
    claim_id: str
    customer: str
    rule: str
    outcome: str
    payable_minutes: int
    why: Reason  # a reason code and its parameters, in words only at the edge (reasons.py)
    category: str = ""  # set when the rule moves the claim to another category (C3, C5)
    source: str = ""  # the section of the profile's document the rule comes from

    @property
    def reason(self) -> str:
        """The reason in the default language (Swedish)."""
        return self.why.text(DEFAULT)

    def text(self, lang: str = DEFAULT) -> str:
        return self.why.text(lang)

    def as_dict(self, lang: str = DEFAULT) -> dict[str, Any]:
        return {
            "claim_id": self.claim_id,
            "customer": self.customer,
            "rule": self.rule,
            "outcome": self.outcome,
            "payable_minutes": self.payable_minutes,
            "reason": self.why.text(lang),
            "reason_code": self.why.code,
            "reason_args": self.why.as_json()["args"],
            "source": self.source,
        }


@dataclass(frozen=True)
class Activity:
    code: str
    name: str
    category: str
    where: str  # tag | elsewhere | tag_or_elsewhere | alarm
    arrive_and_depart: bool = False  # E4
    frame: bool = False  # inside the frame time [ramtid] (D6)
    service: bool = False  # a service activity (B3: service-only customers)


@dataclass(frozen=True)
class LockSettings:
    """A profile's [lock] table (issue #23): what the municipality's locks do around a visit.
    The defaults are kvitto's, used where the profile's document says nothing."""

    tolerance_min: int = 15  # a planned visit opens the door this many minutes either side
    fallback: str = "open_for_allowed"  # no usable schedule: open_for_allowed | deny
    door_open_s: int = 300  # a door held open this long is a door_open event and an alert


@dataclass
class Profile:
    name: str
    municipality: str
    source: str
    activities: dict[str, Activity]
    rules: dict[str, dict[str, Any]]
    path: Path | None = None
    # Rules the profile's document states that kvitto does not judge (RULES.md "not_checked"):
    # each {rule, source, reason, reason_sv}, always in the report.
    not_checked: list[dict[str, str]] = field(default_factory=list)
    lock: LockSettings = field(default_factory=LockSettings)

    def active(self, rule: str) -> bool:
        return rule in self.rules

    def category(self, activity: str) -> str:
        found = self.activities.get(activity)
        return found.category if found else "okand"


def _profile_path(name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    path = PROFILES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ProfileError(f"no profile {name!r} (known: {known})")
    return path


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.toml"))


def load_profile(name: str) -> Profile:
    """A profile by name or .toml path, checked against the schema below: a value of the wrong
    type or shape is a ProfileError naming the file, the key, what was expected and what was
    found (issue #25.3), never a traceback."""
    path = _profile_path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ProfileError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    check_profile(data, str(path))
    activities = {}
    for code, entry in data.get("activity", {}).items():
        activities[str(code)] = Activity(
            code=str(code),
            name=entry.get("name", str(code)),
            category=entry["category"],
            where=entry.get("where", "tag"),
            arrive_and_depart=bool(entry.get("arrive_and_depart", False)),
            frame=bool(entry.get("frame", False)),
            service=bool(entry.get("service", False)),
        )
    rules = {str(rule): dict(params) for rule, params in data.get("rules", {}).items()}
    return Profile(
        name=data.get("name", path.stem),
        municipality=data.get("municipality", path.stem),
        source=data.get("source", ""),
        activities=activities,
        rules=rules,
        path=path,
        not_checked=[dict(entry) for entry in data.get("not_checked", [])],
        lock=LockSettings(**{k: v for k, v in data.get("lock", {}).items() if k != "source"}),
    )


# -- the profile schema (issue #25.3) ----------------------------------------------------------
# A parameter's kind: int, number (int or float), str, bool, strings (a list of str), hhmm
# ("HH:MM"), or a tuple of the allowed strings.
_OUTCOME = ("reject", "adjust", "follow_up")
_ACTIVITIES = {"activities": "strings"}
PARAMS: dict[str, dict[str, Any]] = {
    "E1": {"tolerance_minutes": "number", "arrival_only": "strings"},
    "T1": {"night_from": "int", "night_to": "int", "outcome": ("follow_up", "reject"),
           "except": "strings"},
    "T2": {"tolerance_minutes": "number"},
    "T3": {"without_reason": ("follow_up", "adjust"), "categories": "strings"},
    "T4": {"except": "strings"},
    "D1": {"days": "int"},
    "D2": {"hours": "int"},
    "D3": {"weekday": "int", "fields": "strings", "time_sheet_activities": "strings",
           "time_sheet_day": "int"},
    "D4": {"at": "hhmm", "outcome": _OUTCOME},
    "D5": {"day": "int"},
    "D6": {"weekdays": "int"},
    "C1": {"outcome": _OUTCOME},
    "C2": _ACTIVITIES, "C3": _ACTIVITIES, "C4": _ACTIVITIES, "C7": _ACTIVITIES,
    "C5": {"activities": "strings", "category": "str"},
    "S1": {"tolerance_minutes": "number"},
    "S2": {"mode": ("one_registers", "one_marks_double")},
    "A1": {"activities": "strings", "tolerance_minutes": "number"},
    "A2": {"activities": "strings", "standard_minutes": "int"},
    "A3": {"activities": "strings", "minutes": "int", "tolerance_minutes": "number"},
    "A4": _ACTIVITIES,
    "X1": {"activities": "strings", "mode": ("planned_day", "days"), "max_days": "int",
           "end_days": "int", "notice_hours": "int", "month_days": "number"},
    "X2": {"activities": "strings", "max_per_month": "int"},
    "X3": {"activities": "strings", "cutoff_hour": "int", "hospital_share": "number",
           "hospital_hours": "number"},
    "X5": {"day": "int"},
    "X6": {"reason": "str", "unpaid_days": "int", "gap_days": "int"},
    "B1": {"activities": "strings", "minutes_per_customer_month": "int",
           "count_required": "bool"},
    "B2": _ACTIVITIES,
    "B3": {"activities": "strings", "minutes": "int"},
    "I5": {"max_sync_age_s": "int", "receive_tolerance_s": "int"},
}  # fmt: skip
# Numbers a rule divides by, counts days with or reads as a clock hour: (least, most).
RANGES: dict[str, tuple[float, float]] = {
    "tolerance_minutes": (0, 1440), "night_from": (0, 23), "night_to": (0, 23),
    "days": (0, 366), "hours": (0, 8760), "weekday": (1, 20), "time_sheet_day": (1, 28),
    "day": (1, 28), "weekdays": (0, 60), "standard_minutes": (0, 1440), "minutes": (0, 100000),
    "max_days": (1, 31), "end_days": (1, 31), "notice_hours": (0, 8760),
    "month_days": (1, 31), "max_per_month": (0, 1000), "cutoff_hour": (0, 23),
    "hospital_share": (0, 1), "hospital_hours": (0, 8760), "unpaid_days": (0, 31),
    "gap_days": (1, 7),
    "minutes_per_customer_month": (0, 100000), "max_sync_age_s": (0, 10**8),
    "receive_tolerance_s": (0, 10**8),
}  # fmt: skip
# Parameters that name activity codes of the profile's own catalogue.
ACTIVITY_LISTS = frozenset({"activities", "arrival_only", "except", "time_sheet_activities"})
CLAIM_TIMES = ("registered_at", "approved_at", "adjusted_at")
_TOP = {"name": "str", "municipality": "str", "source": "str"}
_ACTIVITY_KEYS = {"name": "str", "category": "str", "where": tuple(sorted(WHERE)),
                  "arrive_and_depart": "bool", "frame": "bool", "service": "bool"}  # fmt: skip
_NOT_CHECKED_KEYS = {"rule": "str", "source": "str", "reason": "str", "reason_sv": "str"}
# [lock] (issue #23): the bounds the schedule command and the lock's config.json accept
_LOCK_KEYS = {"source": "str", "tolerance_min": "int", "fallback": ("deny", "open_for_allowed"),
              "door_open_s": "int"}  # fmt: skip
_LOCK_RANGES = {"tolerance_min": (0, 120), "door_open_s": (10, 86400)}


def _shown(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)  # fmt: skip
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _fits(kind: Any, value: Any) -> bool:
    if isinstance(kind, tuple):
        return isinstance(value, str) and value in kind
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "hhmm":
        if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
            return False
        hour, minute = value[:2], value[3:]
        return hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60
    raise AssertionError(kind)


_EXPECTED = {"bool": "true or false", "int": "a whole number", "number": "a number",
             "str": "a string", "strings": "an array of strings",
             "hhmm": 'a time "HH:MM" (00:00–23:59)'}  # fmt: skip


def _expect(kind: Any) -> str:
    if isinstance(kind, tuple):
        return "one of " + ", ".join(repr(k) for k in kind)
    return _EXPECTED[kind]


def check_profile(data: dict[str, Any], source: str) -> None:
    """Raise ProfileError for the first key of a profile that does not fit the schema."""

    def fail(key: str, expected: str, value: Any) -> None:
        raise ProfileError(f"{source}: key {key}: expected {expected}, found {_shown(value)}")

    def keys(table: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            where = f"{prefix}.{key}" if prefix else key
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                raise ProfileError(f"{source}: key {where}: not a known key (known: {known})")
            if not _fits(schema[key], value):
                fail(where, _expect(schema[key]), value)

    known_top = set(_TOP) | {"activity", "rules", "not_checked", "lock"}
    for key in data:
        if key not in known_top:
            raise ProfileError(
                f"{source}: key {key}: not a known key (known: {', '.join(sorted(known_top))})"
            )
    keys({k: v for k, v in data.items() if k in _TOP}, _TOP, "")
    activity = data.get("activity", {})
    if not isinstance(activity, dict):
        fail("activity", "a table of activities ([activity.CODE])", activity)
    for code, entry in activity.items():
        if not isinstance(entry, dict):
            fail(f"activity.{code}", "a table (name, category, where)", entry)
        if "category" not in entry:
            raise ProfileError(f"{source}: key activity.{code}.category: missing")
        keys(entry, _ACTIVITY_KEYS, f"activity.{code}")
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        fail("rules", "a table of rules ([rules.ID])", rules)
    for rule_id, params in rules.items():
        if rule_id not in RULES:
            raise ProfileError(f"{source}: key rules.{rule_id}: not a rule of RULES.md")
        if not isinstance(params, dict):
            fail(f"rules.{rule_id}", "a table of the rule's parameters", params)
        keys(params, {"source": "str", **PARAMS.get(rule_id, {})}, f"rules.{rule_id}")
        for key, value in params.items():
            where = f"rules.{rule_id}.{key}"
            if key in RANGES and not isinstance(value, (str, list)):
                low, high = RANGES[key]
                if not low <= value <= high:
                    fail(where, f"a number from {low:g} to {high:g}", value)
            if key in ACTIVITY_LISTS:
                unknown = [code for code in value if code not in activity]
                if unknown:
                    fail(where, "activity codes of this profile's [activity] tables", unknown)
            if key == "fields" and any(name not in CLAIM_TIMES for name in value):
                fail(where, "names among " + ", ".join(CLAIM_TIMES), value)
    lock = data.get("lock", {})
    if not isinstance(lock, dict):
        fail("lock", "a table ([lock])", lock)
    keys(lock, _LOCK_KEYS, "lock")
    for key, (low, high) in _LOCK_RANGES.items():
        if key in lock and not low <= lock[key] <= high:
            fail(f"lock.{key}", f"a whole number from {low} to {high}", lock[key])
    not_checked = data.get("not_checked", [])
    if not isinstance(not_checked, list):
        fail("not_checked", "an array of tables ([[not_checked]])", not_checked)
    for index, entry in enumerate(not_checked):
        where = f"not_checked[{index}]"
        if not isinstance(entry, dict):
            fail(where, "a table (rule, source, reason)", entry)
        for name in ("rule", "source", "reason"):
            if name not in entry:
                raise ProfileError(f"{source}: key {where}.{name}: missing")
        keys(entry, _NOT_CHECKED_KEYS, where)


@dataclass
class Facts:
    """Everything a rule may look at, as plain data."""

    profile: Profile
    year: int
    month: int
    registry: Registry
    claims: list[Claim]
    orders: list[Order]
    evidence: Evidence
    not_checked: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)
    # claims before the month that its rules read (X6 counts an urgent need's days across the
    # month's start): kvitto.verify.rules.absence.earlier_claims, the same on every path
    earlier: list[Claim] = field(default_factory=list)

    def orders_of(self, customer: str) -> list[Order]:
        index = self.cache.get("orders")
        if index is None:
            index = defaultdict(list)
            for order in self.orders:
                index[order.customer].append(order)
            self.cache["orders"] = index
        return index.get(customer, [])

    def orders_on(self, customer: str, day: date) -> list[Order]:
        """The customer's orders valid on a (local) day, every activity."""
        return [order for order in self.orders_of(customer) if order.valid_on(day)]

    def order_for(self, customer: str, activity: str, day: date) -> Order | None:
        for order in self.orders_of(customer):
            if order.activity == activity and order.valid_on(day):
                return order
        return None

    def activity(self, code: str) -> Activity | None:
        return self.profile.activities.get(code)

    def name_of(self, code: str) -> str:
        """An activity's display name in the profile's catalogue (what a reason shows)."""
        found = self.profile.activities.get(code)
        return found.name if found else code

    def skip(self, rule: str, reason: Reason, claim_id: str = "") -> None:
        """Record a rule that could not be checked (never silently passed)."""
        entry: dict[str, Any] = {"rule": rule, "reason": reason}
        if claim_id:
            entry["claim_id"] = claim_id
        source = self.profile.rules.get(rule, {}).get("source", "")
        if source:
            entry["source"] = source
        self.not_checked.append(entry)


Rule = Callable[[Facts, dict[str, Any]], list[Finding]]
RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable[[Rule], Rule]:
    def register(function: Rule) -> Rule:
        RULES[rule_id] = function
        return function

    return register


# True in a process that keeps what it holds frozen (gc.freeze) between calls: the live judge,
# kvitto.web.live, whose months would be walked whole by each full collection otherwise.
CALLER_FREEZES = False


def run_rules(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    # The claims, orders and presences already loaded live until the end: freezing them keeps
    # the cyclic GC from rescanning millions of them on every collection (linear, not worse).
    # Not in a process that keeps objects frozen itself (CALLER_FREEZES): gc.unfreeze would
    # thaw them all.
    owned = not CALLER_FREEZES
    if owned:
        gc.freeze()
    try:
        for rule_id in sorted(facts.profile.rules, key=_rule_order):
            params = facts.profile.rules[rule_id]
            found = RULES[rule_id](facts, params)
            source = params.get("source", "")
            findings.extend(_sourced(f, source) for f in found)
    finally:
        if owned:
            gc.unfreeze()
    return findings


def _sourced(finding: Finding, source: str) -> Finding:
    """The finding with its rule's source section, unless it names its own."""
    if finding.source or not source:
        return finding
    return replace(finding, source=source)


def _rule_order(rule_id: str) -> tuple[int, int]:
    return ("ETDCSAXBI".index(rule_id[0]), int(rule_id[1:]))


def hhmm(moment: Any) -> str:
    from kvitto.verify.workdays import local

    return local(moment).strftime("%H:%M")


def span(start: Any, end: Any) -> str:
    """'10:00–10:45', or with the date when the span is not within one day."""
    from kvitto.verify.workdays import local

    a, b = local(start), local(end)
    if a.date() == b.date():
        return f"{a:%Y-%m-%d} {a:%H:%M}–{b:%H:%M}"
    return f"{a:%Y-%m-%d %H:%M}–{b:%Y-%m-%d %H:%M}"


# The families register their rules on import.
from kvitto.verify.rules import (  # noqa: E402,F401
    absence,
    alarm,
    billing,
    combine,
    deadlines,
    evidence,
    integrity,
    staffing,
    timing,
)
