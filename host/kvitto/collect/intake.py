"""The intake: signed messages verified, stored once, their chain checked, the rest quarantined.

Shared by the MQTT collector and `kvitto ingest` (offline evidence as a CBOR sequence or
JSONL). Verification runs in worker processes when there are several; each (device, seq) is
stored once (primary key), gaps are found for resend requests (RULES.md I3, I4).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from kvitto.collect.alarm_access import grant_alarms
from kvitto.errors import KvittoError
from kvitto.evidence.cose import (
    STORED_UINT_MAX,
    BadSignature,
    EvidenceError,
    MalformedMessage,
    read_messages,
    split_sign1,
)
from kvitto.evidence.events import Event, EventVerifier, verify_event
from kvitto.store import stale
from kvitto.store.db import EventRow, QuarantineRow, Store
from kvitto.store.registry import Registry

ZERO_HASH = bytes(32)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- verification (runs in worker processes when there are several) ----------------------


# One per thread, kept across its batches: each device's key object and Sig_structure prefix
# are made once, not once per batch (a batch of a large fleet has a different device in nearly
# every event). EventVerifier.use checks each against the batch's keys.
_verifiers = threading.local()


def verify_batch(
    items: Sequence[tuple[bytes, str | None]], keys: dict[str, bytes]
) -> list[tuple[Any, ...]]:
    """Verify messages; keys maps device id -> public key for the devices the batch claims.

    Each item is (message, device named by the topic or None). Each result is
    ("ok", dev, seq, boot, up, t, sync, type, cred, payload_hash, prev) or
    ("reject", "code: detail", claimed device or None, seq or None), code one of malformed,
    topic-mismatch, unknown-device, bad-signature, bad-payload. Plain tuples: cheap to pickle.
    """
    # The fused common case (evidence.EventVerifier: an Event only where verify_event gives
    # the same one, so kid = payload device and the key is the kid's); everything it leaves
    # undecided takes _verify_one, which names the reason.
    fast = getattr(_verifiers, "verifier", None)
    if fast is None:
        fast = _verifiers.verifier = EventVerifier(keys.get)
    fast.use(keys.get)
    results: list[tuple[Any, ...]] = []
    for message, topic_device in items:
        try:
            event = fast.event(message)
            if event is not None and (topic_device is None or event.dev == topic_device):
                results.append(_accepted(event))
            else:
                results.append(_verify_one(message, topic_device, keys))
        except Exception as error:  # no message may stop the collector: it is quarantined
            results.append(("reject", _error_reason(error), topic_device, None))
    return results


def _error_reason(error: BaseException) -> str:
    """The quarantine reason for a message whose handling raised what no check foresaw."""
    return f"error: {type(error).__name__}: {str(error)[:200]}"


def _verify_one(message: bytes, topic_device: str | None, keys: dict[str, bytes]) -> tuple:
    topic_key = keys.get(topic_device) if topic_device is not None else None
    if topic_key is not None:
        # The usual case: one decode and one signature check under the topic's device key
        # (verify_event checks kid == payload device). Anything else takes the slow path
        # below, which names the precise reason.
        try:
            event = verify_event(message, topic_key)
        except EvidenceError:
            pass
        else:
            if event.dev == topic_device:
                return _accepted(event)
    try:
        protected, _, _, _ = split_sign1(message)
    except EvidenceError as error:
        return ("reject", f"malformed: {error}", topic_device, None)
    kid = protected.get(4)
    device = kid.decode("utf-8", "replace") if isinstance(kid, bytes) else None
    if device is None:
        return ("reject", "malformed: protected header has no kid", topic_device, None)
    if topic_device is not None and device != topic_device:
        reason = f"topic-mismatch: kid {device!r} on the topic of {topic_device!r}"
        return ("reject", reason, topic_device, None)
    key = keys.get(device)
    if key is None:
        return ("reject", f"unknown-device: {device!r} is not registered", device, None)
    try:
        event = verify_event(message, key)
    except BadSignature as error:
        return ("reject", f"bad-signature: {error}", device, None)
    except MalformedMessage as error:
        return ("reject", f"malformed: {error}", device, None)
    except EvidenceError as error:
        return ("reject", f"bad-payload: {error}", device, None)
    if event.dev != device:
        return ("reject", f"bad-payload: device {event.dev!r} is not the kid", device, event.seq)
    if not isinstance(event.seq, int) or event.seq < 1 or not isinstance(event.prev, bytes):
        return ("reject", "bad-payload: seq must be a positive integer", device, None)
    return _accepted(event)


def _accepted(event: Event) -> tuple:
    if not isinstance(event.seq, int) or event.seq < 1 or not isinstance(event.prev, bytes):
        return ("reject", "bad-payload: seq must be a positive integer", event.dev, None)
    return (
        "ok", event.dev, event.seq, event.boot, event.up, event.t, event.sync, event.type,
        event.cred, hashlib.sha256(event.payload).digest(), event.prev,
    )  # fmt: skip


# -- the intake: verified results into the store ------------------------------------------


@dataclass
class Inbound:
    """One message to store: from a topic (MQTT) or a file position (ingest)."""

    message: bytes
    source: str
    topic_device: str | None
    received_at: int
    mid: int | None = None


@dataclass
class Outcome:
    """What one batch did, for statistics and for the commands that follow it."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    chain_broken: int = 0
    touched: dict[str, bool] = field(default_factory=dict)  # device -> saw a duplicate
    reasons: dict[str, int] = field(default_factory=dict)
    stored_by_device: dict[str, int] = field(default_factory=dict)
    quarantined: list[QuarantineRow] = field(default_factory=list)  # for the operator's log
    # The events this batch stored (committed), for what follows new evidence (the bench's
    # tap-to-stored latency; findings to re-judge), and when the commit returned (monotonic).
    stored_rows: list[EventRow] = field(default_factory=list)
    committed_at: float = 0.0

    def add(self, other: Outcome) -> None:
        """Fold another part of the same batch into this one."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.chain_broken += other.chain_broken
        for device, saw_duplicate in other.touched.items():
            self.touched[device] = self.touched.get(device, False) or saw_duplicate
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count
        for device, count in other.stored_by_device.items():
            self.stored_by_device[device] = self.stored_by_device.get(device, 0) + count
        self.quarantined += other.quarantined
        self.stored_rows += other.stored_rows
        self.committed_at = max(self.committed_at, other.committed_at)


@dataclass(frozen=True)
class DeviceKey:
    public_key: bytes
    revoked_at: int | None
    # Revoked: the highest sequence it may still deliver (stored + reported backlog at the
    # revocation; store `revocations`); None where the revocation left no record.
    seq_bound: int | None = None
    backlog: int = 0  # of seq_bound, the events its last health report said were undelivered


class Intake:
    """Turns verification results into store rows: events, quarantine, chain status."""

    def __init__(self, store: Store):
        self.store = store
        self.registry = Registry(store)
        self._keys: dict[str, DeviceKey] = {}
        self._keys_loaded = 0.0

    def keys(self, devices: Iterable[str | None], max_age: float = 5.0) -> dict[str, bytes]:
        """Public keys of the named devices; the registry is re-read when one is missing or
        every `max_age` seconds, so new and revoked devices take effect without a restart."""
        wanted = {d for d in devices if d}
        stale = time.monotonic() - self._keys_loaded > max_age
        if stale or (wanted - self._keys.keys() and time.monotonic() - self._keys_loaded > 0.2):
            self.reload_keys()
        return {d: self._keys[d].public_key for d in wanted if d in self._keys}

    def reload_keys(self) -> None:
        bounds = {
            device: (last_seq + (backlog or 0), backlog or 0)
            for device, (_, last_seq, backlog) in self.store.revocations().items()
        }
        self._keys = {
            d.id: DeviceKey(d.public_key, d.revoked_at, *bounds.get(d.id, (None, 0)))
            if d.revoked
            else DeviceKey(d.public_key, d.revoked_at)
            for d in self.registry.devices()
        }
        self._keys_loaded = time.monotonic()

    def claimed_device(self, message: bytes) -> str | None:
        try:
            kid = split_sign1(message)[0].get(4)
        except EvidenceError:
            return None
        return kid.decode("utf-8", "replace") if isinstance(kid, bytes) else None

    def store_batch(self, batch: Sequence[Inbound], results: Sequence[tuple]) -> Outcome:
        """Write one batch in one transaction (the caller commits acknowledgements after).

        A deadlock or serialization failure against another collector retries the batch. Any
        other exception is one message's doing until shown otherwise: the batch is halved until
        the message that raises is alone, and that one is quarantined with the error as its
        reason, so no single message stops the collector. If even its quarantine row cannot be
        written, the store itself is failing and the error goes up (nothing is acknowledged)."""
        try:
            return self._store_retrying(batch, results)
        except Exception as error:
            if self.store.is_retryable(error):
                raise
            if len(batch) > 1:
                half = len(batch) // 2
                outcome = self.store_batch(batch[:half], results[:half])
                outcome.add(self.store_batch(batch[half:], results[half:]))
                return outcome
            item, result = batch[0], results[0]
            device = result[2] if result[0] == "reject" else result[1]
            row = QuarantineRow(
                item.received_at,
                item.source,
                device if isinstance(device, str) else None,
                None,
                _error_reason(error),
                item.message,
            )
            with self.store.transaction():
                self.store.quarantine([row])
            return Outcome(rejected=1, reasons={"error": 1}, quarantined=[row])

    def _store_retrying(self, batch: Sequence[Inbound], results: Sequence[tuple]) -> Outcome:
        for attempt in range(8):
            try:
                return self._store_batch(batch, results)
            except Exception as error:
                if not self.store.is_retryable(error) or attempt == 7:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _store_batch(self, batch: Sequence[Inbound], results: Sequence[tuple]) -> Outcome:
        outcome = Outcome()
        rows: list[EventRow] = []
        sources: dict[tuple[str, int, bytes], str] = {}  # where each row came from
        rejects: list[QuarantineRow] = []
        for item, result in zip(batch, results):
            if result[0] == "ok":
                _, dev, seq, boot, up, t, sync, type_, cred, payload_hash, prev = result
                key = self._keys.get(dev)
                revoked_at = key.revoked_at if key else None
                at = t if isinstance(t, int) else item.received_at // 1000
                reason = None
                if revoked_at is not None and at >= revoked_at:
                    moment = "device time" if isinstance(t, int) else "receive time"
                    reason = (
                        f"revoked: device {dev} was revoked before this event "
                        f"({moment} {at}, revoked at {revoked_at})"
                    )
                elif key is not None and key.seq_bound is not None and seq > key.seq_bound:
                    # Dated before the revocation, yet beyond what the device had reached
                    # then: only a key used after the revocation could have signed it.
                    reached = (
                        "the last sequence stored when the device was revoked"
                        if not key.backlog
                        else f"the last sequence stored when the device was revoked "
                        f"(#{key.seq_bound - key.backlog}) and the {key.backlog} its last "
                        "health report said were still undelivered"
                    )
                    reason = f"revoked: {dev}#{seq} is beyond #{key.seq_bound}, {reached}"
                if reason is not None:
                    rejects.append(
                        QuarantineRow(
                            item.received_at, item.source, dev, seq, reason, item.message
                        )
                    )
                    continue
                rows.append(
                    EventRow(
                        dev, seq, boot, up, t, sync, type_, cred, payload_hash, item.message,
                        item.received_at, prev,
                    )
                )  # fmt: skip
                sources.setdefault((dev, seq, payload_hash), item.source)
            else:
                _, reason, device, seq = result
                rejects.append(
                    QuarantineRow(item.received_at, item.source, device, seq, reason, item.message)
                )
        # One lock order for every writer: fewer deadlocks between collectors.
        rows.sort(key=lambda r: (r.device, r.seq))
        with self.store.transaction():
            # Each link is checked before the insert and written with the row: no UPDATE per
            # event and one neighbour query per batch, not several per device.
            links, in_batch, neighbours = self._links(rows)
            inserted = self.store.insert_events(rows, links, neighbours)
            # new evidence: its customers' months are judged again (kvitto.store.stale)
            stale.touch_events(self.store, [r for r, fresh in zip(rows, inserted) if fresh])
            new_by_device: dict[str, dict[int, EventRow]] = {}
            repeats: dict[str, list[EventRow]] = {}
            for row, fresh in zip(rows, inserted):
                if fresh:
                    new_by_device.setdefault(row.device, {})[row.seq] = row
                    outcome.stored_rows.append(row)
                else:
                    repeats.setdefault(row.device, []).append(row)
            for device, repeated in repeats.items():
                stored = self.store.stored_hashes(device, (r.seq for r in repeated))
                seen_in_batch = new_by_device.get(device, {})
                for row in repeated:
                    original = stored.get(row.seq)
                    if row.seq in seen_in_batch:
                        original = seen_in_batch[row.seq].payload_hash
                    if original == row.payload_hash:
                        outcome.duplicates += 1
                        outcome.touched[device] = True
                    else:
                        # Same (device, seq), other content: a device that signs two events
                        # with one sequence number is equivocating. Keep both sides.
                        rejects.append(
                            QuarantineRow(
                                row.received_at,
                                sources[(device, row.seq, row.payload_hash)], device, row.seq,
                                f"conflict: another event is stored as {device}#{row.seq}",
                                row.message,
                            )
                        )  # fmt: skip
            outcome.chain_broken = self._settle_links(rows, inserted, links, in_batch, neighbours)
            for device, new in new_by_device.items():
                outcome.stored += len(new)
                outcome.stored_by_device[device] = len(new)
                outcome.touched.setdefault(device, False)
            if rejects:
                self.store.quarantine(rejects)
            # issue #23: an alarm call opens the customer's locks for the provider on alarm
            # duty, its check-out closes them; queued with the events, in one transaction
            grant_alarms(self.store, (r for new in new_by_device.values() for r in new.values()))
        outcome.committed_at = time.monotonic()
        outcome.rejected = len(rejects)
        outcome.quarantined = rejects
        for reject in rejects:
            kind = reject.reason.split(":")[0]
            outcome.reasons[kind] = outcome.reasons.get(kind, 0) + 1
        return outcome

    def _links(
        self, rows: Sequence[EventRow]
    ) -> tuple[list[bool | None], dict[tuple[str, int], bytes], dict[tuple[str, int], bytes]]:
        """Each row's link (prev = hash of the predecessor; None where the predecessor is not
        there), the stored one first, else the batch's; also the batch's hashes by (device,
        seq) and what the store holds of each run of the batch's rows and the neighbours on
        both sides (one query for the batch), for insert_events and _settle_links. Rows come
        sorted by (device, seq)."""
        in_batch: dict[tuple[str, int], bytes] = {}
        for row in rows:
            in_batch.setdefault((row.device, row.seq), row.payload_hash)
        spans: list[list[Any]] = []  # [device, first, last] of each run of sequence numbers
        for device, seq in in_batch:
            if spans and spans[-1][0] == device and spans[-1][2] + 1 == seq:
                spans[-1][2] = seq
            else:
                spans.append([device, seq, seq])
        # The store holds no number above STORED_UINT_MAX (cose.py).
        stored = self.store.stored_hashes_in(
            (device, max(first - 1, 1), min(last + 1, STORED_UINT_MAX))
            for device, first, last in spans
        )
        links: list[bool | None] = []
        for row in rows:
            if row.seq == 1:
                links.append(_row_prev(row) == ZERO_HASH)
                continue
            before = stored.get((row.device, row.seq - 1))
            if before is None:
                before = in_batch.get((row.device, row.seq - 1))
            links.append(None if before is None else _row_prev(row) == before)
        return links, in_batch, stored

    def _settle_links(
        self,
        rows: Sequence[EventRow],
        inserted: Sequence[bool],
        links: Sequence[bool | None],
        in_batch: dict[tuple[str, int], bytes],
        stored: dict[tuple[str, int], bytes],
    ) -> int:
        """After the insert: correct a link taken from a batch row that was not the one
        stored (a conflicting repeat), and check the stored successors of the new rows (they
        arrived first). Returns how many of these links are broken."""
        fresh = {
            (row.device, row.seq): (row, link)
            for row, link, new in zip(rows, links, inserted)
            if new
        }
        corrections: dict[str, dict[int, bool]] = {}
        if len(fresh) < len(rows):
            again = [
                (device, seq - 1)
                for device, seq in fresh
                if seq > 1 and (device, seq - 1) in in_batch and (device, seq - 1) not in fresh
            ]
            found = self.store.stored_hashes_in((d, s, s) for d, s in again) if again else {}
            for device, seq in again:
                row, link = fresh[(device, seq + 1)]
                original = found.get((device, seq))
                ok = None if original is None else _row_prev(row) == original
                if ok is not None and ok != link:
                    fresh[(device, seq + 1)] = (row, ok)
                    corrections.setdefault(device, {})[seq + 1] = ok
        successors: dict[str, dict[int, bytes]] = {}  # device -> seq -> its predecessor's hash
        for (device, seq), (row, _) in fresh.items():
            after = (device, seq + 1)
            if after not in fresh and (after in stored or after in in_batch):
                successors.setdefault(device, {})[seq + 1] = row.payload_hash
        broken = sum(1 for _, link in fresh.values() if link is False)
        for device, wanted in successors.items():
            for seq, message in self.store.stored_messages(device, wanted).items():
                ok = _prev_of(message) == wanted[seq]
                corrections.setdefault(device, {})[seq] = ok
                broken += not ok
        for device, statuses in corrections.items():
            self.store.set_chain(device, statuses)
        return broken

    def resolve_chain(self, device: str, after: int, upto: int) -> int:
        """Check links left open in (after, upto], all of whose predecessors are stored.

        Two collectors may store neighbours in concurrent transactions, each unable to see
        the other's row; the link is settled here, once both rows are committed."""
        rows = self.store.execute(
            "SELECT seq, message FROM events WHERE device = ? AND seq > ? AND seq <= ? "
            "AND chain IS NULL",
            (device, after, upto),
        )
        if not rows:
            return 0
        open_links = {int(seq): bytes(message) for seq, message in rows}
        hashes = self.store.stored_hashes(device, (s - 1 for s in open_links if s > 1))
        statuses = {
            seq: _prev_of(message) == (ZERO_HASH if seq == 1 else hashes.get(seq - 1))
            for seq, message in open_links.items()
        }
        self.store.set_chain(device, statuses)
        return sum(1 for ok in statuses.values() if not ok)


def _row_prev(row: EventRow) -> bytes | None:
    return row.prev if row.prev is not None else _prev_of(row.message)


def _prev_of(message: bytes) -> bytes | None:
    _, _, payload, _ = split_sign1(message)
    prev = cbor2.loads(payload).get(9)
    return prev if isinstance(prev, bytes) else None


# -- offline evidence ---------------------------------------------------------------------


@dataclass
class IngestReport:
    path: str
    messages: int
    stored: int
    duplicates: int
    rejected: int
    chain_broken: int
    reasons: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ingest(store: Store, path: Path, batch_size: int = 1000) -> IngestReport:
    """Store a CBOR sequence or JSONL file of events: verified, once per (device, seq), with
    rejects quarantined under '<file> item|line N'. The whole file is read before anything is
    stored, so a file that is not CBOR/JSONL at all changes nothing."""
    if not path.exists():
        raise KvittoError(f"{path}: no such file")
    unit = "line" if path.suffix == ".jsonl" else "item"
    messages = list(read_messages(path))
    intake = Intake(store)
    intake.reload_keys()
    received = now_ms()
    report = IngestReport(str(path), len(messages), 0, 0, 0, 0, {})
    for start in range(0, len(messages), batch_size):
        chunk = messages[start : start + batch_size]
        batch = [Inbound(m, f"{path} {unit} {n}", None, received) for n, m in chunk]
        keys = intake.keys(intake.claimed_device(i.message) for i in batch)
        results = verify_batch([(i.message, None) for i in batch], keys)
        outcome = intake.store_batch(batch, results)
        report.stored += outcome.stored
        report.duplicates += outcome.duplicates
        report.rejected += outcome.rejected
        report.chain_broken += outcome.chain_broken
        for reason, count in outcome.reasons.items():
            report.reasons[reason] = report.reasons.get(reason, 0) + count
    return report


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
