"""The verification API: a case bundle, a municipality's profile and a month in; findings out.

    from kvitto.verify.check import verify_case
    result = verify_case(Path("case/"), "norrtalje", "2026-10")
    print(result.as_json())       # FORMATS.md §4

Flow (DESIGN "Layout"): case bundle → evidence (verified, re-anchored, paired) → rules of the
profile → billing basis. Unusable input raises a KvittoError subclass naming file/line/field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kvitto.evidence.cose import EvidenceError
from kvitto.verify.case import ORDER_FIELDS, Case, CaseError, Claim
from kvitto.verify.case_read import read_case
from kvitto.verify.month import Month, default_jobs, judge_month, merge_verdicts, units_of
from kvitto.verify.reasons import DEFAULT, entry_dict
from kvitto.verify.rules import Finding, Profile, load_profile
from kvitto.verify.rules.absence import earlier_claims
from kvitto.verify.taps import TapKeys
from kvitto.verify.visits import (
    DEFAULT_MAX_SYNC_AGE_S,
    Evidence,
    Issue,
    build_evidence,
    read_decoded,
)
from kvitto.verify.workdays import month_bounds, parse_month


@dataclass
class Result:
    profile: str
    month: str
    findings: list[Finding]
    billing: list[dict[str, Any]]
    not_checked: list[dict[str, Any]] = field(default_factory=list)
    integrity: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    evidence: Evidence | None = None

    def as_dict(self, lang: str = DEFAULT) -> dict[str, Any]:
        """FORMATS.md §4; each reason in words in `lang`, with its code and parameters."""
        return {
            "profile": self.profile,
            "month": self.month,
            "findings": [f.as_dict(lang) for f in self.findings],
            "billing": self.billing,
            "not_checked": [entry_dict(entry, lang) for entry in self.not_checked],
            "integrity": self.integrity,
            "counts": self.counts,
        }

    def as_json(self, lang: str = DEFAULT) -> str:
        return json.dumps(self.as_dict(lang), ensure_ascii=False, indent=1)

    def findings_for(self, claim_id: str) -> list[Finding]:
        return [f for f in self.findings if f.claim_id == claim_id]


def claims_in_month(claims: list[Claim], year: int, month: int) -> list[Claim]:
    """Claims whose start falls in the month, Stockholm time (DST-aware month bounds)."""
    start, end = month_bounds(year, month)
    return [c for c in claims if start <= c.start < end]


def verify_loaded(
    case: Case,
    profile: Profile,
    month: str,
    evidence: Evidence | None = None,
    tap_keys: TapKeys | None = None,
    jobs: int | None = 1,
) -> Result:
    """The rules and billing over a loaded case; `jobs`: processes judging the month's units
    (None: every core). The result is the same for any number of jobs."""
    try:
        year, month_number = parse_month(month)
    except ValueError as error:
        raise CaseError(f"--month: {error}") from None
    max_sync_age = int(profile.rules.get("I5", {}).get("max_sync_age_s", DEFAULT_MAX_SYNC_AGE_S))
    if evidence is None:
        try:
            messages = read_decoded(case.evidence_path) if case.evidence_path else iter(())
            evidence = build_evidence(
                case.registry, messages, max_sync_age, tap_keys, _cores(jobs)
            )
        except EvidenceError as error:
            raise CaseError(str(error)) from None
    claims = claims_in_month(case.claims, year, month_number)
    for claim in claims:
        if claim.activity not in profile.activities:
            raise CaseError(
                f"{case.path / 'claims.csv'} line {claim.line}, field activity: "
                f"{claim.activity!r} is not an activity of profile {profile.name}"
            )
    for order in case.orders:
        if order.activity not in profile.activities:
            raise CaseError(
                f"{case.path / 'orders.csv'} line {order.line}, field activity: "
                f"{order.activity!r} is not an activity of profile {profile.name}"
            )
    # Judged unit by unit (kvitto.verify.month: a customer with its household and whoever T2
    # ties it to), over `jobs` processes; the merge is the same whatever the number of jobs.
    # the claims before the month its rules read (X6 counts an urgent need across the month)
    earlier = earlier_claims(profile, case.claims, year, month_number)
    units = units_of(case.registry, claims, case.orders, evidence, earlier)
    verdict = merge_verdicts(
        judge_month(Month(profile, year, month_number, case.registry), units, jobs)
    )
    findings, billing = verdict.findings, verdict.billing
    counts = dict(verdict.counts)
    counts["claims"] = len(claims)
    counts["claims_outside_month"] = len(case.claims) - len(claims)
    counts["events"] = evidence.events
    counts["open_visits"] = len(evidence.open_visits())
    unique_not_checked, seen = [], set()
    # RULES.md "not_checked": what the profile's document states and kvitto leaves to people
    # comes first, with its source; then what the rules could not check in this bundle.
    for entry in [*profile.not_checked, *verdict.not_checked]:
        key = tuple(sorted(entry.items()))
        if key not in seen:
            seen.add(key)
            unique_not_checked.append(entry)
    return Result(
        profile=profile.name,
        month=f"{year:04d}-{month_number:02d}",
        findings=findings,
        billing=billing,
        not_checked=unique_not_checked,
        integrity=[issue.as_dict() for issue in evidence.issues],
        counts=counts,
        claims=claims,
        evidence=evidence,
    )


def _cores(jobs: int | None) -> int:
    return default_jobs() if jobs is None else jobs


def _tap_keys(pki: Path | str | TapKeys | None) -> TapKeys | None:
    if pki is None or isinstance(pki, TapKeys):
        return pki
    return TapKeys.from_pki(pki)


def verify_case(
    path: Path | str,
    profile: str | Profile,
    month: str,
    pki: Path | str | TapKeys | None = None,
    jobs: int | None = 1,
) -> Result:
    """Verify one case bundle folder under a profile (name or Profile) for a month, judged
    over `jobs` processes (None: every core; the result is the same).

    `pki`: the organisation's `kvitto pki` folder (or its TapKeys), to check the SUN of NTAG 424
    badges that registry.toml carries no keys for; without it such taps are not checked."""
    from kvitto.verify.door_proofs import (
        DOOR_FILE,
        add_presences,
        check_door_file,
        door_presences,
    )

    loaded = profile if isinstance(profile, Profile) else load_profile(profile)
    case = read_case(Path(path))
    if not (case.path / DOOR_FILE).exists():
        return verify_loaded(case, loaded, month, tap_keys=_tap_keys(pki), jobs=jobs)
    # staff phones at the door (docs/formats.md, door.jsonl): the proofs that verify are
    # visits like a device's, the rest integrity issues
    door = check_door_file(case.path / DOOR_FILE, case.registry, case.claims)
    max_sync_age = int(loaded.rules.get("I5", {}).get("max_sync_age_s", DEFAULT_MAX_SYNC_AGE_S))
    try:
        messages = read_decoded(case.evidence_path) if case.evidence_path else iter(())
        evidence = build_evidence(
            case.registry, messages, max_sync_age, _tap_keys(pki), _cores(jobs)
        )
    except EvidenceError as error:
        raise CaseError(str(error)) from None
    add_presences(evidence, door_presences(door.verified, case.registry))
    result = verify_loaded(case, loaded, month, evidence, jobs=jobs)
    result.integrity += door.integrity
    result.not_checked += door.not_checked
    result.counts.update(door.counts)
    return result


def read_store_case(
    url: str,
    claims: Path | str,
    orders: Path | str | None = None,
    received_since: int | None = None,
    events: bool = True,
) -> tuple[Case, list[bytes], dict[tuple[str, int], tuple[int | None, int]]]:
    """A case from the collector's store (registry, orders, events) plus the provider's claims.

    The store is the collector's (kvitto.store.db / kvitto.store.registry); claims are the provider's
    file. Every stored event of the registered devices received from `received_since` (Unix
    ms; all when None) is re-verified like a bundle's; none are read when not `events`.
    """
    import csv
    import io

    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry as StoreRegistry
    from kvitto.verify.case import parse_registry
    from kvitto.verify.case_csv import parse_claims, parse_orders

    store = open_store(url, migrate=False, create=False)
    try:
        stored = StoreRegistry(store)
        registry = parse_registry(stored.to_toml(), f"{url} registry")
        if orders is not None:
            order_rows = parse_orders(Path(orders).read_text(encoding="utf-8-sig"), str(orders))
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(ORDER_HEADER)
            for order in stored.orders():
                writer.writerow(
                    [order.customer, order.activity, order.granted_minutes_month,
                     order.valid_from, order.valid_to or "", int(bool(order.double_staffing)),
                     int(bool(order.tag_exempt))]
                )  # fmt: skip
            order_rows = parse_orders(buffer.getvalue(), f"{url} orders")
        # (device, seq, type, t, received_at, chain, message)
        rows = store.events(received_since=received_since) if events else []
        messages = [bytes(row[6]) for row in rows]
        received = {(row[0], row[1]): (row[3], row[4]) for row in rows}
    finally:
        store.close()
    claims_path = Path(claims)
    try:
        claim_text = claims_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CaseError(f"{claims_path}: no such claims file") from None
    case = Case(
        path=claims_path.parent,
        registry=registry,
        orders=order_rows,
        claims=parse_claims(claim_text, str(claims_path)),
        evidence_path=None,
    )
    return case, messages, received


def clock_ahead_issues(
    received: dict[tuple[str, int], tuple[int | None, int]], tolerance_s: int
) -> list[Issue]:
    """I5 with the collector's receive time: an event cannot be received before it happened.

    (Received long after is normal: devices journal through outages and resend.)"""
    issues = []
    for (device, seq), (t, received_at) in sorted(received.items()):
        if t is not None and t * 1000 > received_at + tolerance_s * 1000:
            ahead = (t * 1000 - received_at) // 1000
            issues.append(
                Issue("I5", device, seq, f"device time {ahead} s ahead of the collector's receipt")
            )
    return issues


def revoked_arrival_issues(
    url: str, received: dict[tuple[str, int], tuple[int | None, int]]
) -> list[Issue]:
    """I1 marks on events that reached the collector after their device was revoked. They are
    stored only if dated before the revocation and within the sequence the device had reached
    then (kvitto.collect.intake): genuine offline evidence, or a stolen key that reused the
    range. The verdict names each one, so a reader can check it against the device's journal."""
    import datetime as dt

    from kvitto.store.db import open_store
    from kvitto.store.migrations import REVOCATIONS_SINCE

    with open_store(url, migrate=False, create=False) as store:
        done = store.execute(
            "SELECT 1 FROM schema_version WHERE version = ?", (REVOCATIONS_SINCE,)
        )
        revocations = store.revocations() if done else {}
    issues = []
    for (device, seq), (_, received_at) in sorted(received.items()):
        revocation = revocations.get(device)
        if revocation is None or received_at <= revocation[0]:
            continue
        recorded_at, last_seq, backlog = revocation
        when = dt.datetime.fromtimestamp(recorded_at / 1000, dt.timezone.utc)
        reach = f"#{last_seq}" + (f" + backlog {backlog}" if backlog else "")
        issues.append(
            Issue(
                "I1", device, seq,
                f"received after the device was revoked ({when:%Y-%m-%d %H:%M}Z); accepted as "
                f"within the sequence it had reached then ({reach})",
            )
        )  # fmt: skip
    return issues


ORDER_HEADER = (
    ORDER_FIELDS  # orders.csv's columns (FORMATS.md §3), as kvitto.verify.case reads them
)


# An event is received after it happens (rule I5 reports clocks ahead of that), so a month's
# evidence was received from the month's first day on. The margin keeps a visit begun the night
# before, a boot's clock sync journaled days earlier, and clocks a little ahead; everything
# older is history that a month's verification need not re-verify year after year.
STORE_WINDOW_MARGIN = timedelta(days=7)


def _window_start_ms(month: str) -> int | None:
    try:
        start, _ = month_bounds(*parse_month(month))
    except ValueError:
        return None  # verify_loaded names the bad month
    return int((start - STORE_WINDOW_MARGIN).timestamp() * 1000)


def verify_store(
    url: str,
    claims: Path | str,
    profile: str | Profile,
    month: str,
    orders: Path | str | None = None,
    pki: Path | str | TapKeys | None = None,
    jobs: int | None = 1,
) -> Result:
    """verify_case for evidence held in a store (sqlite:///… or postgresql://…)."""
    loaded = profile if isinstance(profile, Profile) else load_profile(profile)
    case, messages, received = read_store_case(url, claims, orders, _window_start_ms(month))
    max_sync_age = int(loaded.rules.get("I5", {}).get("max_sync_age_s", DEFAULT_MAX_SYNC_AGE_S))
    evidence = build_evidence(case.registry, messages, max_sync_age, _tap_keys(pki), _cores(jobs))
    tolerance = int(loaded.rules.get("I5", {}).get("receive_tolerance_s", 300))
    evidence.issues.extend(clock_ahead_issues(received, tolerance))
    evidence.issues.extend(revoked_arrival_issues(url, received))
    result = verify_loaded(case, loaded, month, evidence, jobs=jobs)
    result.not_checked = [e for e in result.not_checked if not (
        e["rule"] == "I5" and getattr(e["reason"], "code", "") == "I5.no_receive_times")]  # fmt: skip
    return result
