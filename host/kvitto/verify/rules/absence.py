"""X — absence, declined and cancelled visits (RULES.md X1–X4).

# claims.csv: activity 902 (Norrtälje), planned_start/planned_end, notified_at
x1 = RULES["X1"](facts, {"activities": ["902"], "mode": "planned_day"})
# payable = the planned time, if the provider learned of it no earlier than the day before
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.workdays import local, local_at


def _codes(params: dict[str, Any]) -> set[str]:
    return set(params.get("activities", []))


def _stamp(moment: Any) -> str:
    return f"{local(moment):%Y-%m-%d %H:%M}"


def _pay(claim: Claim, rule_id: str, payable: int, reason: str) -> list[Finding]:
    if payable == claim.minutes:
        return []
    outcome = "reject" if payable == 0 else "adjust"
    return [Finding(claim.claim_id, claim.customer, rule_id, outcome, payable, reason)]


@rule("X1")
def x1_unplanned_absence(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Unplanned absence. planned_day (000 §1.2.2.3, §1.2.6.1): the day's planned time, if
    learned of no earlier than the day before. days (003 Omställningstid): at most N calendar
    days from notification, each 1/30.4 of the granted month; nothing if notified ≥ 48 h ahead;
    reason `avslut` (the customer ends the service): five days."""
    mode = params.get("mode", "planned_day")
    findings: list[Finding] = []
    for claim in facts.claims:
        if claim.activity not in _codes(params):
            continue
        if claim.notified_at is None:
            facts.skip("X1", "absence without notified_at", claim.claim_id)
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X1",
                    "follow_up",
                    claim.minutes,
                    "absence claimed without notified_at: when the provider learned of it "
                    "is unknown",
                )  # fmt: skip
            )
            continue
        if mode == "planned_day":
            day = (claim.planned_start or claim.start).astimezone(claim.local_start.tzinfo).date()
            earliest = local_at(day - timedelta(days=1), time(0))
            planned = claim.planned_minutes
            if claim.notified_at < earliest:
                findings += _pay(claim, "X1", 0,
                                 f"absence on {day} known {_stamp(claim.notified_at)}, before the "
                                 "day before: not payable")  # fmt: skip
            elif planned is None:
                facts.skip("X1", "absence without planned_start/planned_end", claim.claim_id)
            else:
                findings += _pay(claim, "X1", planned,
                                 f"absence on {day}: the planned time {span(claim.planned_start, claim.planned_end)} "
                                 f"({planned} min) is paid")  # fmt: skip
            continue
        # days mode (Haninge)
        if claim.notified_at <= claim.start - timedelta(hours=int(params.get("notice_hours", 48))):
            findings += _pay(claim, "X1", 0,
                             f"absence from {_stamp(claim.start)} notified {_stamp(claim.notified_at)}, "
                             f"at least {params.get('notice_hours', 48)} h ahead: no compensation")  # fmt: skip
            continue
        max_days = int(params.get("end_days" if claim.reason == "avslut" else "max_days", 2))
        first = max(local(claim.notified_at).date(), claim.local_start.date())
        last = min(first + timedelta(days=max_days - 1), claim.local_end.date())
        days = max(0, (last - first).days + 1)
        granted = sum(
            o.granted_minutes_month
            for o in facts.orders_on(claim.customer, claim.local_start.date())
        )
        payable = round(days * granted / float(params.get("month_days", 30.4)))
        findings += _pay(claim, "X1", payable,
                         f"absence {span(claim.start, claim.end)}, notified {_stamp(claim.notified_at)}: "
                         f"{days} day(s) × {granted}/30.4 min granted = {payable} min")  # fmt: skip
    return findings


@rule("X2")
def x2_declined_at_door(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Declined at the door: paid at planned time (the arrival is E1's); more than N declines
    in a month → contact the needs assessor (000 §1.2.2.4)."""
    limit = int(params.get("max_per_month", 5))
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    for claim in sorted(facts.claims, key=lambda c: c.start):
        if claim.activity not in _codes(params):
            continue
        seen[claim.customer] = seen.get(claim.customer, 0) + 1
        planned = claim.planned_minutes
        payable = planned if planned is not None else claim.minutes
        if seen[claim.customer] > limit:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X2",
                    "follow_up",
                    payable,
                    f"decline number {seen[claim.customer]} this month for {claim.customer} "
                    f"(more than {limit}): contact the needs assessor",
                )  # fmt: skip
            )
        elif planned is not None and planned != claim.minutes:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X2",
                    "adjust",
                    planned,
                    f"declined at the door: paid at the planned time "
                    f"{span(claim.planned_start, claim.planned_end)} ({planned} min)",
                )  # fmt: skip
            )
    return findings


@rule("X3")
def x3_late_cancellation(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Cancelled after 12:00 the day before: paid as performed (planned time); reason
    `sjukhus` (unplanned hospital stay): 50 %; before 12:00 the day before: nothing (002 §6)."""
    cutoff = int(params.get("cutoff_hour", 12))
    findings: list[Finding] = []
    for claim in facts.claims:
        if claim.activity not in _codes(params):
            continue
        planned = claim.planned_minutes
        if claim.notified_at is None or planned is None or claim.planned_start is None:
            facts.skip("X3", "cancellation without notified_at or planned times", claim.claim_id)
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X3",
                    "follow_up",
                    claim.minutes,
                    "cancelled visit without notified_at or planned times",
                )  # fmt: skip
            )
            continue
        day = local(claim.planned_start).date()
        deadline = local_at(day - timedelta(days=1), time(cutoff))
        if claim.notified_at < deadline:
            findings += _pay(claim, "X3", 0,
                             f"visit {span(claim.planned_start, claim.planned_end)} cancelled "
                             f"{_stamp(claim.notified_at)}, before {cutoff}:00 the day before: not paid")  # fmt: skip
        elif claim.reason == "sjukhus":
            share = round(planned * float(params.get("hospital_share", 0.5)))
            findings += _pay(claim, "X3", share,
                             f"visit {span(claim.planned_start, claim.planned_end)} within 24 h of an "
                             f"unplanned hospital stay: 50 % of {planned} min")  # fmt: skip
        else:
            findings += _pay(claim, "X3", planned,
                             f"visit {span(claim.planned_start, claim.planned_end)} cancelled "
                             f"{_stamp(claim.notified_at)}, after {cutoff}:00 the day before: "
                             f"paid as performed, {planned} min")  # fmt: skip
    return findings


@rule("X4")
def x4_pause(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """No pay during a pause [uppehåll] (000 §1.2.2.5; 004 Uppehåll). A pause is registered by
    ending the orders for a while: a gap of at least a day between two orders of an activity."""
    findings: list[Finding] = []
    for claim in facts.claims:
        day = claim.local_start.date()
        orders = [o for o in facts.orders_of(claim.customer) if o.activity == claim.activity]
        if not orders or any(o.valid_on(day) for o in orders):
            continue
        before = [o for o in orders if o.valid_to is not None and o.valid_to < day]
        after = [o for o in orders if o.valid_from > day]
        if before and after:
            paused_from = max(o.valid_to for o in before if o.valid_to is not None)
            paused_to = min(o.valid_from for o in after)
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X4",
                    "reject",
                    0,
                    f"{claim.activity} on {day} falls in a pause "
                    f"({paused_from + timedelta(days=1)}–{paused_to - timedelta(days=1)})",
                )  # fmt: skip
            )
    return findings
