"""Judging part of a month again: which customers a change reaches, and their findings alone.

    reach = Reach.of(changed, claims_of_changed, household_members, staff_customers)
    result = judge_customer_month(case, profile, month, evidence, reach.judged)
    findings_digest(result.findings)     # equal for a full and an incremental judgement

Rules are per customer-month (RULES.md), with two ways across customers: a household shares
its members' doors and time (E6, T2 at cohabitants), and one staff member's overlapping claims
at several customers are shared out (T2). So a change at a customer changes the findings of
that customer, its household and every customer where the same staff claimed that month (by
the claims before the change and after it); judging those needs, besides, the claims of every
customer their staff claimed at. kvitto.store.stale says which customers changed; the web
app's judge (kvitto.web.judge) and `kvitto verify` from a store keep the findings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from kvitto.verify.case import Case, Claim
from kvitto.verify.check import Result, claims_in_month, verify_loaded
from kvitto.verify.reasons import Reason
from kvitto.verify.rules import Facts, Finding, Profile, run_rules
from kvitto.verify.rules.billing import billing_basis
from kvitto.verify.visits import Evidence
from kvitto.verify.workdays import parse_month


@dataclass(frozen=True)
class Reach:
    """`judged`: the customers whose findings a change can alter; `context`: the customers
    whose claims judging them needs; `evidence`: those whose evidence it needs (judged ⊆
    evidence ⊆ context)."""

    judged: frozenset[str]
    context: frozenset[str]
    evidence: frozenset[str]

    @staticmethod
    def of(
        changed: Iterable[str],
        claims_changed: Iterable[str],
        claims: Iterable[Claim],
        household: Callable[[Iterable[str]], Iterable[str]],
        staff_customers: Callable[[Iterable[str]], Iterable[str]],
        kept_staff: dict[str, list[str]],
    ) -> Reach:
        """`changed`: customers whose evidence or claims changed, `claims_changed` those of
        them whose claims (or their outcome) did; `claims`: the current claims of (at least)
        the changed customers; `household`: customers → them and their cohabitants;
        `staff_customers`: staff → every customer they claimed at in the month (as last
        judged, and as `claims` say); `kept_staff`: customer → its claims' staff when last
        judged."""
        changed, claims = set(changed), list(claims)
        by_claims = set(claims_changed)
        # evidence reaches the household (E6: cohabitants' doors); claims reach, besides,
        # the staff's other customers (T2 shares out a staff member's overlapping claims)
        staff = {c.staff for c in claims if c.staff and c.customer in by_claims}
        for customer in by_claims:
            staff.update(kept_staff.get(customer, []))
        judged = set(household(changed)) | set(staff_customers(sorted(staff))) | changed
        evidence = set(household(judged)) | judged
        staff = {c.staff for c in claims if c.staff and c.customer in judged}
        for customer in judged:
            staff.update(kept_staff.get(customer, []))
        context = set(staff_customers(sorted(staff))) | evidence
        return Reach(frozenset(judged), frozenset(context), frozenset(evidence))


def staff_by_customer(claims: Iterable[Claim]) -> dict[str, list[str]]:
    """customer → the staff of its claims (sorted), what a judge keeps for the next Reach."""
    found: dict[str, set[str]] = {}
    for claim in claims:
        found.setdefault(claim.customer, set())
        if claim.staff:
            found[claim.customer].add(claim.staff)
    return {customer: sorted(staff) for customer, staff in found.items()}


def judge_customer_month(
    case: Case,
    profile: Profile,
    month: str,
    evidence: Evidence,
    customers: Iterable[str] | None = None,
    staff_claims: Iterable[Claim] = (),
) -> Result:
    """verify_loaded over `case`, the findings and billing rows of `customers` alone (all when
    None). `staff_claims`: the claims of the customers' staff at customers beyond `case`
    (Reach.context beyond Reach.evidence). Only T2 reads those (it shares out one staff
    member's overlapping claims, RULES.md), so it runs over both while every other rule runs
    over `case` alone: their intervals, not the other customers' whole judgement."""
    others = list(staff_claims)
    if not others or "T2" not in profile.rules:
        return _only(verify_loaded(case, profile, month, evidence), customers)
    year, number = parse_month(month)
    rest = replace(profile, rules={r: p for r, p in profile.rules.items() if r != "T2"})
    result = verify_loaded(case, rest, month, evidence)
    shared = Facts(replace(profile, rules={"T2": profile.rules["T2"]}), year, number,
                   case.registry, claims_in_month([*case.claims, *others], year, number), [],
                   Evidence())  # fmt: skip
    result.findings.extend(run_rules(shared))
    order = {c.claim_id: index for index, c in enumerate(result.claims)}
    result.findings.sort(key=lambda f: (order.get(f.claim_id, len(order)), f.rule))
    result = _only(result, customers)
    facts = Facts(profile, year, number, case.registry, result.claims, case.orders, evidence)
    result.billing = billing_basis(facts, result.findings)
    for row in result.billing:
        row.pop("claims", None)
    return result


def _only(result: Result, customers: Iterable[str] | None) -> Result:
    """The result's findings, billing rows and claims of `customers` (all when None)."""
    if customers is None:
        return result
    wanted = set(customers)
    return replace(
        result,
        findings=[f for f in result.findings if f.customer in wanted],
        billing=[row for row in result.billing if row["customer"] in wanted],
        claims=[c for c in result.claims if c.customer in wanted],
    )


def finding_key(finding: Finding) -> tuple[str, ...]:
    return (finding.customer, finding.claim_id, finding.rule, finding.outcome,
            str(finding.payable_minutes), finding.why.stored(), finding.category,
            finding.source)  # fmt: skip


def findings_digest(findings: Iterable[Finding]) -> str:
    """SHA-256 of the findings in a fixed order: equal exactly when the findings are (a reason
    by its code and parameters, not its words)."""
    digest = hashlib.sha256()
    for key in sorted(finding_key(f) for f in findings):
        digest.update(json.dumps(key, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def finding_data(finding: Finding) -> dict[str, Any]:
    """A finding as JSON-able data that finding_from reads back equal."""
    return {"claim_id": finding.claim_id, "customer": finding.customer, "rule": finding.rule,
            "outcome": finding.outcome, "payable_minutes": finding.payable_minutes,
            "why": finding.why.as_json(), "category": finding.category,
            "source": finding.source}  # fmt: skip


def finding_from(data: dict[str, Any]) -> Finding:
    return Finding(
        data["claim_id"], data["customer"], data["rule"], data["outcome"],
        int(data["payable_minutes"]), Reason.from_json(data["why"]), data.get("category", ""),
        data.get("source", ""),
    )  # fmt: skip
