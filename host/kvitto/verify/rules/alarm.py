"""A — safety alarm visits (RULES.md A1–A4): on site, standard time, response, day only.

alarm = [p for p in facts.evidence.for_customer("c-1001") if p.kind == "alarm"]
# check-in → check-out at the alarm unit, with the call it answered (p.alarm_call)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, hhmm, rule, span
from kvitto.verify.rules.timing import night_minutes
from kvitto.verify.visits import Presence, overlap_seconds, union_seconds


def _alarm_claims(facts: Facts, params: dict[str, Any]) -> list[Claim]:
    codes = set(params.get("activities", []))
    return [c for c in facts.claims if c.activity in codes]


def _on_site(facts: Facts, claim: Claim, slack: timedelta) -> list[Presence]:
    found = []
    for p in facts.evidence.for_customer(claim.customer):
        if p.end is None:
            continue
        if p.kind != "alarm" and (
            not p.registered or (p.staff and claim.staff and p.staff != claim.staff)
        ):
            continue  # I6: an unknown or revoked credential's tap is not presence
        if overlap_seconds(p.start - slack, p.end + slack, claim.start, claim.end) > 0 or (
            claim.minutes == 0 and p.start - slack <= claim.start <= p.end + slack
        ):
            found.append(p)
    return found


@rule("A1")
def a1_alarm_on_site(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Alarm visits registered at the alarm unit or tag: check-in on arrival, check-out on
    departure (000 §1.2.3; 002 §8.2). The payable time is bounded by that presence: a claim
    longer than check-in→check-out (within the tolerance) is adjusted to it."""
    tolerance = float(params.get("tolerance_minutes", 2))
    slack = timedelta(minutes=tolerance)
    findings = []
    for claim in _alarm_claims(facts, params):
        present = _on_site(facts, claim, slack)
        if not present:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "A1",
                    "reject",
                    0,
                    because("A1.no_check_in", when=span(claim.start, claim.end)),
                )  # fmt: skip
            )
            continue
        shown = (
            union_seconds(
                (max(p.start - slack, claim.start), min(p.end + slack, claim.end))
                for p in present
                if p.end is not None
                and min(p.end + slack, claim.end) > max(p.start - slack, claim.start)
            )
            / 60
        )
        if claim.minutes - shown <= tolerance:
            continue
        payable = min(claim.minutes, round(union_seconds(
            (max(p.start, claim.start), min(p.end, claim.end))
            for p in present
            if p.end is not None and min(p.end, claim.end) > max(p.start, claim.start)
        ) / 60))  # fmt: skip
        first = min(p.start for p in present)
        last = max(p.end for p in present if p.end is not None)
        findings.append(
            Finding(
                claim.claim_id,
                claim.customer,
                "A1",
                "adjust",
                payable,
                because(
                    "A1.presence",
                    when=span(claim.start, claim.end),
                    claimed=claim.minutes,
                    first=hhmm(first),
                    last=hhmm(last),
                    payable=payable,
                ),
            )  # fmt: skip
        )
    return findings


@rule("A2")
def a2_alarm_standard_time(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Each physical alarm visit is paid at a standard time; longer needs a documented
    reason, the excess billed separately (002 §6.1: 15 min)."""
    standard = int(params.get("standard_minutes", 15))
    findings = []
    for claim in _alarm_claims(facts, params):
        if claim.minutes == standard:
            continue
        if claim.minutes > standard and claim.reason:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "A2",
                    "follow_up",
                    claim.minutes,
                    because(
                        "A2.longer_with_reason",
                        when=span(claim.start, claim.end),
                        claimed=claim.minutes,
                        given=claim.reason,
                        standard=standard,
                        excess=claim.minutes - standard,
                    ),
                )  # fmt: skip
            )
        else:  # longer without a reason, or shorter: paid at the standard either way
            why = because(
                "A2.longer_without_reason" if claim.minutes > standard else "A2.shorter",
                when=span(claim.start, claim.end),
                claimed=claim.minutes,
                standard=standard,
            )
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "A2",
                    "adjust",
                    standard,
                    why,
                )  # fmt: skip
            )
    return findings


@rule("A3")
def a3_alarm_response(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Check-in within N minutes of the alarm call (002 §8: 30 min)."""
    limit = int(params.get("minutes", 30))
    slack = timedelta(minutes=float(params.get("tolerance_minutes", 2)))
    findings = []
    for claim in _alarm_claims(facts, params):
        answered = [p for p in _on_site(facts, claim, slack) if p.kind == "alarm" and p.alarm_call]
        if not answered:
            facts.skip("A3", because("A3.no_call"), claim.claim_id)
            continue
        first = min(answered, key=lambda p: p.start)
        call = first.alarm_call
        if call is None:
            continue
        waited = (first.start - call).total_seconds() / 60
        if waited > limit:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "A3",
                    "follow_up",
                    claim.minutes,
                    because(
                        "A3.slow",
                        call=hhmm(call),
                        check_in=hhmm(first.start),
                        device=first.device,
                        waited=round(waited),
                        limit=limit,
                    ),
                )  # fmt: skip
            )
    return findings


@rule("A4")
def a4_alarm_day_only(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Providers answer alarms 07:00–22:00; night alarms are the night patrol's (002 §8)."""
    findings = []
    for claim in _alarm_claims(facts, params):
        end = claim.end if claim.minutes else claim.start + timedelta(seconds=1)
        if night_minutes(claim.start, end, 22, 7) > 0:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "A4",
                    "reject",
                    0,
                    because("A4.night", when=span(claim.start, claim.end)),
                )  # fmt: skip
            )
    return findings
