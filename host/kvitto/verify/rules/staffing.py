"""S — staffing (RULES.md S1–S3): double staffing ordered or not, one registers, split tasks.

from kvitto.verify.rules.staffing import shared_visits
for group in shared_visits(facts.claims):   # claims of 2+ staff at one customer, overlapping
    ...

Groups come from one sort and a sweep per customer (never pairwise: a file of a million
overlapping rows stays linear after the sort, issue #25.6).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.visits import credentials_present, union_seconds


def shared_visits(claims: list[Claim]) -> list[list[Claim]]:
    """Groups of overlapping claims (chained) at one customer with two or more staff, each in
    registration order: earliest registered (then file line) first."""
    by_customer: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        if claim.minutes > 0:
            by_customer[claim.customer].append(claim)
    groups = []
    for items in by_customer.values():
        items.sort(key=lambda c: c.start)
        current: list[Claim] = []
        end: datetime | None = None
        for claim in items:
            if current and end is not None and claim.start < end:
                current.append(claim)
                end = max(end, claim.end)
                continue
            if len(current) > 1:
                groups.append(current)
            current, end = [claim], claim.end
        if len(current) > 1:
            groups.append(current)
    return [
        sorted(group, key=_registered_order)
        for group in groups
        if len({c.staff for c in group}) > 1
    ]


def _registered_order(claim: Claim) -> tuple[datetime, int]:
    return (claim.registered_at or claim.end, claim.line)


@rule("S1")
def s1_double_ordered(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Double staffing payable only when the order grants it (002 §7)."""
    slack = timedelta(minutes=float(params.get("tolerance_minutes", 2)))
    findings = []
    for claim in facts.claims:
        if not claim.double_staffing:
            continue
        day = claim.local_start.date()
        ordered = any(o.double_staffing for o in facts.orders_on(claim.customer, day))
        if not ordered:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "S1",
                    "reject",
                    0,
                    because(
                        "S1.not_granted",
                        when=span(claim.start, claim.end),
                        customer=claim.customer,
                    ),
                )  # fmt: skip
            )
            continue
        presences = facts.evidence.for_customer(claim.customer)
        if presences:
            present = credentials_present(presences, claim.start, claim.end, slack)
            if len(present) < 2:
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "S1",
                        "follow_up",
                        claim.minutes,
                        because(
                            "S1.one_at_door",
                            when=span(claim.start, claim.end),
                            credentials=len(present),
                        ),
                    )  # fmt: skip
                )
    return findings


@rule("S2")
def s2_double_one_registers(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Only one of two staff registers the double-staffed visit (001 Dubbelbemanning: no extra
    pay, the other registers nothing; 002 §7 / 003: only one marks double staffing). Of two
    claims for the same visit exactly one is payable, the one registered first; the second
    registration is rejected. Never both."""
    mode = params.get("mode", "one_marks_double")
    findings = []
    for group in shared_visits(facts.claims):
        first_of: dict[Any, Claim] = {}
        for claim in group:  # in registration order
            if mode == "one_registers":
                key: Any = claim.activity  # the other staff registers nothing at all
            elif claim.double_staffing:
                key = "double"  # only one marks double staffing
            else:
                continue  # the other registers what they did: a claim of its own
            first = first_of.setdefault(key, claim)
            if first is claim or first.staff == claim.staff:
                continue
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "S2",
                    "reject",
                    0,
                    because(
                        "S2.second_registration",
                        staff=claim.staff,
                        when=span(claim.start, claim.end),
                        first_staff=first.staff,
                        first_claim=first.claim_id,
                    ),
                )  # fmt: skip
            )
    if mode == "one_registers":
        # 001 Dubbelbemanning: "personalen inte ska registrera dubbelbemanning": a flag is
        # followed up; the visit itself was given and is paid once, no extra.
        rejected = {f.claim_id for f in findings}
        for claim in facts.claims:
            if claim.double_staffing and claim.claim_id not in rejected:
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "S2",
                        "follow_up",
                        claim.minutes,
                        because("S2.no_extra_pay", when=span(claim.start, claim.end)),
                    )  # fmt: skip
                )
    return findings


@rule("S3")
def s3_two_staff_not_double(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Two staff splitting an ordinary task each register their part (002 §7 "Brukarens
    bedömda tid delas på två personal och besöket tar halva tiden"): each part is paid as
    registered; only when both parts together exceed the visit's planned (assessed) time are
    they shared down to it, by each one's registered time. Never halved on top of that."""
    findings = []
    for group in shared_visits(facts.claims):
        by_activity: dict[str, list[Claim]] = defaultdict(list)
        for claim in group:
            if not claim.double_staffing:
                by_activity[claim.activity].append(claim)
        for activity, parts in by_activity.items():
            if len({c.staff for c in parts}) < 2:
                continue
            claimed = sum(c.minutes for c in parts)
            planned = [c.planned_minutes for c in parts if c.planned_minutes is not None]
            assessed = max(planned) if planned else None
            took = round(union_seconds((c.start, c.end) for c in parts) / 60)
            staff = ", ".join(sorted({c.staff for c in parts}))
            where = span(min(c.start for c in parts), max(c.end for c in parts))
            if assessed is None:
                facts.skip(
                    "S3",
                    because(
                        "S3.no_planned_time",
                        activity=facts.name_of(activity),
                        staff=staff,
                        when=where,
                    ),
                    parts[0].claim_id,
                )
                continue
            if claimed <= assessed:
                continue
            for claim in parts:
                share = round(assessed * claim.minutes / claimed)
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "S3",
                        "adjust",
                        share,
                        because(
                            "S3.shared",
                            staff=staff,
                            activity=facts.name_of(activity),
                            when=where,
                            took=took,
                            claimed=claimed,
                            assessed=assessed,
                            share=share,
                        ),
                    )  # fmt: skip
                )
    return findings
