"""`kvitto verify` from a store, reusing the findings it kept: only changed customer-months are
judged again.

    result, judged = verify_store_kept(url, "claims.csv", "huddinge", "2026-11")
    result, judged = verify_store_kept(url, "claims.csv", "huddinge", "2026-11", rebuild=True)

Per customer-month the store keeps (kvitto.store.stale, scope "verify:" and the profile) the
findings, billing rows and integrity issues of the last run, the touched version it read and a
digest of the customer's inputs from outside the store (its claims in the file, its orders,
its household). A customer is judged again when the store's marks are ahead (new events) or
the digest differs (claims or orders changed), together with what that reaches
(kvitto.verify.incremental.Reach). The findings equal those of a full run (findings_digest);
`not_checked` and `counts` are the last full run's, with what the customers judged again add.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvitto.evidence.cose import EvidenceError
from kvitto.store import stale
from kvitto.store.db import open_store
from kvitto.verify.case import Case, CaseError, Claim
from kvitto.verify.check import (
    Result,
    _tap_keys,
    _window_start_ms,
    claims_in_month,
    clock_ahead_issues,
    read_store_case,
    revoked_arrival_issues,
    verify_loaded,
    verify_store,
)
from kvitto.verify.incremental import Reach, finding_data, finding_from, staff_by_customer
from kvitto.verify.reasons import Reason
from kvitto.verify.rules import Profile, load_profile
from kvitto.verify.rules.absence import earlier_claims
from kvitto.verify.taps import TapKeys
from kvitto.verify.visits import DEFAULT_MAX_SYNC_AGE_S, build_evidence
from kvitto.verify.workdays import parse_month

NO_CUSTOMER = ""  # integrity issues of devices the registry does not know


def verify_store_kept(
    url: str,
    claims: Path | str,
    profile: str | Profile,
    month: str,
    orders: Path | str | None = None,
    pki: Path | str | TapKeys | None = None,
    rebuild: bool = False,
) -> tuple[Result, list[str]]:
    """verify_store, judging again only the customers changed since the last run (all with
    `rebuild`); returns the result and the customers judged in this run."""
    loaded = profile if isinstance(profile, Profile) else load_profile(profile)
    scope = f"verify:{loaded.name}" + (":pki" if pki is not None else "")
    case, _, _ = read_store_case(url, claims, orders, events=False)
    try:
        year, month_number = parse_month(month)
    except ValueError as error:
        raise CaseError(f"--month: {error}") from None
    month_claims = claims_in_month(case.claims, year, month_number)
    customers = sorted(
        {*case.registry.customers, *(c.customer for c in month_claims),
         *(o.customer for o in case.orders)}
    )  # fmt: skip
    # the claims before the month its rules read (X6): a change to them makes the verdict stale
    earlier = earlier_claims(loaded, case.claims, year, month_number)
    inputs = _digests(case, month_claims, customers, earlier)
    with open_store(url, create=False) as store:
        kept = {} if rebuild else stale.kept(store, scope, month)
        touched = stale.versions(store, month)
    changed: dict[str, stale.Change] = {}
    for customer in [*customers, NO_CUSTOMER]:
        entry = kept.get(customer)
        version = touched.get(customer, 0)
        if entry is None or entry["findings"] is None or entry["inputs"] != inputs.get(customer):
            changed[customer] = stale.Change(version, True)
        elif version > entry["version"]:
            changed[customer] = stale.Change(version, False)
    if NO_CUSTOMER in changed or len(changed) > len(customers) // 2:
        # a full run is cheaper than reaches that cover the month (and the first run is one)
        result = verify_store(url, claims, loaded, month, orders, pki)
        result.integrity.sort(key=_issue_order)
        judged = customers
        evidence_of = None
    elif not changed:
        result = Result(loaded.name, month, [], [], claims=month_claims)
        judged, evidence_of = [], set()
    else:
        reach = _reach(case, month_claims, changed, kept)
        judged = sorted(reach.judged)
        evidence_of = set(reach.evidence)
        result = _judge_part(url, case, loaded, month, [*earlier, *month_claims], reach, pki)
    parts = _split(case, result, judged)
    if evidence_of is None:
        # what a full run says of the month as a whole, for the runs that reuse it
        parts[NO_CUSTOMER] = {**parts.get(NO_CUSTOMER, _nothing()),
                              "not_checked": [_entry_out(e) for e in result.not_checked],
                              "counts": result.counts}  # fmt: skip
        judged_now = [*judged, NO_CUSTOMER]
    else:
        judged_now = judged
    staff = staff_by_customer(c for c in month_claims if c.customer in set(judged_now))
    with open_store(url, create=False) as store:
        stale.keep(
            store, scope, month,
            {c: (changed[c].version if c in changed else kept.get(c, {}).get("version", 0),
                 staff.get(c, []), inputs.get(c, ""), parts.get(c, _nothing()))
             for c in judged_now},
            replace_all=evidence_of is None,
        )  # fmt: skip
    merged = {c: entry["findings"] for c, entry in kept.items() if entry["findings"] is not None}
    merged.update({c: parts.get(c, _nothing()) for c in judged_now})
    return _merge(result, month_claims, merged), judged


def _nothing() -> dict[str, Any]:
    return {"findings": [], "billing": [], "integrity": []}


def _digests(
    case: Case, month_claims: list[Claim], customers: list[str], earlier: list[Claim]
) -> dict[str, str]:
    """customer → SHA-256 of what it is judged from outside the store's events: its claims of
    the month, those before it the month's rules read (Facts.earlier), its orders."""
    parts: dict[str, list[Any]] = {c: [] for c in customers}
    for claim in month_claims:
        parts.setdefault(claim.customer, []).append(["claim", repr(claim)])
    for claim in earlier:
        parts.setdefault(claim.customer, []).append(["earlier", repr(claim)])
    for order in case.orders:
        parts.setdefault(order.customer, []).append(["order", repr(order)])
    out = {}
    for customer, items in parts.items():
        known = customer in case.registry.customers
        household = case.registry.household_of(customer) if known else ""
        text = json.dumps([household, items], ensure_ascii=False)
        out[customer] = hashlib.sha256(text.encode()).hexdigest()
    out[NO_CUSTOMER] = ""
    return out


def _reach(
    case: Case, month_claims: list[Claim], changed: dict[str, stale.Change], kept: dict[str, Any]
) -> Reach:
    members: dict[str, set[str]] = {}
    for customer in case.registry.customers:
        home = case.registry.household_of(customer)
        if home:
            members.setdefault(home, set()).add(customer)
    by_staff: dict[str, set[str]] = {}
    for claim in month_claims:
        if claim.staff:
            by_staff.setdefault(claim.staff, set()).add(claim.customer)
    kept_staff = {c: entry["staff"] for c, entry in kept.items()}
    for customer, names in kept_staff.items():
        for name in names:
            by_staff.setdefault(name, set()).add(customer)

    def household(customers: Any) -> set[str]:
        found = set()
        for customer in customers:
            found.add(customer)
            if customer in case.registry.customers:
                found |= members.get(case.registry.household_of(customer), set())
        return found

    def staff_customers(staff: Any) -> set[str]:
        return {c for name in staff for c in by_staff.get(name, ())}

    claims_changed = {c for c, change in changed.items() if change.claims}
    return Reach.of(changed, claims_changed, month_claims, household, staff_customers,
                    kept_staff)  # fmt: skip


def _judge_part(
    url: str,
    case: Case,
    profile: Profile,
    month: str,
    claims: list[Claim],
    reach: Reach,
    pki: Path | str | TapKeys | None,
) -> Result:
    """verify_store over the reach's context: its claims (of the month and those before it
    the month's rules read), its evidence's devices' events."""
    context = set(reach.context)
    devices = [d for d in case.registry.devices.values() if d.customer in reach.evidence]
    messages: list[bytes] = []
    received: dict[tuple[str, int], tuple[int | None, int]] = {}
    with open_store(url, create=False) as store:
        for device in sorted(devices, key=lambda d: d.id):
            for row in store.events(device=device.id, received_since=_window_start_ms(month)):
                messages.append(bytes(row[6]))
                received[(row[0], row[1])] = (row[3], row[4])
    i5 = profile.rules.get("I5", {})
    try:
        evidence = build_evidence(case.registry, messages,
                                  int(i5.get("max_sync_age_s", DEFAULT_MAX_SYNC_AGE_S)),
                                  _tap_keys(pki))  # fmt: skip
    except EvidenceError as error:
        raise CaseError(str(error)) from None
    evidence.issues.extend(clock_ahead_issues(received, int(i5.get("receive_tolerance_s", 300))))
    evidence.issues.extend(revoked_arrival_issues(url, received))
    part = replace(
        case,
        claims=[c for c in claims if c.customer in context],
        orders=[o for o in case.orders if o.customer in context],
    )
    result = verify_loaded(part, profile, month, evidence)
    result.not_checked = [e for e in result.not_checked if not (
        e["rule"] == "I5" and getattr(e["reason"], "code", "") == "I5.no_receive_times")]  # fmt: skip
    return result


def _split(case: Case, result: Result, judged: list[str]) -> dict[str, dict[str, Any]]:
    """The result's findings, billing rows and integrity issues of the `judged` customers."""
    wanted = set(judged)
    parts: dict[str, dict[str, Any]] = {}

    def part(customer: str) -> dict[str, Any]:
        return parts.setdefault(customer, _nothing())

    for finding in result.findings:
        if finding.customer in wanted:
            part(finding.customer)["findings"].append(finding_data(finding))
    for row in result.billing:
        if row["customer"] in wanted:
            part(row["customer"])["billing"].append(row)
    for issue in result.integrity:
        device = case.registry.devices.get(str(issue.get("device", "")))
        owner = device.customer if device is not None else NO_CUSTOMER
        if owner in wanted or owner == NO_CUSTOMER:
            part(owner)["integrity"].append(issue)
    return parts


def _merge(result: Result, month_claims: list[Claim], kept: dict[str, Any]) -> Result:
    """The month's result: kept parts of every customer (the judged ones just written)."""
    order = {c.claim_id: index for index, c in enumerate(month_claims)}
    findings = [finding_from(f) for part in kept.values() for f in part["findings"]]
    findings.sort(key=lambda f: (order.get(f.claim_id, len(month_claims)), f.rule))
    billing = sorted((row for part in kept.values() for row in part["billing"]),
                     key=lambda row: (row["customer"], row["category"]))  # fmt: skip
    integrity = sorted((issue for part in kept.values() for issue in part["integrity"]),
                       key=_issue_order)  # fmt: skip
    month_part = kept.get(NO_CUSTOMER, {})
    # the month as a whole as the last full run saw it, with what this run's part adds
    not_checked, seen = [], set()
    for entry in [*map(_entry_in, month_part.get("not_checked", [])), *result.not_checked]:
        key = json.dumps(_entry_out(entry), sort_keys=True)
        if key not in seen:
            seen.add(key)
            not_checked.append(entry)
    counts = {**month_part.get("counts", {}), "claims": len(month_claims)}
    return replace(result, findings=findings, billing=billing, integrity=integrity,
                   not_checked=not_checked, counts=counts, claims=month_claims)  # fmt: skip


def _entry_out(entry: dict[str, Any]) -> dict[str, Any]:
    """A not_checked entry as JSON (a rule's Reason as its code and parameters)."""
    reason = entry.get("reason")
    if isinstance(reason, Reason):
        return {**entry, "reason": reason.as_json(), "reason_is_code": True}
    return entry


def _entry_in(entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("reason_is_code"):
        out = {k: v for k, v in entry.items() if k != "reason_is_code"}
        return {**out, "reason": Reason.from_json(entry["reason"])}
    return entry


def _issue_order(issue: dict[str, Any]) -> tuple[str, int, str, str]:
    return (str(issue.get("device", "")), int(issue.get("seq") or 0), str(issue.get("rule")),
            str(issue.get("reason")))  # fmt: skip
