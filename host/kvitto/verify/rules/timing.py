"""T — time of day and overlap (RULES.md T1–T4).

    from kvitto.verify.rules.timing import night_minutes
    night_minutes(claim.start, claim.end, 22, 7)   # minutes inside 22:00–07:00 Stockholm time
    # a claim wholly at night is rejected, partly at night adjusted to its day part

Local time is Europe/Stockholm; a night spanning a daylight-saving change has 7 or 9 hours.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.visits import overlap_seconds, union_seconds
from kvitto.verify.workdays import local, local_at, next_month, nth_weekday


def night_minutes(start: datetime, end: datetime, night_from: int, night_to: int) -> float:
    """Minutes of [start, end) between night_from:00 and night_to:00 local time."""
    first, last = local(start), local(end)
    if (
        first.date() == last.date()
        and night_to <= first.hour
        and (
            last.hour < night_from or (last.hour == night_from and last.minute == 0 == last.second)
        )
    ):
        return 0.0  # the common case: wholly inside one day's day time
    total = 0.0
    day = local(start).date() - timedelta(days=1)
    while local_at(day, time(0)) < end:
        night_start = local_at(day, time(night_from))
        night_end = local_at(day + timedelta(days=1), time(night_to))
        total += overlap_seconds(start, end, night_start, night_end)
        day += timedelta(days=1)
    return total / 60


@rule("T1")
def t1_night(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Night 22:00–07:00; the profile's `outcome` says what the document does with it.

    follow_up (000 §1.2.9 "När registrering inte ska ske"): nothing is registered at night, the
    provider shows written documentation of the time another way; the claim stays payable.
    reject (002 §1.2, §8): night is not in the provider's contract: the night part is not paid
    (the whole claim when all of it is at night, else adjusted to its day part)."""
    night_from = int(params.get("night_from", 22))
    night_to = int(params.get("night_to", 7))
    outcome = params.get("outcome", "follow_up")
    skip = set(params.get("except", []))
    if facts.profile.active("A4"):
        skip |= set(facts.profile.rules["A4"].get("activities", []))
    window = f"{night_from:02d}:00–{night_to:02d}:00"
    findings = []
    for claim in facts.claims:
        if claim.activity in skip:
            continue
        end = claim.end if claim.minutes else claim.start + timedelta(seconds=1)
        night = night_minutes(claim.start, end, night_from, night_to)
        if night <= 0:
            continue
        when = span(claim.start, claim.end)
        if outcome == "follow_up":
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T1",
                    "follow_up",
                    claim.minutes,
                    because(
                        "T1.night_documented",
                        when=when,
                        window=window,
                        minutes=round(night) if claim.minutes else 0,
                    ),
                )  # fmt: skip
            )
            continue
        day = round(claim.minutes - night) if claim.minutes else 0
        if day <= 0:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T1",
                    "reject",
                    0,
                    because("T1.night_rejected", when=when, window=window),
                )  # fmt: skip
            )
        else:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T1",
                    "adjust",
                    day,
                    because(
                        "T1.night_adjusted",
                        when=when,
                        window=window,
                        minutes=round(night),
                        payable=day,
                    ),
                )  # fmt: skip
            )
    return findings


def _clusters(claims: list[Claim]) -> list[list[Claim]]:
    """Groups of claims whose intervals overlap (chained), in time order."""
    groups: list[list[Claim]] = []
    end: datetime | None = None
    for claim in sorted(claims, key=lambda c: (c.start, c.end)):
        if groups and end is not None and claim.start < end:
            groups[-1].append(claim)
            end = max(end, claim.end)
        else:
            groups.append([claim])
            end = claim.end
    return [g for g in groups if len(g) > 1]


@rule("T2")
def t2_sixty_per_hour(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """One staff member never registers more than 60 min per hour (000 §1.2.7): overlapping
    claims are shared out by planned time when all have it, else as the provider split them."""
    tolerance = float(params.get("tolerance_minutes", 1))
    by_staff: dict[str, list[Claim]] = defaultdict(list)
    for claim in facts.claims:
        if claim.staff and claim.minutes > 0:
            by_staff[claim.staff].append(claim)
    findings = []
    for staff, claims in by_staff.items():
        for group in _clusters(claims):
            if len({c.customer for c in group}) < 2:
                # 000 §1.2.7 is about work at cohabitants; rows overlapping at one customer are
                # one visit with several activities (the C rules look at those).
                continue
            worked = union_seconds((c.start, c.end) for c in group) / 60
            claimed = sum(c.minutes for c in group)
            if claimed - worked <= tolerance:
                continue
            planned = [c.planned_minutes for c in group]
            weights = (
                [float(p) for p in planned if p is not None]
                if all(p for p in planned)
                else [float(c.minutes) for c in group]
            )
            basis = "planned" if all(p for p in planned) else "claimed"
            total_weight = sum(weights) or 1.0
            customers = ", ".join(sorted({c.customer for c in group}))
            for claim, weight in zip(group, weights):
                share = round(worked * weight / total_weight)
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "T2",
                        "adjust",
                        min(share, claim.minutes),
                        because(
                            f"T2.shared_by_{basis}",
                            staff=staff,
                            claimed=claimed,
                            worked=round(worked),
                            customers=customers,
                            share=share,
                            when=span(min(c.start for c in group), max(c.end for c in group)),
                        ),
                    )  # fmt: skip
                )
    return findings


@rule("T3")
def t3_excess_over_granted(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Performed time above granted time needs the needs assessor's approval and a journal
    note (003 Tidbaserat ersättningssystem, Justerad tid; 002 §5). The excess is follow_up
    asking for the reason, never cut silently; `without_reason = "adjust"` (002 §5 "Om
    motivering uteblir nekas ersättning") pays only the granted part of a claim that gives no
    reason (the bundle is read after the lock date, when the reason was due)."""
    without_reason = params.get("without_reason", "follow_up")
    categories = set(params.get("categories", ["hemtjanst"]))
    used: dict[tuple[str, str], int] = defaultdict(int)
    findings = []
    for claim in sorted(facts.claims, key=lambda c: c.start):
        if facts.profile.category(claim.activity) not in categories or claim.minutes == 0:
            continue
        order = facts.order_for(claim.customer, claim.activity, claim.local_start.date())
        if order is None or order.granted_minutes_month == 0:
            continue  # T4 (not ordered) is a different rule
        key = (claim.customer, claim.activity)
        before = used[key]
        used[key] += claim.minutes
        if used[key] <= order.granted_minutes_month:
            continue
        within = max(0, order.granted_minutes_month - before)
        excess = claim.minutes - within
        numbers = {"activity": facts.name_of(claim.activity), "performed": used[key],
                   "granted": order.granted_minutes_month, "excess": excess}  # fmt: skip
        if claim.reason or without_reason == "follow_up":
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T3",
                    "follow_up",
                    claim.minutes,
                    because("T3.excess_reason_given", given=claim.reason, **numbers)
                    if claim.reason
                    else because("T3.excess_reason_missing", **numbers),
                )  # fmt: skip
            )
        else:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T3",
                    "adjust",
                    within,
                    because(
                        "T3.excess_unpaid_without_reason",
                        within=within,
                        claimed=claim.minutes,
                        lock=str(_lock_date(facts)),
                        **numbers,
                    ),
                )  # fmt: skip
            )
    if findings:
        facts.skip("T3", because("T3.no_approvals"))
    return findings


def _lock_date(facts: Facts) -> date:
    """The month's lock date (D3: the Nth weekday of M+1, 003 Spärrdatum), by which a reason
    for an excess is due: an open month's queue shows the cut with the day it can still be
    avoided, as D4's refusal shows its approval deadline."""
    weekday = int(facts.profile.rules.get("D3", {}).get("weekday", 3))
    return nth_weekday(*next_month(facts.year, facts.month), weekday)


@rule("T4")
def t4_not_ordered(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """An activity not in the customer's order is not payable (001 Extra besök; 002 §5)."""
    unordered_ok = set(params.get("except", []))
    findings = []
    for claim in facts.claims:
        if claim.activity in unordered_ok:
            continue
        day = claim.local_start.date()
        if facts.order_for(claim.customer, claim.activity, day) is None:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "T4",
                    "reject",
                    0,
                    because(
                        "T4.not_ordered",
                        activity=facts.name_of(claim.activity),
                        day=str(day),
                        customer=claim.customer,
                    ),
                )  # fmt: skip
            )
    return findings
