"""C — activities that must not be combined in one visit (RULES.md C0–C7).

    from kvitto.verify.rules.combine import visits
    for group in visits(facts):   # claims of one customer and staff in one visit
        print([c.activity for c in group])

C0: a visit is one presence at the door. claims.csv has one row per activity; every row of a
customer and staff member whose interval lies inside the same arrive→depart presence of that
staff member's credential at the customer's tag or lock belongs to that visit, whether or not
the rows overlap each other (000 §1.2.1; 001 Registrera rätt insatser; 003 Sammanslagning av
insatser). Rows no presence holds are grouped as before: rows of one customer and staff whose
times overlap (or that share a zero-length moment). One sort and a sweep per customer and
staff, bisection into the presences: never pairwise (issue #25.6).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.taps import REFUSED


def _windows(facts: Facts, customer: str) -> dict[str, list[tuple[float, float]]]:
    """Per staff member: the merged arrive→depart presences at the customer's door that count
    as evidence (closed, a known credential, a proof not refused), as sorted POSIX intervals."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in facts.evidence.for_customer(customer):
        if p.end is None or p.kind != "visit" or not p.staff or not p.registered:
            continue
        if p.proof == REFUSED:
            continue
        spans[p.staff].append((p.start.timestamp(), p.end.timestamp()))
    merged: dict[str, list[tuple[float, float]]] = {}
    for staff, items in spans.items():
        items.sort()
        out: list[tuple[float, float]] = []
        for a, b in items:
            if out and a < out[-1][1]:  # touching presences are two visits
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        merged[staff] = out
    return merged


def _overlapping(items: list[Claim]) -> list[list[Claim]]:
    """Groups of two or more claims whose times overlap (chained), or share one moment."""
    groups: list[list[Claim]] = []
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


def visits(facts: Facts) -> list[list[Claim]]:
    """Groups of two or more claims that form one visit (C0), cached for the C rules."""
    found = facts.cache.get("visits")
    if found is not None:
        return found
    slack = float(facts.profile.rules.get("E1", {}).get("tolerance_minutes", 2)) * 60
    by_key: dict[tuple[str, str], list[Claim]] = defaultdict(list)
    for claim in facts.claims:
        by_key[(claim.customer, claim.staff)].append(claim)
    windows_of: dict[str, dict[str, list[tuple[float, float]]]] = {}
    groups: list[list[Claim]] = []
    for (customer, staff), items in by_key.items():
        if customer not in windows_of:
            windows_of[customer] = _windows(facts, customer)
        windows = windows_of[customer].get(staff, []) if staff else []
        starts = [a for a, _ in windows]
        inside: dict[int, list[Claim]] = defaultdict(list)
        rest: list[Claim] = []
        for claim in items:
            index = bisect_right(starts, claim.start.timestamp() + slack) - 1
            if index >= 0 and claim.end.timestamp() <= windows[index][1] + slack:
                inside[index].append(claim)
            else:
                rest.append(claim)
        for index in sorted(inside):
            group = sorted(inside[index], key=lambda c: (c.start, c.end))
            if len(group) > 1:
                groups.append(group)
        groups.extend(_overlapping(rest))
    facts.cache["visits"] = groups
    return groups


def _apart(
    facts: Facts,
    rule_id: str,
    outcome: str,
    is_special: Callable[[Claim], bool],
    variant: str,
    flag_all_special: bool = True,
    category: str = "",
) -> list[Finding]:
    """Finding on each special claim of a visit that also has other claims."""
    findings = []
    for group in visits(facts):
        special = [c for c in group if is_special(c)]
        others = [c for c in group if not is_special(c)]
        if not special or not others:
            continue
        together = ", ".join(sorted({facts.name_of(c.activity) for c in others}))
        for claim in special if flag_all_special else group:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    rule_id,
                    outcome,
                    0 if outcome == "reject" else claim.minutes,
                    because(
                        f"{rule_id}.{variant}",
                        activity=facts.name_of(claim.activity),
                        when=span(claim.start, claim.end),
                        together=together,
                    ),
                    category,
                )  # fmt: skip
            )
    return findings


@rule("C1")
def c1_separate_categories(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Each category is reported separately (000 §1.2.1)."""
    findings = []
    for group in visits(facts):
        categories = {facts.profile.category(c.activity) for c in group}
        if len(categories) < 2:
            continue
        names = ", ".join(sorted(categories))  # category codes: named in words at the edge
        for claim in group:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "C1",
                    params.get("outcome", "follow_up"),
                    claim.minutes,
                    because(
                        "C1.categories_together",
                        activity=facts.name_of(claim.activity),
                        when=span(claim.start, claim.end),
                        categories=names,
                    ),
                )  # fmt: skip
            )
    return findings


@rule("C2")
def c2_supervision_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Supervision [tillsyn] alone unless the order says so (001 Tillsyn; 003 Sammanslagning).

    The order's exception is not in orders.csv: such visits are follow_up, never rejected."""
    alone = set(params.get("activities", []))
    return _apart(facts, "C2", "follow_up", lambda c: c.activity in alone,
                  "supervision_with_others")  # fmt: skip


@rule("C3")
def c3_alarm_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """An alarm visit alone; "if the alarm concerned an ordinary activity, the time goes to
    that activity and no alarm is registered" (002 §6.1): the alarm claim is paid as that
    activity (its category), and is not counted as an alarm call-out."""
    alone = set(params.get("activities", []))
    findings = []
    for group in visits(facts):
        alarms = [c for c in group if c.activity in alone]
        others = [c for c in group if c.activity not in alone]
        if not alarms or not others:
            continue
        ordinary = others[0]
        category = facts.profile.category(ordinary.activity)
        for claim in alarms:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "C3",
                    "adjust",
                    claim.minutes,
                    because(
                        "C3.alarm_with_ordinary",
                        activity=facts.name_of(claim.activity),
                        when=span(claim.start, claim.end),
                        category=category,
                        ordinary=facts.name_of(ordinary.activity),
                    ),
                    category,
                )  # fmt: skip
            )
    return findings


@rule("C4")
def c4_meal_alone(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Meal box delivery alone, on site, with the number of boxes (002 §6.1)."""
    alone = set(params.get("activities", []))
    return _apart(facts, "C4", "follow_up", lambda c: c.activity in alone,
                  "meals_with_others")  # fmt: skip


@rule("C5")
def c5_escort_relief_apart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Escort/relief/housing support with home-care activities: the escort tariff applies to
    the whole visit (001 Registrera rätt insatser)."""
    apart = set(params.get("activities", []))
    category = params.get("category", "ledsagning-avlosning")
    findings = []
    for group in visits(facts):
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
                    because(
                        "C5.escort_tariff",
                        activity=facts.name_of(claim.activity),
                        when=span(claim.start, claim.end),
                        category=category,
                    ),
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
                  "away_with_home")  # fmt: skip


@rule("C7")
def c7_simplified_apart(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Simplified-assessment activities are a visit of their own (001 Förenklad …)."""
    apart = set(params.get("activities", []))
    return _apart(facts, "C7", "follow_up", lambda c: c.activity in apart,
                  "simplified_with_others")  # fmt: skip
