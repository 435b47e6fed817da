"""The month judged unit by unit (issue #21, kvitto.verify.month):

- unit by unit gives what the whole month at once gives (findings, billing, notes, counts),
  over generated months in every profile, fixed seed: households and one staff member's
  overlapping claims at two homes (T2) stay in one unit;
- one process and two give the same findings hash, on a generated month and on the shared
  examples;
- a month streamed customer by customer is never held whole: the customers handed out and not
  yet merged stay under the same bound for 40 customers and for 400 (a counter, not RSS).
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules_properties import PROFILES, claim_rows, month, presence_rows
from verify_support import bench_verify

import kvitto.verify.month
from kvitto.verify.case import Claim, Credential, Customer, Order, Registry
from kvitto.verify.check import verify_case
from kvitto.verify.incremental import findings_digest
from kvitto.verify.month import Flow, Month, Unit, judge_month, merge_verdicts, units_of
from kvitto.verify.reasons import entry_dict
from kvitto.verify.rules import Facts, load_profile, run_rules
from kvitto.verify.rules.billing import billing_basis
from kvitto.verify.visits import Evidence, Presence
from kvitto.verify.workdays import STOCKHOLM

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"


def evidence_of(presences: list[Presence]) -> Evidence:
    evidence = Evidence(presences=list(presences))
    for p in sorted(presences, key=lambda p: p.start):
        evidence.by_customer.setdefault(p.customer, []).append(p)
    return evidence


def whole(profile, registry, orders, claims, evidence):
    facts = Facts(profile, 2026, 10, registry, claims, orders, evidence)
    findings = run_rules(facts)
    billing = billing_basis(facts, findings)
    for row in billing:
        row.pop("claims", None)
    return findings, billing, facts.not_checked, facts.counts


def by_units(profile, registry, orders, claims, evidence, jobs=1):
    units = units_of(registry, claims, orders, evidence)
    return merge_verdicts(judge_month(Month(profile, 2026, 10, registry), units, jobs))


def digest(verdict) -> str:
    """The findings hash (kvitto.verify.incremental's) and the rest of the verdict, in words."""
    document = {
        "findings": findings_digest(verdict.findings),
        "billing": verdict.billing,
        "not_checked": [entry_dict(entry, "en") for entry in verdict.not_checked],
        "counts": verdict.counts,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.sampled_from(sorted(PROFILES)), claim_rows, presence_rows)
def test_unit_by_unit_is_the_whole_month(profile_name, rows, presences):
    profile, registry, orders, claims, shown = month(profile_name, rows, presences)
    evidence = evidence_of(shown)
    findings, billing, not_checked, counts = whole(profile, registry, orders, claims, evidence)
    merged = by_units(profile, registry, orders, claims, evidence)
    key = lambda f: (f.claim_id, f.rule, f.outcome, f.payable_minutes, f.reason)  # noqa: E731
    assert sorted(map(key, merged.findings)) == sorted(map(key, findings))
    assert merged.billing == sorted(billing, key=lambda r: (r["customer"], r["category"]))
    entries = {tuple(sorted(e.items())) for e in not_checked}
    assert {tuple(sorted(e.items())) for e in merged.not_checked} == entries
    assert merged.counts == counts


def test_t2_across_homes_and_households_stay_in_one_unit():
    """s-1's overlapping claims at c-1 and c-3 join them; c-2 lives with c-1; c-4 is alone."""
    registry = Registry()
    for customer, household in (("c-1", "h-1"), ("c-2", "h-1"), ("c-3", ""), ("c-4", "")):
        registry.customers[customer] = Customer(customer, household)

    def claim(number: int, customer: str, staff: str, hour: int, minute: int) -> Claim:
        start = datetime(2026, 10, 5, hour, minute, tzinfo=STOCKHOLM)
        return Claim(f"k-{number}", customer, staff, "226", start, start + timedelta(minutes=30),
                     "tag", start + timedelta(minutes=30), start + timedelta(hours=2))  # fmt: skip

    claims = [
        claim(1, "c-1", "s-1", 9, 0),
        claim(2, "c-3", "s-1", 9, 15),  # overlaps k-1: T2 compares them
        claim(3, "c-2", "s-2", 12, 0),  # c-1's cohabitant
        claim(4, "c-4", "s-1", 14, 0),  # s-1 again, but later: nothing to share
    ]
    units = list(units_of(registry, claims, [], Evidence()))
    assert [sorted(u.customers) for u in units] == [["c-1", "c-2", "c-3"], ["c-4"]]
    assert [c.claim_id for c in units[0].claims] == ["k-1", "k-2", "k-3"]
    assert units[0].positions == [0, 1, 2]


def generated_month(customers: int, seed: int = 3):
    """A month of `customers` (pairs of cohabitants among them, staff shared between homes so
    T2 has overlaps to share), in claims.csv order (by time, not by customer)."""
    profile = load_profile("huddinge")
    rng = random.Random(seed)
    registry = Registry()
    for number in range(customers):
        household = f"h-{number // 2}" if number % 10 < 2 else ""
        registry.customers[f"c-{number}"] = Customer(f"c-{number}", household)
    staff = [f"s-{n}" for n in range(max(2, customers // 3))]
    for name in staff:
        cred = hashlib.sha256(name.encode()).hexdigest()[:32]
        registry.credentials[cred] = Credential(cred, name, "p-1", "badge")
    orders = [Order(c, "omsorg", 600, date(2026, 1, 1), None) for c in registry.customers]
    claims, presences = [], []
    for number in range(customers * 8):
        customer = f"c-{rng.randrange(customers)}"
        who = rng.choice(staff)
        start = datetime(2026, 10, rng.randint(1, 5), rng.randint(7, 20), rng.choice((0, 20, 40)),
                         tzinfo=STOCKHOLM)  # fmt: skip
        end = start + timedelta(minutes=rng.choice((15, 30, 45, 70)))
        via = rng.choice(("tag", "tag", "tag", "manual"))
        claims.append(Claim(f"k-{number}", customer, who, "omsorg", start, end, via, end,
                            end + timedelta(hours=rng.choice((1, 30))), line=number + 2))  # fmt: skip
        if rng.random() < 0.8:
            cred = hashlib.sha256(who.encode()).hexdigest()[:32]
            presences.append(Presence(customer, f"tag-{customer}", "tag", "visit", cred, who,
                                      "p-1", True, start, end, True))  # fmt: skip
    claims.sort(key=lambda c: c.start)
    return profile, registry, orders, claims, evidence_of(presences)


def test_one_process_and_two_give_the_same_findings_hash(monkeypatch):
    profile, registry, orders, claims, evidence = generated_month(60)
    monkeypatch.setattr(kvitto.verify.month, "BATCH_CLAIMS", 40)  # several batches: the pool
    one = by_units(profile, registry, orders, claims, evidence, jobs=1)
    flow = Flow()
    units = units_of(registry, claims, orders, evidence)
    two = merge_verdicts(judge_month(Month(profile, 2026, 10, registry), units, 2, flow=flow))
    assert flow.units > 1 and any(f.rule == "T2" for f in one.findings)
    assert digest(one) == digest(two)
    findings, *_ = whole(profile, registry, orders, claims, evidence)
    assert len(findings) == len(one.findings)


@pytest.mark.skipif(not EXAMPLES.exists(), reason=f"shared examples not beside the checkout "
                    f"({EXAMPLES})")  # fmt: skip
def test_examples_give_the_same_report_on_one_process_and_two(monkeypatch):
    monkeypatch.setattr(kvitto.verify.month, "BATCH_CLAIMS", 1)
    cases = sorted(p for p in EXAMPLES.iterdir() if (p / "expected.json").exists())
    assert cases
    for case in cases:
        meta = json.loads((case / "expected.json").read_text())["meta"]
        one = verify_case(case, meta["profile"], meta["month"], jobs=1).as_json()
        two = verify_case(case, meta["profile"], meta["month"], jobs=2).as_json()
        assert hashlib.sha256(one.encode()).digest() == hashlib.sha256(two.encode()).digest()


def streamed(customers: int, claims_each: int = 12):
    """One customer's unit at a time, made as it is asked for (the month is never built)."""
    for number in range(customers):
        customer = f"c-{number}"
        claims = []
        for visit in range(claims_each):
            start = datetime(2026, 10, 1 + visit, 9, tzinfo=STOCKHOLM)
            end = start + timedelta(minutes=30)
            claims.append(Claim(f"k-{number}-{visit}", customer, f"s-{number}", "omsorg", start,
                                end, "manual", end, end + timedelta(hours=1)))  # fmt: skip
        yield Unit((customer,), claims, [Order(customer, "omsorg", 600, date(2026, 1, 1), None)],
                   {})  # fmt: skip


def test_a_streamed_month_holds_a_bounded_number_of_customers(monkeypatch):
    monkeypatch.setattr(kvitto.verify.month, "BATCH_CLAIMS", 60)  # 5 customers a batch
    profile = load_profile("huddinge")
    registry = Registry()
    most = []
    for customers in (40, 400):
        flow = Flow()
        verdicts = judge_month(Month(profile, 2026, 10, registry), streamed(customers), 2,
                               flow=flow)  # fmt: skip
        judged = sum(1 for _ in verdicts)
        assert judged == flow.units == customers
        most.append(flow.most_customers_in_flight)
    # at most 2 batches per process plus the one being handed out: 5 × (2 × 2 + 1)
    assert most[0] == most[1] <= 25


def test_the_signature_recheck_on_two_processes_gives_the_same_evidence(monkeypatch, tmp_path):
    """kvitto.verify.audit: the bench's signed bundle, with a forged, an unreadable and a
    repeated message among the good ones, checked in chunks of 50 on one process and on two."""
    import kvitto.verify.audit
    from kvitto.verify.visits import build_evidence, read_decoded

    registry, (path,) = bench_verify().signed_bundle(tmp_path, 500)
    messages = list(read_decoded(path))
    forged = bytearray(messages[7])
    forged[-1] ^= 1
    messages[7:8] = [bytes(forged)]
    messages.insert(100, b"\xd2\x84not cbor")
    messages.insert(200, messages[150])
    monkeypatch.setattr(kvitto.verify.audit, "CHUNK", 50)
    one = build_evidence(registry, messages, jobs=1)
    two = build_evidence(registry, messages, jobs=2)
    assert one.events == two.events == len(messages) - 3
    assert {i.rule for i in one.issues} >= {"I1", "I2"}
    assert one == two
