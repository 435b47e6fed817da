"""S — staffing (RULES.md S1–S3): double staffing ordered or not, one registers, split tasks.

from kvitto.verify.rules.staffing import shared_visits
for first, second in shared_visits(facts.claims):   # two staff, one customer, overlapping
    ...
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kvitto.verify.case import Claim
from kvitto.verify.rules import Facts, Finding, rule, span
from kvitto.verify.visits import credentials_present, overlap_seconds, union_seconds


def shared_visits(claims: list[Claim]) -> list[tuple[Claim, Claim]]:
    """Pairs of claims by different staff at one customer whose times overlap; the second is
    the one registered later (or later in the file)."""
    by_customer: dict[str, list[Claim]] = {}
    for claim in claims:
        if claim.minutes > 0:
            by_customer.setdefault(claim.customer, []).append(claim)
    pairs = []
    for items in by_customer.values():
        items.sort(key=lambda c: c.start)
        for index, first in enumerate(items):
            for second in items[index + 1 :]:
                if second.start >= first.end:
                    break
                if second.staff == first.staff:
                    continue
                if overlap_seconds(first.start, first.end, second.start, second.end) <= 0:
                    continue
                order = sorted((first, second), key=lambda c: (c.registered_at or c.end, c.line))
                pairs.append((order[0], order[1]))
    return pairs


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
                    f"double staffing claimed {span(claim.start, claim.end)} but "
                    f"{claim.customer}'s order grants none",
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
                        f"double staffing claimed {span(claim.start, claim.end)}, the door "
                        f"shows {len(present)} credential(s)",
                    )  # fmt: skip
                )
    return findings


@rule("S2")
def s2_double_one_registers(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Only one of two staff registers (001 Dubbelbemanning: the other registers nothing;
    002 §7 / 003: only one marks double staffing). A second full claim is rejected."""
    mode = params.get("mode", "one_marks_double")
    findings = []
    if mode == "one_registers":
        for claim in facts.claims:
            if claim.double_staffing:
                findings.append(
                    Finding(
                        claim.claim_id,
                        claim.customer,
                        "S2",
                        "reject",
                        0,
                        f"double staffing registered {span(claim.start, claim.end)}: no "
                        "extra pay, only one of the staff registers the visit",
                    )  # fmt: skip
                )
    rejected = {f.claim_id for f in findings}
    for first, second in shared_visits(facts.claims):
        if second.claim_id in rejected:
            continue
        if mode == "one_registers":
            duplicate = first.activity == second.activity
        else:
            duplicate = first.double_staffing and second.double_staffing
        if duplicate:
            rejected.add(second.claim_id)
            findings.append(
                Finding(
                    second.claim_id,
                    second.customer,
                    "S2",
                    "reject",
                    0,
                    f"{second.staff} claimed {span(second.start, second.end)} for the visit "
                    f"{first.staff} already registered ({first.claim_id}): only one registers",
                )  # fmt: skip
            )
    return findings


@rule("S3")
def s3_two_staff_not_double(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Two staff splitting an ordinary task each register their part; the assessed time is
    not doubled (002 §7): each is paid its share of the time the task took."""
    findings = []
    seen: set[str] = set()
    for first, second in shared_visits(facts.claims):
        if first.double_staffing or second.double_staffing or first.activity != second.activity:
            continue
        if first.claim_id in seen or second.claim_id in seen:
            continue
        seen |= {first.claim_id, second.claim_id}
        took = union_seconds([(first.start, first.end), (second.start, second.end)]) / 60
        claimed = first.minutes + second.minutes
        for claim in (first, second):
            share = round(took * claim.minutes / claimed)
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "S3",
                    "adjust",
                    share,
                    f"{first.staff} and {second.staff} both claimed {claim.activity} "
                    f"({span(min(first.start, second.start), max(first.end, second.end))}, "
                    f"{claimed} min for {round(took)} min): not double staffing, "
                    f"{share} min each share",
                )  # fmt: skip
            )
    return findings
