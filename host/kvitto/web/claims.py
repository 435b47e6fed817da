"""A provider's claims in the store: imported once, then seen through people's records.

    count = import_claims(store, "p-1", Path("claims.csv"), profile)   # CaseError names line/field
    rows = effective_claims(store, "p-1", "2026-11", customers=["c-1001"])   # as corrected

The imported rows (FORMATS.md §3 claims.csv) are never changed. What the rules see is each row
with the records on top, in chain order: `explain` sets the claim's reason code; `correct`
replaces fields and stamps `adjusted_at` with the correction's time (so D2, D3 and D5 judge the
correction's time, not the visit's); `register` adds an after-the-fact claim registered
manually at the record's time (D1); `withdraw` takes the claim out; `attest` approves the
month's claims that had no approval at the attestation's time (D4).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kvitto.store import stale
from kvitto.store.db import Store
from kvitto.verify.case import CLAIM_FIELDS, CaseError, Claim, parse_time
from kvitto.verify.case_csv import claims_from_rows, parse_claims
from kvitto.verify.rules import Profile
from kvitto.verify.rules.absence import reaches_next_month
from kvitto.verify.workdays import local
from kvitto.web.personnummer import find_personnummer
from kvitto.web.records import Record

# Fields a correction may change (the rest identify the claim or record how it was made).
CORRECTABLE = ("activity", "start", "end", "double_staffing", "count")


def month_of(moment: datetime) -> str:
    return f"{local(moment):%Y-%m}"


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 with offset, Stockholm time (claims.csv style)."""
    return local(datetime.fromtimestamp(ms / 1000, timezone.utc)).isoformat(timespec="seconds")


def _csv_text(rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, list[str](CLAIM_FIELDS), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def import_claims(
    store: Store, provider: str, path: Path, profile: Profile, now_ms: int = 0
) -> int:
    """Store a provider's claims.csv; a claim id already stored for the provider is refused
    (a change is a correction, made in `kvitto serve`). All or nothing."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CaseError(f"{path}: {error.strerror or error}") from None
    claims = parse_claims(text, str(path))
    raw = list(csv.DictReader(io.StringIO(text)))
    known = {
        row[0] for row in store.execute("SELECT id FROM customers")
    }  # the registry's customers
    for claim, row in zip(claims, raw):
        where = f"{path} line {claim.line}"
        if claim.activity not in profile.activities:
            raise CaseError(
                f"{where}, field activity: {claim.activity!r} is not an activity of "
                f"profile {profile.name}"
            )
        if claim.customer not in known:
            raise CaseError(f"{where}, field customer: {claim.customer!r} is not in the registry")
        for name in ("reason", "claim_id", "staff"):
            if find_personnummer(row.get(name) or ""):
                raise CaseError(f"{where}, field {name}: a personal identity number")
    with store.transaction():
        for claim, row in zip(claims, raw):
            if store.execute(
                "SELECT 1 FROM claims WHERE provider = ? AND claim_id = ?",
                (provider, claim.claim_id),
            ):
                raise CaseError(
                    f"{path} line {claim.line}, field claim_id: {claim.claim_id!r} is stored "
                    "already; correct it in kvitto serve instead"
                )
            fields = {name: (row.get(name) or "") for name in CLAIM_FIELDS}
            store.execute(
                "INSERT INTO claims (provider, claim_id, customer, month, start_at, end_at, "
                "via, fields, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (provider, claim.claim_id, claim.customer, month_of(claim.start),
                 int(claim.start.timestamp() * 1000), int(claim.end.timestamp() * 1000),
                 claim.registered_via, json.dumps(fields, ensure_ascii=False), now_ms),
            )  # fmt: skip
        per_month: dict[str, list[int]] = {}
        for claim in claims:
            counts = per_month.setdefault(month_of(claim.start), [0, 0])
            counts[0] += 1
            counts[1] += claim.registered_via == "manual"
        for month, (count, manual) in per_month.items():
            add_counts(store, provider, month, count, manual)
        # new claims: their customer-months are judged again (kvitto.store.stale)
        marks = [(c.customer, month_of(c.start), stale.local_day(c.start)) for c in claims]
        # and the next month of an urgent claim its X6 reads (the need counted across months)
        marks += [(c.customer, stale.month_after(month_of(c.start)), stale.local_day(c.start))
                  for c in claims if reaches_next_month(profile, c)]  # fmt: skip
        stale.touch(store, marks, claims=True)
    return len(claims)


def add_counts(store: Store, provider: str, month: str, claims: int, manual: int) -> None:
    """Count imported claims (and the manual ones among them) per provider and month."""
    store.execute(
        "INSERT INTO claim_counts (provider, month, claims, manual) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (provider, month) DO UPDATE SET claims = claim_counts.claims + "
        "excluded.claims, manual = claim_counts.manual + excluded.manual",
        (provider, month, claims, manual),
    )


def stored_rows(
    store: Store,
    provider: str,
    month: str,
    customers: list[str] | None = None,
    claim_ids: list[str] | None = None,
) -> dict[str, dict[str, str]]:
    """claim_id → the imported claims.csv fields, in import order (of `customers`' claims, or
    only `claim_ids`, when given)."""
    if claim_ids is not None:
        # a claim id is the provider's own: look it up by the primary key (a month condition
        # would let the planner walk the month's million claims instead)
        sql = "SELECT claim_id, fields, month FROM claims WHERE provider = ?"
        params: list[Any] = [provider]
    else:
        sql = "SELECT claim_id, fields, month FROM claims WHERE provider = ? AND month = ?"
        params = [provider, month]
    for column, values in (("customer", customers), ("claim_id", claim_ids)):
        if values is None:
            continue
        if not values:
            return {}
        sql += f" AND {column} IN ({', '.join('?' * len(values))})"
        params += values
    rows = store.execute(sql + " ORDER BY imported_at, start_at, claim_id", tuple(params))
    return {str(row[0]): json.loads(row[1]) for row in rows if row[2] == month}


def apply_records(
    originals: dict[str, dict[str, str]], month_records: list[Record]
) -> dict[str, dict[str, str]]:
    """The claims.csv rows as the records make them (see the module docstring)."""
    rows = {claim_id: dict(fields) for claim_id, fields in originals.items()}
    for record in sorted(month_records, key=lambda r: (r.at, r.chain, r.seq)):
        body = record.body
        if record.kind == "register" and record.claim_id not in rows:
            row = {name: "" for name in CLAIM_FIELDS}
            row.update({k: str(v) for k, v in body.get("after", {}).items()})
            # at the door by a phone (kvitto.web.door: body["via"] = "door", the door proofs
            # in body["proofs"]) the claim was registered by a tap; otherwise after the fact
            via = "tag" if body.get("via") == "door" else "manual"
            row.update(claim_id=record.claim_id, customer=record.customer,
                       registered_via=via, registered_at=iso(record.at),
                       reason=body.get("reason_code", ""))  # fmt: skip
            rows[record.claim_id] = row
            continue
        if record.kind == "attest":
            for row in rows.values():
                if not row.get("approved_at"):
                    row["approved_at"] = iso(record.at)
            continue
        row = rows.get(record.claim_id)
        if row is None:
            continue
        if record.kind == "explain":
            row["reason"] = body.get("reason_code", "")
        elif record.kind == "correct":
            for name, value in body.get("after", {}).items():
                if name in CORRECTABLE:
                    row[name] = str(value)
            row["adjusted_at"] = iso(record.at)
            if body.get("reason_code"):
                row["reason"] = body["reason_code"]
        elif record.kind == "withdraw":
            rows.pop(record.claim_id)
    return rows


def to_claims(rows: dict[str, dict[str, str]], source: str) -> list[Claim]:
    """Parse effective rows with the case bundle's own checks (kvitto.verify.case_csv), field
    by field as claims.csv would hold them (line 2 on), without writing and reading CSV."""
    numbered = []
    for line, row in enumerate(rows.values(), start=2):
        try:
            # a stored row has every field as text: read as it is (extra fields unread)
            text = "".join(map(row.__getitem__, CLAIM_FIELDS))
        except (KeyError, TypeError):
            row = {name: _cell(row.get(name)) for name in CLAIM_FIELDS}
            text = "".join(row.values())
        if text.strip():  # a row of blanks is skipped, as csv reading skips a blank line
            numbered.append((line, row))
    return claims_from_rows(numbered, source)


def _cell(value: Any) -> str:
    """A field's text as csv.DictWriter writes it (None empty)."""
    return "" if value is None else str(value)


def claims_csv(rows: dict[str, dict[str, str]]) -> str:
    return _csv_text(rows.values())


def check_times(start: str, end: str) -> tuple[datetime, datetime]:
    """A correction's new start and end; CaseError with the field when unusable."""
    try:
        begins = parse_time(start)
    except ValueError:
        raise CaseError("start: not a time (YYYY-MM-DDTHH:MM)") from None
    try:
        ends = parse_time(end)
    except ValueError:
        raise CaseError("end: not a time (YYYY-MM-DDTHH:MM)") from None
    if ends < begins:
        raise CaseError("end: before start")
    return begins, ends
