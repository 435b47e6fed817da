"""C — activities that must not be combined in one visit (RULES.md C1–C7).

    from kvitto.verify.rules.combine import visits
    for group in visits(facts.claims):   # claims of one customer and staff that overlap
        print([c.activity for c in group])

claims.csv has one row per activity; rows of one customer and staff whose times overlap (or
that share a zero-length moment) are one visit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.rules import Facts, Finding, rule, span


def visits(claims: list[Claim]) -> list[list[Claim]]:
    """Groups of two or more claims that form one visit."""
    by_key: dict[tuple[str, str], list[Claim]] = defaultdict(list)
    for claim in claims:
        by_key[(claim.customer, claim.staff)].append(claim)
    groups: list[list[Claim]] = []
    for items in by_key.values():
        current: list[Claim] = []
        start: datetime | None = None
        end: datetime | None = None
        for claim in sorted(items, key=lambda c: (c.start, c.end)):
            joins = end is not None and (
                claim.start < end or (claim.start == start and claim.end == end)
            )
            if current and joins and end is not None:
                current.append(claim)
                end = max(end, claim.end)
            else:
                if len(current) > 1:
                    groups.append(current)
                current, start, end = [claim], claim.start, claim.end
        if len(current) > 1:
            groups.append(current)
    return groups


def _apart(
    facts: Facts,
    rule_id: str,
    outcome: str,
    is_special: Callable[[Claim], bool],
    message: str,
    flag_all_special: bool = True,
    category: str = "",
) -> list[Finding]:
    """Finding on each special claim of a visit that also has other claims."""
    findings = []
    for group in visits(facts.claims):
        special = [c for c in group if is_special(c)]
        others = [c for c in group if not is_special(c)]
        if not special or not others:
            continue
        together = ", ".join(sorted({c.activity for c in others}))
        for claim in special if flag_all_special else group:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    rule_id,
                    outcome,
                    0 if outcome == "reject" else claim.minutes,
                    f"{claim.activity} at {span(claim.start, claim.end)} registered together "
                    f"with {together}: {message}",
                    category,
                )  # fmt: skip
            )
    return findings


@rule("C1")
def c1_separate_categories(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Each category is reported separately (000 §1.2.1)."""
    findings = []
    for group in visits(facts.claims):
        categories = {facts.profile.category(c.activity) for c in group}
        if len(categories) < 2:
            continue
        names = ", ".join(sorted(categories))
        for claim in group:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "C1",
                    params.get("outcome", "follow_up"),
                    claim.minutes,
                    f"{claim.activity} at {span(claim.start, claim.end)} in one visit with "
                    f"other categories ({names}): each category is reported separately",
                )  # fmt: skip
            )
    return findings


@rule("C2")
def c2_supervision_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Supervision [tillsyn] alone unless the order says so (001 Tillsyn; 003 Sammanslagning).

    The order's exception is not in orders.csv: such visits are follow_up, never rejected."""
    alone = set(params.get("activities", []))
    return _apart(facts, "C2", "follow_up", lambda c: c.activity in alone,
                  "supervision is registered alone unless the order says otherwise")  # fmt: skip


@rule("C3")
def c3_alarm_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """An alarm visit alone; if it concerned an ordinary activity, no alarm is registered
    (002 §6.1): the alarm claim is rejected, the ordinary activity keeps the time."""
    alone = set(params.get("activities", []))
    return _apart(facts, "C3", "reject", lambda c: c.activity in alone,
                  "the time belongs to the ordinary activity, no alarm is registered")  # fmt: skip


@rule("C4")
def c4_meal_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Meal box delivery alone, on site, with the number of boxes (002 §6.1)."""
    alone = set(params.get("activities", []))
    return _apart(facts, "C4", "follow_up", lambda c: c.activity in alone,
                  "meal delivery is never registered with other activities")  # fmt: skip


@rule("C5")
def c5_escort_relief_apart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Escort/relief/housing support with home-care activities: the escort tariff applies to
    the whole visit (001 Registrera rätt insatser)."""
    apart = set(params.get("activities", []))
    category = params.get("category", "ledsagning-avlosning")
    findings = []
    for group in visits(facts.claims):
        if not any(c.activity in apart for c in group) or all(c.activity in apart for c in group):
            continue
        for claim in group:
            if claim.activity in apart:
                continue
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "C5",
                    "adjust",
                    claim.minutes,
                    f"{claim.activity} at {span(claim.start, claim.end)} registered with "
                    f"escort/relief/housing support: paid at the {category} tariff",
                    category,
                )  # fmt: skip
            )
    return findings


@rule("C6")
def c6_home_and_away_apart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Activities outside the home are not merged with those in the home (003)."""

    def away(claim: Claim) -> bool:
        activity = facts.activity(claim.activity)
        return activity is not None and activity.where == "elsewhere"

    return _apart(facts, "C6", "follow_up", away,
                  "activities outside the home are registered apart from those in the home")  # fmt: skip


@rule("C7")
def c7_simplified_apart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Simplified-assessment activities are a visit of their own (001 Förenklad …)."""
    apart = set(params.get("activities", []))
    return _apart(facts, "C7", "follow_up", lambda c: c.activity in apart,
                  "simplified-assessment activities are a visit of their own category")  # fmt: skip
