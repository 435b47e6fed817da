"""Judge a provider's month from the store: the claims as corrected, the stored evidence, the
municipality's rules; the verdict is kept in the store per customer for the pages to read.

    judge(store, "p-1", "2026-11", now_ms)                          # the whole month
    judge_stale(store, "p-1", "2026-11", now_ms)                    # only what changed
    refresh_deadlines(store, "p-1", ["2026-11"], now)               # the queue's, as time passes
    rejudge_stale(store, now_ms)                                    # kvitto judge --live

Whatever can change a finding marks its customer-month (kvitto.store.stale): the collector's
intake, the claims import, every record (kvitto.web.records) and door proof. judge_stale
re-judges the marked customers and those a change reaches (kvitto.verify.incremental: the
household; for a changed claim also the staff's other customers, T2), with the claims of the
staff's other customers as context, and keeps the version it read; the result equals a whole
month's judgement (tests/test_incremental.py). An auditor's decision on a `follow_up` is
applied on top: `reject` makes it not payable, `accept` keeps it payable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kvitto.evidence.events import Event
from kvitto.store import stale
from kvitto.store.db import Store
from kvitto.store.registry import Credential as StoreCredential
from kvitto.store.registry import Customer as StoreCustomer
from kvitto.store.registry import Device as StoreDevice
from kvitto.store.registry import Registry as StoreRegistry
from kvitto.verify.case import (
    Case,
    CaseError,
    Claim,
    Credential,
    Customer,
    Device,
    Registry,
    _date,
)
from kvitto.verify.case_csv import parse_orders
from kvitto.verify.check import (
    ORDER_HEADER,
    STORE_WINDOW_MARGIN,
    clock_ahead_issues,
)
from kvitto.verify.door_proofs import add_presences, door_presences
from kvitto.verify.incremental import Reach, judge_customer_month, staff_by_customer
from kvitto.verify.rules import Facts, Finding, Profile, load_profile
from kvitto.verify.rules.absence import X6_REASON, look_back_days
from kvitto.verify.rules.billing import billing_basis
from kvitto.verify.visits import DEFAULT_MAX_SYNC_AGE_S, decode_stored, evidence_of_events
from kvitto.verify.workdays import month_bounds, next_month, parse_month
from kvitto.web.claims import apply_records, stored_rows, to_claims
from kvitto.web.deadlines import deadlines, nearest
from kvitto.web.door_bundle import door_entries
from kvitto.web.records import CLAIM_KINDS, records

# Customers a round's evidence must reach, beyond two thirds of the month, before the month is
# judged whole instead (smaller months are judged piecewise, as tests/test_incremental.py does).
WHOLE_MONTH_FROM = 500


def provider_profile(store: Store, provider: str) -> Profile:
    rows = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
    if not rows:
        raise CaseError(f"provider {provider!r} is not in the store")
    return load_profile(str(rows[0][0]))


def provider_customers(store: Store, provider: str) -> list[str]:
    rows = store.execute(
        "SELECT customer FROM customer_providers WHERE provider = ? ORDER BY customer", (provider,)
    )
    return [str(row[0]) for row in rows]


def with_households(store: Store, provider: str, customers: list[str]) -> list[str]:
    """`customers` and their cohabitants served by the same provider."""
    marks = ", ".join("?" * len(customers))
    rows = store.execute(
        "SELECT c.id FROM customers c JOIN customer_providers p ON p.customer = c.id "
        f"WHERE p.provider = ? AND (c.id IN ({marks}) OR (c.household <> '' AND c.household IN "
        f"(SELECT household FROM customers WHERE id IN ({marks}))))",
        (provider, *customers, *customers),
    )
    return sorted({str(row[0]) for row in rows} | set(customers))


def effective_rows(
    store: Store,
    provider: str,
    month: str,
    customers: list[str] | None,
    claim_ids: list[str] | None = None,
) -> dict[str, dict[str, str]]:
    """The month's claims of `customers` (all when None; only `claim_ids` when given) with the
    provider's records applied."""
    originals = stored_rows(store, provider, month, customers, claim_ids)
    wanted = None if claim_ids is None else set(claim_ids)
    month_records = [
        r
        for r in records(store, chains=[provider], month=month, kinds=(*CLAIM_KINDS, "attest"))
        if r.kind == "attest"
        or (
            (customers is None or r.customer in customers)
            and (wanted is None or r.claim_id in wanted)
        )
    ]
    rows = apply_records(originals, month_records)
    return rows if wanted is None else {k: v for k, v in rows.items() if k in wanted}


def decisions(store: Store, provider: str, month: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(claim_id, rule) → the latest decision record's body (decision, reason, actor, at)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records(store, chains=[provider], month=month, kinds=("decide",)):
        found[(record.claim_id, record.body.get("rule", ""))] = {
            **record.body, "actor": record.actor, "at": record.at,
        }  # fmt: skip
    return found


class StoreInputs:
    """What judging a provider's month reads besides the registry: the claims as corrected and
    the stored events, read from the store each time. The live judge (kvitto.web.live) keeps
    them between rounds instead and reads only what changed (`refresh`)."""

    def __init__(self, store: Store, provider: str, month: str):
        self.store, self.provider, self.month = store, provider, month
        self.source = f"store claims of {provider} {month}"

    def refresh(self) -> None:
        """Called after the marks were read and before the inputs are: a keeping judge catches
        up with the store here (this one reads everything anyway)."""

    def claims_of(self, customers: list[str]) -> list[Claim]:
        """The current claims of `customers` (what a change's reach is found from)."""
        return to_claims(effective_rows(self.store, self.provider, self.month, customers),
                         self.source)  # fmt: skip

    def claims(
        self, context: list[str] | None, wanted: set[str]
    ) -> tuple[list[Claim], list[Claim]]:
        """The claims of the `wanted` customers, and those of the rest of `context` (every
        customer when None) by the same staff (the claims T2 reads besides), in the order of
        effective_rows."""
        rows = effective_rows(self.store, self.provider, self.month, context)
        ours = {k: r for k, r in rows.items() if _text(r, "customer") in wanted}
        claims = to_claims(ours, self.source)
        staff = {c.staff for c in claims if c.staff}
        others = {k: r for k, r in rows.items() if k not in ours and _text(r, "staff") in staff}
        return claims, to_claims(others, self.source)

    def events(
        self, registry: Registry, devices: list[str], since: int
    ) -> tuple[list[tuple[bytes, Event | None]], dict[tuple[str, int], tuple[int | None, int]]]:
        """The devices' stored events from `since` (Store.events), decoded (decode_stored),
        and (device, seq) → (t, received_at)."""
        messages: list[bytes] = []
        received: dict[tuple[str, int], tuple[int | None, int]] = {}
        for device in devices:
            for row in self.store.events(device=device, received_since=since):
                messages.append(bytes(row[6]))
                received[(row[0], row[1])] = (row[3], row[4])
        return decode_stored(registry, messages), received


def judge(
    store: Store,
    provider: str,
    month: str,
    now_ms: int,
    customers: list[str] | None = None,
    inputs: StoreInputs | None = None,
) -> int:
    """Judge the month whole (`customers` None) or as if `customers` had changed (with all the
    customers that reaches, kvitto.verify.incremental), store the verdict and keep what was
    judged; returns how many findings the judged customers have. `inputs`: where the claims
    and events come from (the store, read now, when None)."""
    inputs = inputs or StoreInputs(store, provider, month)
    everyone = provider_customers(store, provider)
    if customers is None:
        read = stale.versions(store, month, everyone)
        inputs.refresh()
        return _judge(store, provider, month, now_ms, read, set(everyone), None, inputs)
    changed = {
        customer: stale.Change(version, True)
        for customer, version in stale.versions(store, month, customers).items()
    }
    return _judge_changed(store, provider, month, now_ms, changed, everyone, inputs)[0]


def judge_stale(
    store: Store, provider: str, month: str, now_ms: int, inputs: StoreInputs | None = None
) -> list[str]:
    """Re-judge the customers of the month changed since they were judged (events, claims,
    corrections, decisions: kvitto.store.stale) and those the changes reach; returns the
    customers judged (none when nothing changed)."""
    everyone = provider_customers(store, provider)
    changed = stale.stale(store, _scope(provider), month, everyone)
    if not changed:
        return []
    inputs = inputs or StoreInputs(store, provider, month)
    return _judge_changed(store, provider, month, now_ms, changed, everyone, inputs)[1]


def stale_months(store: Store) -> list[tuple[str, str]]:
    """(provider, month) pairs with a customer changed since the web app judged it, where the
    provider has a verdict of that month to keep fresh."""
    rows = store.execute(
        "SELECT DISTINCT p.provider, t.month FROM touched t "
        "JOIN customer_providers p ON p.customer = t.customer "
        "JOIN judged j ON j.provider = p.provider AND j.month = t.month "
        "LEFT JOIN kept k ON k.scope = 'web:' || p.provider AND k.month = t.month "
        "AND k.customer = t.customer WHERE k.version IS NULL OR k.version < t.version "
        "ORDER BY p.provider, t.month"
    )
    return [(str(provider), str(month)) for provider, month in rows]


def rejudge_stale(store: Store, now_ms: int) -> dict[tuple[str, str], list[str]]:
    """One round of live verdicts: every judged month with a changed customer re-judged
    (judge_stale); (provider, month) → the customers judged. `kvitto judge --live` repeats it
    beside the collector, so a tap shows in the verdict within the round."""
    return {
        (provider, month): judge_stale(store, provider, month, now_ms)
        for provider, month in stale_months(store)
    }


def _scope(provider: str) -> str:
    return f"web:{provider}"


def _judge_changed(
    store: Store,
    provider: str,
    month: str,
    now_ms: int,
    changed: dict[str, stale.Change],
    everyone: list[str],
    inputs: StoreInputs,
) -> tuple[int, list[str]]:
    inputs.refresh()
    kept = stale.kept(store, _scope(provider), month)
    kept_staff = {customer: entry["staff"] for customer, entry in kept.items()}
    claims = inputs.claims_of(sorted(changed))
    by_staff: dict[str, set[str]] = {}
    for customer, staff in kept_staff.items():
        for name in staff:
            by_staff.setdefault(name, set()).add(customer)
    for claim in claims:
        if claim.staff:
            by_staff.setdefault(claim.staff, set()).add(claim.customer)
    ours = set(everyone)

    def household(customers: Iterable[str]) -> list[str]:
        wanted = sorted(set(customers))
        return with_households(store, provider, wanted) if wanted else []

    def staff_customers(staff: Iterable[str]) -> set[str]:
        return {c for name in staff for c in by_staff.get(name, ())}

    claims_changed = {customer for customer, change in changed.items() if change.claims}
    reach = Reach.of(changed, claims_changed, claims, household, staff_customers, kept_staff)
    if len(set(reach.evidence) & ours) > max(2 * len(ours) // 3, WHOLE_MONTH_FROM):
        # a round that reaches two thirds of a large month judges it whole, which costs less
        # (bench/live.py at 10k customers: 1.1 ms per customer whole, 1.8 ms piecewise)
        return judge(store, provider, month, now_ms, inputs=inputs), sorted(ours)
    judged = set(reach.judged) & ours
    # the changed customers at the version read before their inputs; the others they reach
    # at the version last kept (a change of theirs meanwhile is judged next time, with its
    # own reach)
    read = {c: changed[c].version if c in changed else kept.get(c, {}).get("version", 0)
            for c in judged}  # fmt: skip
    count = _judge(store, provider, month, now_ms, read, set(reach.context) & ours, judged,
                   inputs, set(reach.evidence) & ours)  # fmt: skip
    return count, sorted(judged)


def _judge(
    store: Store,
    provider: str,
    month: str,
    now_ms: int,
    read: dict[str, int],
    context: set[str],
    customers: set[str] | None,
    inputs: StoreInputs,
    evidence_of: set[str] | None = None,
) -> int:
    """Judge `context` (with the evidence of `evidence_of`, all when None), store the findings
    of `customers` (all when None) and keep them at the versions `read` (read before the
    inputs, so a change meanwhile stays stale)."""
    profile = provider_profile(store, provider)
    year, month_number = parse_month(month)
    scope = sorted(context)
    # the rules but T2 judge the customers with their evidence; T2 reads, besides, the claims
    # their staff made at other customers (kvitto.verify.incremental.judge_customer_month)
    wanted = set(scope) if evidence_of is None else set(evidence_of)
    claims, staff_claims = inputs.claims(None if customers is None else scope, wanted)
    registry_rows = StoreRegistry(store)
    chosen_customers = [c for c in registry_rows.customers() if c.id in wanted]
    devices = [d for d in registry_rows.devices() if wanted.intersection(d.served)]
    registry = case_registry(chosen_customers, devices, registry_rows.credentials(),
                             f"store registry of {provider}")  # fmt: skip
    order_lines = [",".join(ORDER_HEADER)]
    for order in registry_rows.orders():
        if order.customer in wanted:
            order_lines.append(
                f"{order.customer},{order.activity},{order.granted_minutes_month},"
                f"{order.valid_from},{order.valid_to or ''},{int(bool(order.double_staffing))},"
                f"{int(bool(order.tag_exempt))}"
            )
    orders = parse_orders("\n".join(order_lines) + "\n", f"store orders of {provider}")
    start, _ = month_bounds(year, month_number)
    since = int((start - STORE_WINDOW_MARGIN).timestamp() * 1000)
    decoded, received = inputs.events(registry, [d.id for d in devices], since)
    i5 = profile.rules.get("I5", {})
    # the store's events, verified by the collector's intake: not checked again (decisions.md)
    evidence = evidence_of_events(registry, decoded,
                                  int(i5.get("max_sync_age_s", DEFAULT_MAX_SYNC_AGE_S)))  # fmt: skip
    evidence.issues.extend(clock_ahead_issues(received, int(i5.get("receive_tolerance_s", 300))))
    # staff phones at the door (kvitto.web.door): their visits, verified when confirmed
    add_presences(evidence, door_presences(door_entries(store, provider, month), registry))
    # the claims before the month its rules read (X6 counts an urgent need across the month)
    earlier = earlier_stored(store, provider, profile, month,
                             None if customers is None else scope)  # fmt: skip
    earlier = [c for c in earlier if c.customer in wanted]
    case = Case(path=Path("."), registry=registry, orders=orders, claims=[*earlier, *claims],
                evidence_path=None)  # fmt: skip
    result = judge_customer_month(case, profile, month, evidence, customers, staff_claims)
    decided = decisions(store, provider, month)
    findings: list[Finding] = []
    for finding in result.findings:
        decision = decided.get((finding.claim_id, finding.rule), {}).get("decision")
        if finding.outcome == "follow_up" and decision == "reject":
            finding = replace(finding, outcome="reject", payable_minutes=0)
        findings.append(finding)
    facts = Facts(profile, year, month_number, registry, result.claims, orders, evidence)
    billing = billing_basis(facts, findings)
    by_id = {claim.claim_id: claim for claim in result.claims}
    now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
    judged = sorted(read) if customers is None else sorted(customers)
    staff = staff_by_customer(result.claims)
    with store.transaction():
        _delete(store, "verdicts", provider, month, None if customers is None else judged)
        _delete(store, "billing", provider, month, None if customers is None else judged)
        store.executemany(
            "INSERT INTO verdicts (provider, month, customer, claim_id, rule, outcome, "
            "payable_minutes, reason, activity, staff, start_at, end_at, deadline_rule, "
            "deadline_at, deadline_last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_verdict_row(provider, month, f, by_id.get(f.claim_id), profile, now)
             for f in findings],
        )  # fmt: skip
        store.executemany(
            "INSERT INTO billing (provider, month, customer, category, payable_minutes, count) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(provider, month, row["customer"], row["category"], int(row["payable_minutes"]),
              int(row.get("count", 0))) for row in billing],
        )  # fmt: skip
        stale.keep(
            store, _scope(provider), month,
            {c: (read.get(c, 0), staff.get(c, []), "", None) for c in judged},
            replace_all=customers is None,
        )  # fmt: skip
        counts = dict(result.counts)
        counts["not_checked"] = result.not_checked
        counts["integrity"] = len(result.integrity)
        if customers is None or not store.execute(
            "SELECT 1 FROM judged WHERE provider = ? AND month = ?", (provider, month)
        ):
            store.execute(
                "INSERT INTO judged (provider, month, judged_at, counts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (provider, month) DO UPDATE SET judged_at = excluded.judged_at, "
                "counts = excluded.counts",
                (provider, month, now_ms, json.dumps(counts, default=str)),
            )
        else:
            store.execute(
                "UPDATE judged SET judged_at = ? WHERE provider = ? AND month = ?",
                (now_ms, provider, month),
            )
    return len(findings)


def earlier_stored(
    store: Store, provider: str, profile: Profile, month: str, customers: list[str] | None
) -> list[Claim]:
    """The provider's stored urgent claims (records applied) of `customers` (all when None)
    in the look-back before `month` (kvitto.verify.rules.absence.look_back_days): what
    verify_loaded's earlier_claims picks the month's Facts.earlier from."""
    days = look_back_days(profile)
    if not days:
        return []
    reason = profile.rules["X6"].get("reason", X6_REASON)
    year, number = parse_month(month)
    start, _ = month_bounds(year, number)
    first = start.date() - timedelta(days=days)
    cursor, found = (first.year, first.month), []
    while cursor < (year, number):
        label = f"{cursor[0]:04d}-{cursor[1]:02d}"
        rows = effective_rows(store, provider, label, customers)
        urgent = {k: r for k, r in rows.items() if _text(r, "reason") == reason}
        found += to_claims(urgent, f"store claims of {provider} {label}")
        cursor = next_month(*cursor)
    return [c for c in found if c.local_start.date() >= first]


def _text(row: dict[str, Any], name: str) -> str:
    return str(row.get(name) or "").strip()


def case_registry(
    customers: list[StoreCustomer],
    devices: list[StoreDevice],
    credentials: list[StoreCredential],
    source: str,
) -> Registry:
    """The store's registry rows as kvitto.verify.case reads registry.toml (parse_registry of
    StoreRegistry.to_toml, tests/test_incremental.py), without writing and reading TOML: the
    store checked ids, roles and keys when they were registered."""
    registry = Registry()
    for customer in customers:
        registry.customers[customer.id] = Customer(customer.id, customer.household.strip(),
                                                   customer.age_group.strip())  # fmt: skip
    for device in devices:
        # an entrance lock serves the customers of the registry among its own (§3)
        served = tuple(c for c in device.customers if c in registry.customers)
        registry.devices[device.id] = Device(
            device.id, "" if device.building else device.customer, device.role,
            device.public_key, _date(device.installed, source, 0, "installed"),
            _date(device.revoked, source, 0, "revoked"), device.building,
            served if device.building else (),
        )  # fmt: skip
    for credential in credentials:
        phone = credential.kind == "phone" and len(credential.key_material) == 32
        registry.credentials[credential.id.lower()] = Credential(
            credential.id.lower(), credential.staff, credential.provider, credential.kind,
            _date(credential.revoked, source, 0, "revoked"),
            credential.key_material if phone else b"",
        )  # fmt: skip
    return registry


def _verdict_row(
    provider: str,
    month: str,
    finding: Finding,
    claim: Claim | None,
    profile: Profile,
    now: datetime,
) -> tuple[Any, ...]:
    """A finding with what the deviation queue shows and sorts by: the claim's activity, staff
    and times, and its nearest deadline as of the judgement (deadline_columns)."""
    row = (provider, month, finding.customer, finding.claim_id, finding.rule, finding.outcome,
           finding.payable_minutes, finding.why.stored())  # fmt: skip
    deadline = deadline_columns(profile, claim, month, now)
    if claim is None:
        return (*row, "", "", 0, 0, *deadline)
    return (*row, claim.activity, claim.staff, int(claim.start.timestamp() * 1000),
            int(claim.end.timestamp() * 1000), *deadline)  # fmt: skip


def deadline_columns(
    profile: Profile, claim: Claim | None, month: str, now: datetime
) -> tuple[str, int, int]:
    """A verdict's deadline_rule, deadline_at (Unix ms) and deadline_last: the claim's nearest
    deadline as of `now` and 1 when no later one follows it (then it stays when it passes)."""
    deadline = None if claim is None else nearest(profile, claim, month, now)
    if claim is None or deadline is None:
        return "", 0, 1
    last = max(d.moment for d in deadlines(profile, claim, month))
    return deadline.rule, int(deadline.moment.timestamp() * 1000), int(deadline.moment >= last)


def refresh_deadlines(store: Store, provider: str, months: list[str], now: datetime) -> int:
    """Move the stored deadlines of the provider's `months` on to `now`: a verdict whose stored
    deadline has passed and is not its claim's last gets its claim's nearest as of now (the
    claims as corrected), so that ordering by deadline_at orders by the deadline the queue
    shows. A verdict moves at most once per deadline its claim has; returns the claims moved.
    (A stored deadline still ahead is the nearest: the judgement took the earliest ahead then,
    and any change of the claim judges it again.)"""
    if not months:
        return 0
    now_ms = int(now.timestamp() * 1000)
    due = store.execute(
        "SELECT DISTINCT month, customer, claim_id FROM verdicts WHERE provider = ? "
        "AND deadline_last = 0 "
        f"AND deadline_at <= ? AND month IN ({', '.join('?' * len(months))})",
        (provider, now_ms, *months),
    )
    if not due:
        return 0
    profile = provider_profile(store, provider)
    by_month: dict[str, list[str]] = {}
    customer_of: dict[tuple[str, str], str] = {}
    for month, customer, claim_id in due:
        by_month.setdefault(str(month), []).append(str(claim_id))
        customer_of[(str(month), str(claim_id))] = str(customer)
    moved: list[tuple[Any, ...]] = []
    gone: list[tuple[Any, ...]] = []  # withdrawn since the judgement: keep what it showed
    for month, claim_ids in sorted(by_month.items()):
        rows = effective_rows(store, provider, month, None, sorted(claim_ids))
        claims = {c.claim_id: c for c in to_claims(rows, f"store claims of {provider} {month}")}
        for claim_id in sorted(claim_ids):
            claim = claims.get(claim_id)
            # the customer too: the (provider, month, customer) index finds the claim's few
            # rows, where provider and month alone walk the month's findings for each claim
            key = (provider, month, customer_of[(month, claim_id)], claim_id)
            if claim is None:
                gone.append(key)
            else:
                moved.append((*deadline_columns(profile, claim, month, now), *key))
    with store.transaction():
        for sql, rows_of in (
            ("UPDATE verdicts SET deadline_rule = ?, deadline_at = ?, deadline_last = ? "
             "WHERE provider = ? AND month = ? AND customer = ? AND claim_id = ?", moved),
            ("UPDATE verdicts SET deadline_last = 1 WHERE provider = ? AND month = ? "
             "AND customer = ? AND claim_id = ?", gone),
        ):  # fmt: skip
            if rows_of:
                store.executemany(sql, rows_of)
    return len(moved) + len(gone)


def _delete(store: Store, table: str, provider: str, month: str, customers: list[str] | None):
    sql = f"DELETE FROM {table} WHERE provider = ? AND month = ?"
    params: list[Any] = [provider, month]
    if customers is not None:
        sql += f" AND customer IN ({', '.join('?' * len(customers))})"
        params += customers
    store.execute(sql, tuple(params))


def judged_months(store: Store, provider: str) -> list[str]:
    rows = store.execute(
        "SELECT DISTINCT month FROM claims WHERE provider = ? ORDER BY month", (provider,)
    )
    return [str(row[0]) for row in rows]
