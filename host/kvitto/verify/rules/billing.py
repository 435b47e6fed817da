"""B — counted items and compensation (RULES.md B1–B4): the monthly billing basis.

    basis = billing_basis(facts, findings)
    # [{"customer": "c-1001", "category": "hemtjanst", "payable_minutes": 1234, "count": 0}, …]

Payable minutes of a claim: as claimed without findings; 0 with a reject; otherwise the lowest
payable_minutes among its findings. Pseudonymous ids only (002 §3.2; 003 Fakturering).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kvitto.verify.reasons import because
from kvitto.verify.rules import Facts, Finding, rule, span


@rule("B1")
def b1_meal_count(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Meal boxes counted per delivery (002 §6.1, `count` required); Huddinge: paid as one
    hour a month per customer who received meals (001 Matdistribution)."""
    codes = set(params.get("activities", []))
    per_month = params.get("minutes_per_customer_month")
    findings = []
    for claim in facts.claims:
        if claim.activity not in codes:
            continue
        if params.get("count_required", False) and claim.count <= 0:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "B1",
                    "reject",
                    0,
                    because("B1.no_count", when=span(claim.start, claim.end)),
                )  # fmt: skip
            )
        elif per_month is not None and claim.minutes:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "B1",
                    "adjust",
                    0,
                    because("B1.per_month", when=span(claim.start, claim.end), minutes=per_month),
                )  # fmt: skip
            )
    return findings


@rule("B2")
def b2_alarm_count(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """Alarm call-outs are counted and reported with the performed time (002 §6.1); the count
    is in the billing basis (category larm), no finding."""
    return []


@rule("B3")
def b3_startup_plan(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """A 0-minute genomförandeplan visit gives a 3-hour start-up compensation, once per new
    case, not for service-only customers (002 §4, §10.2)."""
    codes = set(params.get("activities", []))
    findings = []
    seen: set[str] = set()
    for claim in sorted(facts.claims, key=lambda c: c.start):
        if claim.activity not in codes:
            continue
        orders = facts.orders_on(claim.customer, claim.local_start.date())
        service_only = bool(orders) and all(
            (a := facts.activity(o.activity)) is not None and a.service for o in orders
        )
        if claim.customer in seen:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "B3",
                    "reject",
                    0,
                    because("B3.second_visit", customer=claim.customer),
                )  # fmt: skip
            )
            continue
        seen.add(claim.customer)
        if service_only:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "B3",
                    "reject",
                    0,
                    because("B3.service_only", customer=claim.customer),
                )  # fmt: skip
            )
        elif claim.minutes != 0:
            findings.append(
                Finding(
                    claim.claim_id,
                    claim.customer,
                    "B3",
                    "follow_up",
                    0,
                    because(
                        "B3.not_zero", when=span(claim.start, claim.end), claimed=claim.minutes
                    ),
                )  # fmt: skip
            )
        facts.skip("B3", because("B3.history_missing"), claim.claim_id)
    return findings


@rule("B4")
def b4_billing_basis(facts: Facts, params: dict[str, Any]) -> list[Finding]:
    """The billing basis itself is built by billing_basis(); no per-claim finding."""
    return []


def claim_payable(minutes: int, findings: list[Finding]) -> int:
    if not findings:
        return minutes
    if any(f.outcome == "reject" for f in findings):
        return 0
    return min(f.payable_minutes for f in findings)


def billing_basis(facts: Facts, findings: list[Finding]) -> list[dict[str, Any]]:
    by_claim: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_claim[finding.claim_id].append(finding)
    rules = facts.profile.rules
    meal_codes = set(rules.get("B1", {}).get("activities", []))
    meal_minutes = rules.get("B1", {}).get("minutes_per_customer_month")
    alarm_codes = set(rules.get("B2", {}).get("activities", []))
    startup_codes = set(rules.get("B3", {}).get("activities", []))
    startup_minutes = int(rules.get("B3", {}).get("minutes", 180))
    absence_codes = {
        code
        for rule_id in ("X1", "X2", "X3")
        for code in rules.get(rule_id, {}).get("activities", [])
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(customer: str, category: str) -> dict[str, Any]:
        key = (customer, category)
        if key not in rows:
            rows[key] = {"customer": customer, "category": category, "payable_minutes": 0,
                         "count": 0, "claims": 0, "double_staffing_minutes": 0,
                         "absence_minutes": 0}  # fmt: skip
        return rows[key]

    meal_customers: set[str] = set()
    for claim in facts.claims:
        own = by_claim.get(claim.claim_id, [])
        payable = claim_payable(claim.minutes, own)
        category = next((f.category for f in own if f.category), "") or facts.profile.category(
            claim.activity
        )
        rejected = any(f.outcome == "reject" for f in own)
        entry = row(claim.customer, category)
        entry["payable_minutes"] += payable
        entry["claims"] += 1
        if claim.activity in absence_codes:
            # B4 (002 §3.2; 003 Fakturering): absences paid are shown apart from visits.
            entry["absence_minutes"] += payable
        if claim.double_staffing and not rejected:
            # 002 §7: the customer pays no fee for double-staffing time.
            entry["double_staffing_minutes"] += payable
        if rejected:
            continue
        if claim.activity in meal_codes:
            entry["count"] += claim.count
            meal_customers.add(claim.customer)
        moved = any(f.category for f in own)  # C3: the time went to an ordinary activity
        if "B2" in rules and claim.activity in alarm_codes and not moved:
            entry["count"] += 1
        if "B3" in rules and claim.activity in startup_codes:
            row(claim.customer, "uppstart")["payable_minutes"] += startup_minutes
            row(claim.customer, "uppstart")["count"] += 1
    if meal_minutes is not None:
        for customer in meal_customers:
            category = facts.profile.category(next(iter(meal_codes)))
            row(customer, category)["payable_minutes"] += int(meal_minutes)
    return [rows[key] for key in sorted(rows)]
