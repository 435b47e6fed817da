"""People's actions as records: append-only, hash-chained like a device's events.

    record = append(store, chain="p-1", actor="samordnare-p1", kind="correct", at=now_ms,
                    provider="p-1", customer="c-1001", claim_id="k-08", month="2026-11",
                    body={"reason_code": "glomt-tagga", "text": "…", "before": {…}, "after": {…}})
    problems = verify_chain(records(store, chains=["p-1"]))   # [] when the chain is whole

Each chain (a provider's, a municipality's `m:NAME`, the admins' `admin`) numbers its records
from 1; `hash` = SHA-256(prev ‖ canonical JSON of the record without its hashes), `prev` the
hash before it (32 zero bytes for the first), as FORMATS.md §1 chains a device's payloads.
Nothing here updates or deletes a row: a correction is a new record on top of the claim.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kvitto.store import stale
from kvitto.store.db import Store
from kvitto.verify.rules import ProfileError, load_profile
from kvitto.verify.rules.absence import look_back_days

KINDS = (
    "login", "logout", "login_failed", "explain", "correct", "register", "withdraw",
    "attest", "decide", "export", "user_add", "lock_window",
)  # fmt: skip
CLAIM_KINDS = ("explain", "correct", "register", "withdraw")
ZERO = bytes(32)


@dataclass(frozen=True)
class Record:
    chain: str
    seq: int
    at: int  # Unix milliseconds
    actor: str
    kind: str
    provider: str = ""
    municipality: str = ""
    customer: str = ""
    claim_id: str = ""
    month: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    prev: bytes = ZERO
    hash: bytes = ZERO

    def content(self) -> bytes:
        """The bytes the hash covers: every field but the hashes, as canonical JSON."""
        fields = {
            "chain": self.chain, "seq": self.seq, "at": self.at, "actor": self.actor,
            "kind": self.kind, "provider": self.provider, "municipality": self.municipality,
            "customer": self.customer, "claim_id": self.claim_id, "month": self.month,
            "body": self.body,
        }  # fmt: skip
        return json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain, "seq": self.seq, "at": self.at, "actor": self.actor,
            "kind": self.kind, "provider": self.provider, "municipality": self.municipality,
            "customer": self.customer, "claim_id": self.claim_id, "month": self.month,
            "body": self.body, "prev": self.prev.hex(), "hash": self.hash.hex(),
        }  # fmt: skip


def chain_hash(prev: bytes, record: Record) -> bytes:
    return hashlib.sha256(prev + record.content()).digest()


def append(
    store: Store,
    *,
    chain: str,
    actor: str,
    kind: str,
    at: int,
    body: dict[str, Any] | None = None,
    provider: str = "",
    municipality: str = "",
    customer: str = "",
    claim_id: str = "",
    month: str = "",
) -> Record:
    """Add one record at the end of its chain (serialised per chain by the transaction)."""
    if kind not in KINDS:
        raise ValueError(f"record kind {kind!r}")
    with store.transaction():
        if store.dialect == "postgresql":
            # Two writers on one chain: the second waits for the first's seq and hash.
            store.execute("SELECT pg_advisory_xact_lock(7462002, hashtext(?))", (chain,))
        rows = store.execute(
            "SELECT seq, hash FROM records WHERE chain = ? ORDER BY seq DESC LIMIT 1", (chain,)
        )
        seq, prev = (int(rows[0][0]) + 1, bytes(rows[0][1])) if rows else (1, ZERO)
        draft = Record(chain, seq, at, actor, kind, provider, municipality, customer, claim_id,
                       month, body or {}, prev)  # fmt: skip
        record = Record(**{**draft.__dict__, "hash": chain_hash(prev, draft)})
        store.execute(
            "INSERT INTO records (chain, seq, at, actor, kind, provider, municipality, customer, "
            "claim_id, month, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (chain, seq, at, actor, kind, provider, municipality, customer, claim_id, month,
             json.dumps(record.body, sort_keys=True, ensure_ascii=False), prev, record.hash),
        )  # fmt: skip
        _mark(store, record)
    return record


def _mark(store: Store, record: Record) -> None:
    """A record that changes claims or their outcome marks its customer-month stale
    (kvitto.store.stale): an attestation every customer of the provider's month."""
    day = stale.local_day(datetime.fromtimestamp(record.at / 1000, timezone.utc))
    if record.kind == "attest" and record.provider and record.month:
        stale.touch_provider_month(store, record.provider, record.month, day)
    elif record.kind in (*CLAIM_KINDS, "decide") and record.customer and record.month:
        marks = [(record.customer, record.month, day)]
        if record.kind in CLAIM_KINDS and _reads_month_before(store, record.provider):
            # the next month's X6 counts this month's urgent claims (the record may change one)
            marks.append((record.customer, stale.month_after(record.month), day))
        stale.touch(store, marks, claims=True)


def _reads_month_before(store: Store, provider: str) -> bool:
    """The provider's profile has a rule that reads claims before its month (X6)."""
    rows = store.execute("SELECT municipality FROM providers WHERE id = ?", (provider,))
    return bool(rows) and _looks_back(str(rows[0][0]))


@functools.cache
def _looks_back(municipality: str) -> bool:
    try:
        return look_back_days(load_profile(municipality)) > 0
    except ProfileError:
        return False


_COLUMNS = "chain, seq, at, actor, kind, provider, municipality, customer, claim_id, month, body, prev, hash"


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        str(row[0]), int(row[1]), int(row[2]), row[3], row[4], row[5], row[6], row[7],
        row[8], row[9], json.loads(row[10]), bytes(row[11]), bytes(row[12]),
    )  # fmt: skip


def records(
    store: Store,
    *,
    chains: list[str] | None = None,
    provider: str | None = None,
    month: str | None = None,
    customers: list[str] | None = None,
    kinds: tuple[str, ...] | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Record]:
    """Records matching every filter given, in chain order (or newest first)."""
    conditions: list[str] = []
    params: list[Any] = []
    if chains is not None:
        if not chains:
            return []
        conditions.append(f"chain IN ({', '.join('?' * len(chains))})")
        params += chains
    if provider is not None:
        conditions.append("provider = ?")
        params.append(provider)
    if month is not None:
        conditions.append("month = ?")
        params.append(month)
    if customers is not None:
        if not customers:
            return []
        conditions.append(f"customer IN ({', '.join('?' * len(customers))})")
        params += customers
    if kinds is not None:
        conditions.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params += kinds
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    order = " ORDER BY at DESC, chain, seq DESC" if newest_first else " ORDER BY chain, seq"
    tail = f" LIMIT {int(limit)}" if limit else ""
    rows = store.execute(f"SELECT {_COLUMNS} FROM records{where}{order}{tail}", tuple(params))
    return [_record(row) for row in rows]


def verify_chain(chain_records: list[Record]) -> list[str]:
    """What is wrong with whole chains (each record's hash, seq and link to the one before);
    [] when every chain given is complete from seq 1 and unaltered."""
    problems: list[str] = []
    by_chain: dict[str, list[Record]] = {}
    for record in chain_records:
        by_chain.setdefault(record.chain, []).append(record)
    for chain, items in by_chain.items():
        items.sort(key=lambda r: r.seq)
        prev = ZERO
        for expected, record in enumerate(items, start=1):
            if record.seq != expected:
                problems.append(f"{chain}: record {expected} missing (next is {record.seq})")
                break
            if record.prev != prev:
                problems.append(f"{chain} #{record.seq}: prev does not match the record before")
            if chain_hash(record.prev, record) != record.hash:
                problems.append(f"{chain} #{record.seq}: hash does not match its content")
            prev = record.hash
    return problems
