"""X — absence, declined and cancelled visits (RULES.md X1–X4).

# claims.csv: activity 902 (Norrtälje), planned_start/planned_end, notified_at
x1 = RULES["X1"](facts, {"activities": ["902"], "mode": "planned_day"})
# payable = the planned time, if the provider learned of it no earlier than the day before
"""

from __future__ import annotations

from datetime import date, time, timedelta
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
    days_mode: list[Claim] = []
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
        days_mode.append(claim)
    findings += _absence_days(facts, params, days_mode)
    return findings


def _absence_days(facts: Facts, params: dict[str, Any], claims: list[Claim]) -> list[Finding]:
    """Haninge (003 Omställningstid/oplanerad frånvaro, Avslutat uppdrag): per day, not per
    claim. At most `max_days` calendar days from the day the provider learned of it (reason
    `avslut`: `end_days`), each day paid once at granted monthly time / 30.4 however many
    visits it had; nothing if notified `notice_hours` ahead."""
    notice = int(params.get("notice_hours", 48))
    month_days = float(params.get("month_days", 30.4))
    findings: list[Finding] = []
    paid_days: set[tuple[str, date]] = set()
    for claim in sorted(claims, key=lambda c: (c.start, c.line)):
        notified = claim.notified_at
        if notified is None:
            continue
        if notified <= claim.start - timedelta(hours=notice):
            findings += _pay(claim, "X1", 0,
                             f"absence from {_stamp(claim.start)} notified {_stamp(notified)}, "
                             f"at least {notice} h ahead: no compensation / anmäld minst "
                             f"{notice} timmar innan")  # fmt: skip
            continue
        max_days = int(params.get("end_days" if claim.reason == "avslut" else "max_days", 2))
        first = local(notified).date()
        last = first + timedelta(days=max_days - 1)
        day = max(first, claim.local_start.date())
        end_day = claim.local_end.date()
        if claim.local_end == local_at(end_day, time(0)) and end_day > day:
            end_day -= timedelta(days=1)  # a claim ending at midnight does not touch that day
        new_days, repeated = [], []
        while day <= min(last, end_day):
            (repeated if (claim.customer, day) in paid_days else new_days).append(day)
            day += timedelta(days=1)
        paid_days.update((claim.customer, d) for d in new_days)
        granted = sum(
            o.granted_minutes_month
            for o in facts.orders_on(claim.customer, claim.local_start.date())
        )
        payable = round(len(new_days) * granted / month_days)
        detail = (
            f"absence {span(claim.start, claim.end)}, notified {_stamp(notified)}: paid for "
            f"at most {max_days} calendar day(s) from {first}; {len(new_days)} new day(s) × "
            f"{granted}/{month_days:g} min granted = {payable} min"
        )
        if repeated:
            detail += f" ({', '.join(str(d) for d in repeated)} already paid by another claim)"
        findings += _pay(claim, "X1", payable, detail + " / varje dag ersätts en gång")
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
        planned_at = span(claim.planned_start, claim.planned_end)
        if claim.reason == "sjukhus":
            # 002 §6.1: "ersättning för de inplanerade besöken under ett dygn från det att
            # utföraren har fått kännedom om frånvaron ... 50% i 24 timmar"; not beyond.
            hours = float(params.get("hospital_hours", 24))
            limit = claim.notified_at + timedelta(hours=hours)
            within = claim.notified_at <= claim.planned_start < limit
            share = round(planned * float(params.get("hospital_share", 0.5))) if within else 0
            how = (
                f"planned within {hours:g} h of the notice: 50 % of {planned} min"
                if within
                else f"planned more than {hours:g} h after the notice: not paid until home "
                "care resumes"
            )
            findings += _pay(claim, "X3", share,
                             f"visit {planned_at}, unplanned hospital stay notified "
                             f"{_stamp(claim.notified_at)}: {how} / 50 % i 24 timmar")  # fmt: skip
        elif claim.notified_at < deadline:
            findings += _pay(claim, "X3", 0,
                             f"visit {planned_at} cancelled {_stamp(claim.notified_at)}, before "
                             f"{cutoff}:00 the day before: not paid")  # fmt: skip
        else:
            findings += _pay(claim, "X3", planned,
                             f"visit {planned_at} cancelled {_stamp(claim.notified_at)}, after "
                             f"{cutoff}:00 the day before: paid as performed, {planned} min")  # fmt: skip
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


@rule("X5")
def x5_ended_service(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """No visit is payable after the service ended or the customer died, the order's end date
    (004 Uppehåll, verkställighet och avslut). An end registered after the 4th of the next
    month (orders.csv `ended_at`) goes to billing by hand: the month's claims of that order
    are follow_up (D5)."""
    day_limit = int(params.get("day", 4))
    findings: list[Finding] = []
    unknown_end: set[tuple[str, str]] = set()
    for claim in facts.claims:
        orders = [o for o in facts.orders_of(claim.customer) if o.activity == claim.activity]
        day = claim.local_start.date()
        if not orders or any(o.valid_on(day) for o in orders):
            ended = [o for o in orders if o.valid_on(day) and o.valid_to is not None]
            late = [o for o in ended if _registered_late(o, day_limit)]
            if late:
                order = late[0]
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "X5",
                        "follow_up",
                        claim.minutes,
                        f"{claim.activity} ends {order.valid_to}, the end registered "
                        f"{_stamp(order.ended_at)}, after the {day_limit}th of the next month: "
                        "billing must be contacted by hand / debiteringen kontaktas",
                    )  # fmt: skip
                )
            continue
        if any(o.valid_from > day for o in orders):
            continue  # a later order: a pause (X4) or not yet started, not an end
        order = max(orders, key=lambda o: o.valid_to or day)
        if order.valid_to is None:
            continue
        late = _registered_late(order, day_limit)
        if order.ended_at is None and (claim.customer, claim.activity) not in unknown_end:
            unknown_end.add((claim.customer, claim.activity))
            facts.skip("X5", f"{claim.customer} {claim.activity}: when the end {order.valid_to} "
                       "was registered is not in orders.csv (ended_at): D5 not checked")  # fmt: skip
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "X5",
                "reject",
                0,
                f"{claim.activity} on {day} is after the service ended {order.valid_to}: no "
                "visit is payable after the end / ingen ersättning efter avslut"
                + (
                    f" (end registered {_stamp(order.ended_at)}, after the {day_limit}th: "
                    "billing is contacted by hand)"
                    if late
                    else ""
                ),
            )  # fmt: skip
        )
    return findings


def _registered_late(order: Any, day_limit: int) -> bool:
    """The order's end was registered after the `day_limit`th of the month after the end."""
    if order.valid_to is None or order.ended_at is None:
        return False
    year, month = (order.valid_to.year + order.valid_to.month // 12, order.valid_to.month % 12 + 1)
    return order.ended_at >= local_at(date(year, month, day_limit) + timedelta(days=1), time(0))


@rule("X6")
def x6_urgent_short_need(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Extra support for an urgent, short-lived need (claims with reason `reason`, default
    `bradskande`) is paid from the fourth day it was performed, when the needs assessor
    grants it (an order of the activity valid that day); days 1–3 are not paid as extra
    (004 Förändring av behov som är brådskande under en begränsad period: "beslutet dateras
    från den fjärde dagen som det utförts")."""
    reason = params.get("reason", "bradskande")
    unpaid = int(params.get("unpaid_days", 3))
    findings: list[Finding] = []
    days_of: dict[tuple[str, str], list[date]] = {}
    for claim in sorted(facts.claims, key=lambda c: (c.start, c.line)):
        if claim.reason != reason:
            continue
        day = claim.local_start.date()
        days = days_of.setdefault((claim.customer, claim.activity), [])
        if day not in days:
            days.append(day)
        number = days.index(day) + 1
        if number <= unpaid:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X6",
                    "reject",
                    0,
                    f"urgent short-lived need, {claim.activity} on {day}: day {number} it was "
                    f"performed; extra support is paid from day {unpaid + 1} / ersättning från "
                    "fjärde dagen",
                )  # fmt: skip
            )
        elif facts.order_for(claim.customer, claim.activity, day) is None:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X6",
                    "follow_up",
                    claim.minutes,
                    f"urgent short-lived need, {claim.activity} on {day}: day {number}, paid "
                    "only if the needs assessor grants it (no order yet); the need is reported "
                    "on the fourth day / meddelas biståndshandläggare den fjärde dagen",
                )  # fmt: skip
            )
    return findings
