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
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

try:
    import tomllib  # pyright: ignore[reportMissingImports]
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

from kvitto.errors import KvittoError
from kvitto.verify.case import Claim, Order, Registry
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
    reason: str
    category: str = ""  # set when the rule moves the claim to another category (C5)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim_id,
            "customer": self.customer,
            "rule": self.rule,
            "outcome": self.outcome,
            "payable_minutes": self.payable_minutes,
            "reason": self.reason,
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


@dataclass
class Profile:
    name: str
    municipality: str
    source: str
    activities: dict[str, Activity]
    rules: dict[str, dict[str, Any]]
    path: Path | None = None

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
    path = _profile_path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    activities = {}
    for code, entry in data.get("activity", {}).items():
        where = entry.get("where", "tag")
        if where not in WHERE or "category" not in entry:
            raise ProfileError(
                f"{path}: activity {code}: needs category and where in {sorted(WHERE)}"
            )
        activities[str(code)] = Activity(
            code=str(code),
            name=entry.get("name", str(code)),
            category=entry["category"],
            where=where,
            arrive_and_depart=bool(entry.get("arrive_and_depart", False)),
            frame=bool(entry.get("frame", False)),
            service=bool(entry.get("service", False)),
        )
    rules = {str(rule): dict(params) for rule, params in data.get("rules", {}).items()}
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ProfileError(f"{path}: unknown rule(s) {', '.join(unknown)}")
    return Profile(
        name=data.get("name", path.stem),
        municipality=data.get("municipality", path.stem),
        source=data.get("source", ""),
        activities=activities,
        rules=rules,
        path=path,
    )


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

    def skip(self, rule: str, reason: str, claim_id: str = "") -> None:
        """Record a rule that could not be checked (never silently passed)."""
        entry: dict[str, Any] = {"rule": rule, "reason": reason}
        if claim_id:
            entry["claim_id"] = claim_id
        self.not_checked.append(entry)


Rule = Callable[[Facts, dict[str, Any]], list[Finding]]
RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable[[Rule], Rule]:
    def register(function: Rule) -> Rule:
        RULES[rule_id] = function
        return function

    return register


def run_rules(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    # The claims, orders and presences already loaded live until the end: freezing them keeps
    # the cyclic GC from rescanning millions of them on every collection (linear, not worse).
    gc.freeze()
    try:
        for rule_id in sorted(facts.profile.rules, key=_rule_order):
            findings.extend(RULES[rule_id](facts, facts.profile.rules[rule_id]))
    finally:
        gc.unfreeze()
    return findings


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
