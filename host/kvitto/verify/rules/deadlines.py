"""D — deadlines and adjustments (RULES.md D1–D6), on the Swedish weekday calendar.

from kvitto.verify.workdays import nth_weekday
lock = nth_weekday(2026, 11, 3)     # Haninge/Upplands-Bro lock date for October 2026
# registrations for October after the end of that day are rejected (D3)
"""

from __future__ import annotations

from datetime import date, time, timedelta
from typing import Any

from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.workdays import (
    add_weekdays,
    end_of_day,
    local,
    local_at,
    next_month,
    nth_weekday,
)


def _stamp(moment: Any) -> str:
    return f"{local(moment):%Y-%m-%d %H:%M}"


@rule("D1")
def d1_late_registration(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """After-the-fact registration within N days of the visit (001 Arbetsprocess: 2 days)."""
    days = int(params.get("days", 2))
    findings = []
    for claim in facts.claims:
        if claim.registered_at is None:
            if claim.registered_via == "manual":
                facts.skip("D1", because("D1.no_registered_at"), claim.claim_id)
            continue
        deadline = end_of_day(claim.local_end.date() + timedelta(days=days))
        if claim.registered_at >= deadline:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D1",
                    "reject",
                    0,
                    because(
                        "D1.late",
                        when=span(claim.start, claim.end),
                        registered=_stamp(claim.registered_at),
                        days=days,
                    ),
                )  # fmt: skip
            )
    return findings


@rule("D2")
def d2_adjustment_window(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """An approved visit may be adjusted for N hours after approval (001: 72 h)."""
    hours = int(params.get("hours", 72))
    findings = []
    for claim in facts.claims:
        if claim.adjusted_at is None:
            continue
        if claim.approved_at is None:
            facts.skip("D2", because("D2.no_approved_at"), claim.claim_id)
            continue
        if claim.adjusted_at - claim.approved_at > timedelta(hours=hours):
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D2",
                    "reject",
                    0,
                    because(
                        "D2.late",
                        approved=_stamp(claim.approved_at),
                        adjusted=_stamp(claim.adjusted_at),
                        hours=hours,
                    ),
                )  # fmt: skip
            )
    return findings


@rule("D3")
def d3_lock_date(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """No registrations or changes after the lock date, the Nth weekday of M+1 (003
    Spärrdatum; 002 §3.1, §6.1 p.3); weekdays skip Swedish public holidays. Activities on
    time sheets (`time_sheet_activities`, 002 §6.3: escort and relief, signed by the customer,
    entered "senast den 15:e/månad") have that day of M+1 as their deadline instead."""
    year, month = next_month(facts.year, facts.month)
    lock = nth_weekday(year, month, int(params.get("weekday", 3)))
    deadline = end_of_day(lock)
    sheets = set(params.get("time_sheet_activities", []))
    sheet_day = date(year, month, int(params.get("time_sheet_day", 15)))
    sheet_deadline = end_of_day(sheet_day)
    fields = params.get("fields", ["registered_at", "adjusted_at"])
    findings = []
    for claim in facts.claims:
        if claim.activity in sheets:
            late = [(name, getattr(claim, name)) for name in ("registered_at", "adjusted_at")]
            late = [(n, v) for n, v in late if v is not None and v >= sheet_deadline]
            if late:
                name, value = late[0]
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "D3",
                        "reject",
                        0,
                        because(
                            f"D3.sheet_{name}",
                            activity=facts.name_of(claim.activity),
                            at=_stamp(value),
                            deadline=str(sheet_day),
                        ),
                    )  # fmt: skip
                )
            continue
        late = [(name, getattr(claim, name)) for name in fields]
        late = [(name, value) for name, value in late if value is not None and value >= deadline]
        if "approved_at" in fields and claim.approved_at is None:
            # 002 §3.1: every shift approved by the lock date; never approved is too late.
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D3",
                    "reject",
                    0,
                    because("D3.never_approved", lock=str(lock)),
                )  # fmt: skip
            )
            continue
        if late:
            name, value = late[0]
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D3",
                    "reject",
                    0,
                    because(
                        f"D3.late_{name}",
                        at=_stamp(value),
                        lock=str(lock),
                        weekday=params.get("weekday", 3),
                        month=f"{year}-{month:02d}",
                    ),
                )  # fmt: skip
            )
    return findings


@rule("D4")
def d4_approval_deadline(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Visits of month M approved by the first weekday of M+1 at HH:MM (001: 15:00; only
    approved visits are payable). Norrtälje: attested by that day (000 §1.2.10)."""
    year, month = next_month(facts.year, facts.month)
    first = nth_weekday(year, month, 1)
    clock = params.get("at", "")
    if clock:
        hour, minute = (int(x) for x in clock.split(":"))
        deadline = local_at(first, time(hour, minute))
    else:
        deadline = end_of_day(first)
    outcome = params.get("outcome", "reject")
    findings = []
    for claim in facts.claims:
        if claim.approved_at is None:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D4",
                    outcome,
                    0 if outcome == "reject" else claim.minutes,
                    because(
                        "D4.never_approved",
                        when=span(claim.start, claim.end),
                        deadline=_stamp(deadline),
                    ),
                )  # fmt: skip
            )
        elif claim.approved_at > deadline:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D4",
                    outcome,
                    0 if outcome == "reject" else claim.minutes,
                    because(
                        "D4.late",
                        approved=_stamp(claim.approved_at),
                        deadline=_stamp(deadline),
                        month=f"{year}-{month:02d}",
                    ),
                )  # fmt: skip
            )
    return findings


@rule("D5")
def d5_correction_deadline(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Corrections of month M after the 4th of M+1 go to billing by hand (004 Uppehåll …)."""
    year, month = next_month(facts.year, facts.month)
    day = int(params.get("day", 4))
    deadline = end_of_day(date(year, month, day))
    findings = []
    for claim in facts.claims:
        if claim.adjusted_at is not None and claim.adjusted_at >= deadline:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D5",
                    "follow_up",
                    claim.minutes,
                    because(
                        "D5.late",
                        adjusted=_stamp(claim.adjusted_at),
                        day=day,
                        month=f"{year}-{month:02d}",
                    ),
                )  # fmt: skip
            )
    return findings


@rule("D6")
def d6_adjustable_activities(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Time adjustments only for activities outside the frame time, within five working
    days (004 Förändring av behov)."""
    days = int(params.get("weekdays", 5))
    findings = []
    for claim in facts.claims:
        if claim.adjusted_at is None:
            continue
        activity = facts.activity(claim.activity)
        if activity is not None and activity.frame:
            # 004 Förändring av behov: no adjustment "om behovet inte förändrats"; a changed
            # need is reported to the needs assessor, so the claim is looked at, not refused.
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D6",
                    "follow_up",
                    claim.minutes,
                    because(
                        "D6.frame_time",
                        activity=facts.name_of(claim.activity),
                        adjusted=_stamp(claim.adjusted_at),
                    ),
                )  # fmt: skip
            )
            continue
        deadline = end_of_day(add_weekdays(claim.local_end.date(), days))
        if claim.adjusted_at >= deadline:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "D6",
                    "follow_up",
                    claim.minutes,
                    because(
                        "D6.late",
                        when=span(claim.start, claim.end),
                        adjusted=_stamp(claim.adjusted_at),
                        days=days,
                    ),
                )  # fmt: skip
            )
    return findings
