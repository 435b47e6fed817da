"""X — absence, declined and cancelled visits, urgent short needs (RULES.md X1–X6).

# claims.csv: activity 902 (Norrtälje), planned_start/planned_end, notified_at
x1 = RULES["X1"](facts, {"activities": ["902"], "mode": "planned_day"})
# payable = the planned time, if the provider learned of it no earlier than the day before
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import Reason, because
from kvitto.verify.rules import Facts, Finding, Profile, rule, span
from kvitto.verify.workdays import local, local_at, month_bounds, next_month


def _codes(params: dict[str, Any]) -> set[str]:
    return set(params.get("activities", []))


def _stamp(moment: Any) -> str:
    return f"{local(moment):%Y-%m-%d %H:%M}"


def _pay(claim: Claim, rule_id: str, payable: int, reason: Reason) -> list[Finding]:
    if payable == claim.minutes:
        return []
    outcome = "reject" if payable == 0 else "adjust"
    return [Finding(claim.claim_id, claim.customer, rule_id, outcome, payable, reason)]


def _unknown_notice(claim: Claim, rule_id: str, code: str, capped: str) -> Finding:
    """follow_up for an absence or cancellation whose notice time is unknown: payable as
    claimed, but never above the visit's planned time when the claim gives it (reason
    `capped`; "" where the planned time is not what is paid)."""
    planned = claim.planned_minutes if capped else None
    if planned is None or planned >= claim.minutes:
        return Finding(claim.claim_id, claim.customer, rule_id, "follow_up", claim.minutes,
                       because(code))  # fmt: skip
    reason = because(
        capped,
        planned=planned,
        when=span(claim.planned_start, claim.planned_end),
        claimed=claim.minutes,
    )
    return Finding(claim.claim_id, claim.customer, rule_id, "follow_up", planned, reason)


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
            facts.skip("X1", because("X1.no_notified_at"), claim.claim_id)
            # 000 §1.2.6.1 pays the day's planned time at most, whenever it became known
            capped = "X1.notified_unknown_planned" if mode == "planned_day" else ""
            findings.append(_unknown_notice(claim, "X1", "X1.notified_unknown", capped))
            continue
        if mode == "planned_day":
            day = (claim.planned_start or claim.start).astimezone(claim.local_start.tzinfo).date()
            earliest = local_at(day - timedelta(days=1), time(0))
            planned = claim.planned_minutes
            if claim.notified_at < earliest:
                findings += _pay(
                    claim,
                    "X1",
                    0,
                    because("X1.known_early", day=str(day), notified=_stamp(claim.notified_at)),
                )
            elif planned is None:
                facts.skip("X1", because("X1.no_planned_time"), claim.claim_id)
            else:
                findings += _pay(
                    claim,
                    "X1",
                    planned,
                    because(
                        "X1.planned_paid",
                        day=str(day),
                        planned=planned,
                        when=span(claim.planned_start, claim.planned_end),
                    ),
                )
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
            findings += _pay(
                claim,
                "X1",
                0,
                because(
                    "X1.notified_ahead",
                    start=_stamp(claim.start),
                    notified=_stamp(notified),
                    hours=notice,
                ),
            )
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
        numbers = {"when": span(claim.start, claim.end), "notified": _stamp(notified),
                   "max_days": max_days, "first": str(first), "days": len(new_days),
                   "granted": granted, "month_days": f"{month_days:g}", "payable": payable}  # fmt: skip
        why = (
            because("X1.days_repeated", repeated=", ".join(str(d) for d in repeated), **numbers)
            if repeated
            else because("X1.days", **numbers)
        )
        findings += _pay(claim, "X1", payable, why)
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
                    because(
                        "X2.too_many",
                        number=seen[claim.customer],
                        customer=claim.customer,
                        limit=limit,
                    ),
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
                    because(
                        "X2.planned_time",
                        planned=planned,
                        when=span(claim.planned_start, claim.planned_end),
                    ),
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
            facts.skip("X3", because("X3.no_times"), claim.claim_id)
            # 002 §6.1, §6.2: "Tiden kan dock aldrig överstiga den tid som insatsen är beräknad
            # på i beställningen": never above the planned time, when that is known
            findings.append(
                _unknown_notice(claim, "X3", "X3.times_unknown", "X3.times_unknown_planned")
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
            variant = "X3.hospital_within" if within else "X3.hospital_after"
            findings += _pay(claim, "X3", share,
                             because(variant, when=planned_at, notified=_stamp(claim.notified_at),
                                     hours=f"{hours:g}", planned=planned))  # fmt: skip
        elif claim.notified_at < deadline:
            findings += _pay(
                claim,
                "X3",
                0,
                because(
                    "X3.early", when=planned_at, cutoff=cutoff, notified=_stamp(claim.notified_at)
                ),
            )
        else:
            findings += _pay(
                claim,
                "X3",
                planned,
                because(
                    "X3.late",
                    when=planned_at,
                    cutoff=cutoff,
                    planned=planned,
                    notified=_stamp(claim.notified_at),
                ),
            )
    return findings


@rule("X4")
def x4_pause(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """No pay during a pause [uppehåll] (000 §1.2.2.5; 004 Uppehåll). A pause is registered by
    ending the orders for a while: a gap of at least a day between two orders of an activity."""
    findings: list[Finding] = []
    for claim in facts.claims:
        day = claim.local_start.date()
        if facts.order_for(claim.customer, claim.activity, day) is not None:
            continue  # ordered that day: the common case, decided without a list
        orders = [o for o in facts.orders_of(claim.customer) if o.activity == claim.activity]
        if not orders:
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
                    because(
                        "X4.pause",
                        activity=facts.name_of(claim.activity),
                        day=str(day),
                        start=str(paused_from + timedelta(days=1)),
                        end=str(paused_to - timedelta(days=1)),
                    ),
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
            # D5 is about the month the order ends: its claims before the end
            ended = [o for o in orders if o.valid_on(day) and _ends_in(o, day)]
            late = [o for o in ended if _registered_late(o, day_limit)]
            unknown = [o for o in ended if o.ended_at is None]
            if unknown and (claim.customer, claim.activity) not in unknown_end:
                unknown_end.add((claim.customer, claim.activity))
                facts.skip("X5", _end_unknown(facts, claim, unknown[0]))
            if late:
                order = late[0]
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "X5",
                        "follow_up",
                        claim.minutes,
                        because(
                            "X5.end_registered_late",
                            activity=facts.name_of(claim.activity),
                            end=str(order.valid_to),
                            registered=_stamp(order.ended_at),
                            day=day_limit,
                        ),
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
            facts.skip("X5", _end_unknown(facts, claim, order))
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "X5",
                "reject",
                0,
                because(
                    "X5.after_end_registered_late",
                    activity=facts.name_of(claim.activity),
                    day=str(day),
                    end=str(order.valid_to),
                    registered=_stamp(order.ended_at),
                    limit=day_limit,
                )
                if late
                else because(
                    "X5.after_end",
                    activity=facts.name_of(claim.activity),
                    day=str(day),
                    end=str(order.valid_to),
                ),
            )  # fmt: skip
        )
    return findings


def _ends_in(order: Any, day: date) -> bool:
    """The order ends (valid_to) in the month of `day`."""
    end = order.valid_to
    return end is not None and (end.year, end.month) == (day.year, day.month)


def _end_unknown(facts: Facts, claim: Claim, order: Any) -> Reason:
    return because(
        "X5.end_registered_unknown",
        customer=claim.customer,
        activity=facts.name_of(claim.activity),
        end=str(order.valid_to),
    )


def _registered_late(order: Any, day_limit: int) -> bool:
    """The order's end was registered after the `day_limit`th of the month after the end."""
    if order.valid_to is None or order.ended_at is None:
        return False
    year, month = (order.valid_to.year + order.valid_to.month // 12, order.valid_to.month % 12 + 1)
    return order.ended_at >= local_at(date(year, month, day_limit) + timedelta(days=1), time(0))


# -- X6: an urgent short-lived need, counted across the month's start -------------------------

X6_REASON = "bradskande"


def _x6_params(params: dict[str, Any]) -> tuple[str, int, int]:
    """(claims' reason, days not paid as extra, most days between two days of one need)."""
    return (params.get("reason", X6_REASON), int(params.get("unpaid_days", 3)),
            int(params.get("gap_days", 1)))  # fmt: skip


def look_back_days(profile: Profile) -> int:
    """How many days before a month its rules read claims of: X6 numbers the days an urgent
    need was performed across the month's start, and only the first `unpaid_days` of them
    differ (not paid as extra); those lie within unpaid_days × gap_days before the month's
    first day of the need. 0 when the profile has no X6."""
    params = profile.rules.get("X6")
    if params is None:
        return 0
    _, unpaid, gap = _x6_params(params)
    return unpaid * gap


def earlier_claims(
    profile: Profile, claims: Iterable[Claim], year: int, month: int
) -> list[Claim]:
    """The claims before the month that its rules read (Facts.earlier): X6's urgent claims in
    the look_back_days before the month, of a customer and activity with urgent claims in the
    month. The same from a case bundle, a store's claims file or the web's stored months."""
    days = look_back_days(profile)
    if not days:
        return []
    reason = _x6_params(profile.rules["X6"])[0]
    start, end = month_bounds(year, month)
    since = start.date() - timedelta(days=days)
    urgent = [c for c in claims if c.reason == reason]
    pairs = {(c.customer, c.activity) for c in urgent if start <= c.start < end}
    return [
        c for c in urgent
        if c.start < start and c.local_start.date() >= since and (c.customer, c.activity) in pairs
    ]  # fmt: skip


def reaches_next_month(profile: Profile, claim: Claim) -> bool:
    """A change to `claim` can change the next month's verdict: X6 reads it there (an urgent
    claim within look_back_days of the next month's first day)."""
    days = look_back_days(profile)
    if not days or claim.reason != _x6_params(profile.rules["X6"])[0]:
        return False
    day = claim.local_start.date()
    following = date(*next_month(day.year, day.month), 1)
    return (following - day).days <= days


@dataclass
class _Need:
    """One urgent need of a customer's activity: its days performed so far, the last of them,
    and whether more days lie before the look-back (the count is then a least number)."""

    count: int = 0
    last: date | None = None
    at_least: bool = False


def _need_before(days: list[date], first: date, unpaid: int, gap: int) -> _Need:
    """The need as the earlier days (before the month, newest first) carry it up to `first`,
    the month's first day of it: each at most `gap` days before the next."""
    need, following = _Need(), first
    for day in days:
        if need.count == unpaid or (following - day).days > gap:
            break
        need.count += 1
        following = day
    need.at_least = unpaid > 0 and need.count == unpaid
    need.last = days[0] if need.count else None  # the newest earlier day
    return need


@rule("X6")
def x6_urgent_short_need(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Extra support for an urgent, short-lived need (claims with reason `reason`, default
    `bradskande`) is paid from the fourth day it was performed, when the needs assessor
    grants it (an order of the activity valid that day); days 1–3 are not paid as extra
    (004 Förändring av behov som är brådskande under en begränsad period: "beslutet dateras
    från den fjärde dagen som det utförts"). The days are counted across the month's start
    (Facts.earlier); a break of more than `gap_days` days ends the need ("om behov kvarstår
    efter tre dagar": a need that stopped did not persist; a later one is a new need)."""
    reason, unpaid, gap = _x6_params(params)
    findings: list[Finding] = []
    earlier: dict[tuple[str, str], set[date]] = {}
    for claim in facts.earlier:
        if claim.reason == reason:
            earlier.setdefault((claim.customer, claim.activity), set()).add(
                claim.local_start.date()
            )
    needs: dict[tuple[str, str], _Need] = {}
    for claim in sorted(facts.claims, key=lambda c: (c.start, c.line)):
        if claim.reason != reason:
            continue
        day = claim.local_start.date()
        key = (claim.customer, claim.activity)
        need = needs.get(key)
        if need is None:
            before = sorted(earlier.get(key, ()), reverse=True)
            need = needs[key] = _need_before(before, day, unpaid, gap)
        if need.last is not None and (day - need.last).days > gap:
            need = needs[key] = _Need()  # a new need
        if day != need.last:
            need.count += 1
            need.last = day
        number = need.count
        if number <= unpaid:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "X6",
                    "reject",
                    0,
                    because(
                        "X6.unpaid_day",
                        activity=facts.name_of(claim.activity),
                        day=str(day),
                        number=number,
                        paid_from=unpaid + 1,
                    ),
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
                    because(
                        "X6.not_granted_at_least" if need.at_least else "X6.not_granted",
                        activity=facts.name_of(claim.activity),
                        day=str(day),
                        number=number,
                    ),
                )  # fmt: skip
            )
    return findings
