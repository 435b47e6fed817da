"""The collector: device events from MQTT (or a file) verified, stored once, acknowledged.

    collector = Collector(open_store("sqlite:///kvitto.db"), "mqtt://127.0.0.1:1883", org_secret)
    collector.start()          # background threads; collector.stats() for the live view
    collector.stop()           # finish what arrived, acknowledge it, disconnect

Per message: verify the COSE_Sign1 signature against the registry (device registered, not
revoked at the event's time, kid = topic device = payload device), store each (device, seq)
once (primary key, INSERT … ON CONFLICT DO NOTHING), check the hash chain (RULES.md I4),
detect gaps and ask the device to resend them (I3), and send the device a signed `ack` with
the highest contiguous stored sequence so it can free its journal. Rejected messages go to the
store's quarantine with the reason. The broker's PUBACK is sent only after the batch holding
the message has committed (paho manual_ack), so a collector killed mid-stream loses nothing:
the broker redelivers what was not acknowledged, and the primary key absorbs the repeats.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import (
    BadSignature,
    EvidenceError,
    MalformedMessage,
    read_messages,
    split_sign1,
)
from kvitto.evidence.events import Event, EventVerifier, verify_event
from kvitto.store.db import EventRow, QuarantineRow, Store
from kvitto.store.registry import Registry

EVENT_TOPIC = "kvitto/v1/+/evt"
STATE_TOPIC = "kvitto/v1/+/state"
COMMAND_LIFETIME = 300  # seconds a command stays valid (FORMATS.md §2 `expires`)
ZERO_HASH = bytes(32)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- verification (runs in worker processes when there are several) ----------------------


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
    fast = EventVerifier(keys.get)
    results: list[tuple[Any, ...]] = []
    for message, topic_device in items:
        event = fast.event(message)
        if event is not None and (topic_device is None or event.dev == topic_device):
            results.append(_accepted(event))
        else:
            results.append(_verify_one(message, topic_device, keys))
    return results


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


@dataclass(frozen=True)
class DeviceKey:
    public_key: bytes
    revoked_at: int | None


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
        self._keys = {d.id: DeviceKey(d.public_key, d.revoked_at) for d in self.registry.devices()}
        self._keys_loaded = time.monotonic()

    def claimed_device(self, message: bytes) -> str | None:
        try:
            kid = split_sign1(message)[0].get(4)
        except EvidenceError:
            return None
        return kid.decode("utf-8", "replace") if isinstance(kid, bytes) else None

    def store_batch(self, batch: Sequence[Inbound], results: Sequence[tuple]) -> Outcome:
        """Write one batch in one transaction (the caller commits acknowledgements after).

        A deadlock or serialization failure against another collector retries the batch."""
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
                if revoked_at is not None and at >= revoked_at:
                    moment = "device time" if isinstance(t, int) else "receive time"
                    rejects.append(
                        QuarantineRow(
                            item.received_at, item.source, dev, seq,
                            f"revoked: device {dev} was revoked before this event "
                            f"({moment} {at}, revoked at {revoked_at})",
                            item.message,
                        )
                    )  # fmt: skip
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
            inserted = self.store.insert_events(rows)
            new_by_device: dict[str, dict[int, EventRow]] = {}
            repeats: dict[str, list[EventRow]] = {}
            for row, fresh in zip(rows, inserted):
                if fresh:
                    new_by_device.setdefault(row.device, {})[row.seq] = row
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
            for device, new in new_by_device.items():
                outcome.chain_broken += self._check_chain(device, new)
                outcome.stored += len(new)
                outcome.stored_by_device[device] = len(new)
                outcome.touched.setdefault(device, False)
            if rejects:
                self.store.quarantine(rejects)
        outcome.rejected = len(rejects)
        for reject in rejects:
            kind = reject.reason.split(":")[0]
            outcome.reasons[kind] = outcome.reasons.get(kind, 0) + 1
        return outcome

    def _check_chain(self, device: str, new: dict[int, EventRow]) -> int:
        """Set `chain` on new events and on stored successors; returns how many broke."""
        neighbours = {s - 1 for s in new} | {s + 1 for s in new}
        neighbours -= set(new)
        neighbours.discard(0)
        hashes = {seq: row.payload_hash for seq, row in new.items()}
        hashes.update(self.store.stored_hashes(device, neighbours))
        statuses: dict[int, bool] = {}
        for seq, row in new.items():
            if seq == 1:
                statuses[seq] = _row_prev(row) == ZERO_HASH
            elif seq - 1 in hashes:
                statuses[seq] = _row_prev(row) == hashes[seq - 1]
        for seq, message in self.store.stored_messages(
            device, (s + 1 for s in new if s + 1 not in new and s + 1 in hashes)
        ).items():
            statuses[seq] = _prev_of(message) == hashes[seq - 1]
        if statuses:
            self.store.set_chain(device, statuses)
        return sum(1 for ok in statuses.values() if not ok)

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


# -- the organisation's command key -------------------------------------------------------


def load_org_key(path: Path) -> bytes:
    """The 32-byte Ed25519 seed of the organisation's command key: PEM (PKCS#8), 64 hex
    digits, or the raw 32 bytes."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KvittoError(f"org key {path}: {error.strerror}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise KvittoError(f"org key {path}: {error}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KvittoError(f"org key {path}: not an Ed25519 private key")
        return key.private_bytes_raw()
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode())
        except (ValueError, UnicodeDecodeError):
            pass
    if len(data) == 32:
        return data
    raise KvittoError(f"org key {path}: expected PEM, 64 hex digits or 32 raw bytes")


# -- the MQTT collector -------------------------------------------------------------------

_PUBACK = struct.Struct("!BBH")  # MQTT 3.1.1 §3.4: 0x40, remaining length 2, packet id


def _puback(client: Any, mids: list[int]) -> None:
    """Acknowledge QoS 1 messages. paho's ack() queues one 4-byte packet per call and wakes
    its network thread for each, which then sends each alone: the batch's PUBACKs go as one
    write here, through paho's packet queue (checked to exist, else ack() one by one). The
    same 4 bytes are a valid MQTT 5 PUBACK too (reason Success, no properties: §3.4.2.1)."""
    queue = getattr(client, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    queue(0x40, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 1)


@dataclass
class Stats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    chain_broken: int = 0
    acks_sent: int = 0
    resends_sent: int = 0
    commands_sent: int = 0  # from the store's outbox (kvitto command), attempts included
    commands_done: int = 0  # outbox commands the devices' events showed obeyed or refused
    gaps_open: int = 0
    connected: bool = False
    subscribed: bool = False
    reasons: dict[str, int] = field(default_factory=dict)
    devices_online: int = 0
    events_per_second: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, reasons=dict(self.reasons))


@dataclass
class _Gap:
    first: int
    last: int
    seen_at: float
    requested_at: float | None = None


class Collector:
    """MQTT → verify → store → ack/resend. `start()` runs it on background threads."""

    def __init__(
        self,
        store: Store,
        broker_url: str,
        org_secret: bytes | None,
        *,
        client_id: str = "kvitto-collector",
        share_group: str | None = None,
        workers: int = 0,
        max_batch: int = 1000,
        gap_grace: float = 2.0,
        resend_interval: float = 10.0,
        ack_interval: float = 0.2,
        linger_ms: int = 10,
        ca_file: str | None = None,
        outbox_interval: float = 1.0,
        outbox_resend: float = 60.0,
    ):
        self.store = store
        self.intake = Intake(store)
        self.broker_url = broker_url
        self.org_secret = org_secret
        self.client_id = client_id
        self.share_group = share_group
        self.workers = workers
        self.max_batch = max_batch
        self.gap_grace = gap_grace
        self.resend_interval = resend_interval
        self.ack_interval = ack_interval
        self.linger_ms = linger_ms
        self.ca_file = ca_file
        self.outbox_interval = outbox_interval
        self.outbox_resend = outbox_resend
        self._outbox_checked = 0.0
        self._online_at: dict[str, int] = {}
        self._stats = Stats()
        self._queue: deque[Inbound] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._contiguous: dict[str, int] = {}
        self._gaps: dict[str, list[_Gap]] = {}
        self._online: dict[str, str] = {}
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=20)
        self._ack_wanted: dict[str, int] = {}
        self._queue_seen = 0
        # QoS 1 messages received and acknowledged: the difference is what the broker has in
        # flight to us, and its peak the broker's window (max_inflight_messages), as far as
        # the traffic has shown it.
        self._received_qos = 0
        self._acked_qos = 0
        self._window = 0
        self.subscribed = threading.Event()  # set once the broker confirmed the subscription
        self._ack_sent_at: dict[str, float] = {}
        self._outbox: list[tuple[str, str, dict[str, Any]]] = []
        self._outbox_lock = threading.Lock()  # send_command() is called from other threads
        self.error: BaseException | None = None
        self.on_batch: Callable[[Outcome], None] | None = None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        url = urlparse(self.broker_url)
        if url.scheme not in ("mqtt", "mqtts"):
            raise KvittoError(f"broker URL {self.broker_url!r}: use mqtt://host:port or mqtts://")
        self._online = self.store.device_states()
        self._online_at = self.store.online_since()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        if url.username:
            client.username_pw_set(unquote(url.username), unquote(url.password or ""))
        if url.scheme == "mqtts":
            client.tls_set(ca_certs=self.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(1, 5)
        self._client = client
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        try:
            client.connect(url.hostname or "127.0.0.1", port, keepalive=30)
        except (OSError, ValueError) as error:
            raise KvittoError(f"broker {url.hostname}:{port}: {error}") from None
        if self.workers > 1:
            # spawn, not fork: the paho thread must not be copied into the workers.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
            self._pool.submit(verify_batch, [], {}).result()  # start them before traffic
        self._thread = threading.Thread(target=self._run, name="kvitto-collector", daemon=True)
        self._thread.start()
        client.loop_start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, store and acknowledge what arrived, then disconnect."""
        if self._client is None:
            return
        client = self._client
        # The subscription stays: the broker queues for this session while it is away. What
        # arrives from now on is left unacknowledged, so the broker delivers it again.
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        time.sleep(0.05)  # let the network thread flush the last PUBACKs and commands
        client.disconnect()
        client.loop_stop()
        if self._pool is not None:
            self._pool.shutdown()
        self._client = None

    def kill(self) -> None:
        """Drop the connection without storing what is queued (for fault tests): the broker
        must redeliver everything not yet acknowledged."""
        if self._client is None:
            return
        client = self._client
        self._queue.clear()
        self._stopping.set()
        self._wake.set()
        sock = client.socket()
        if sock is not None:
            sock.close()
        client.loop_stop()
        if self._thread is not None:
            self._thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._client = None

    @property
    def broker_address(self) -> str:
        """The broker URL without its password, for people to read."""
        url = urlparse(self.broker_url)
        return f"{url.scheme}://{url.hostname}:{url.port or ''}".rstrip(":")

    def stats(self) -> Stats:
        self._stats.gaps_open = sum(len(g) for g in self._gaps.values())
        self._stats.devices_online = sum(1 for s in self._online.values() if s == "online")
        window = list(self._rate_window)
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            span = max(time.monotonic() - window[0][0], 1e-3)
            self._stats.events_per_second = (window[-1][1] - window[0][1]) / span
        return self._stats

    # -- paho callbacks (network thread: queue and return) --------------------------------

    def _event_topic(self) -> str:
        return f"$share/{self.share_group}/{EVENT_TOPIC}" if self.share_group else EVENT_TOPIC

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = KvittoError(f"broker refused the collector: {reason_code}")
            return
        self._stats.connected = True
        client.subscribe([(self._event_topic(), 1), (STATE_TOPIC, 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            self.error = KvittoError(f"broker refused the subscription: {reason_codes}")
            return
        self._stats.subscribed = True
        self.subscribed.set()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the broker has confirmed the subscription (a new session misses what
        is published before that; a persistent one has it queued)."""
        if not self.subscribed.wait(timeout):
            raise KvittoError(f"broker {self.broker_address} did not confirm the subscription")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._stats.connected = False
        self._stats.subscribed = False

    def _on_message(self, client, userdata, message) -> None:
        # The network thread: as little as possible per message, it shares the GIL.
        if self._stopping.is_set():
            return  # not acknowledged: redelivered to the next session
        topic = message.topic
        parts = topic.split("/")
        device = parts[2] if len(parts) == 4 else None
        mid = None
        if message.qos:
            mid = message.mid
            self._received_qos += 1  # written by this thread only
        self._queue.append(Inbound(message.payload, topic, device, now_ms(), mid))
        if not self._wake.is_set():  # Event.set takes a lock and notifies: skip when set
            self._wake.set()

    def send_command(self, device: str, command_type: str, x: dict[str, Any]) -> None:
        """Queue a command (FORMATS.md §2) for `device`, e.g. `config` {"debounce_ms": 800}: it
        is signed with the organisation's key and the device's next command sequence, and
        published on its cmd topic, at the collector's next flush (within ack_interval). The
        type, target and x are checked now: KvittoError for one a device would refuse."""
        if self.org_secret is None:
            raise KvittoError("the collector has no organisation command key: it cannot sign")
        sign_command(self.org_secret, device, 1, 0, command_type, x)  # checks, signs nothing kept
        with self._outbox_lock:
            self._outbox.append((device, command_type, dict(x)))
        self._wake.set()

    # -- pipeline thread: batch, verify, store, acknowledge -------------------------------

    def _run(self) -> None:
        pending: deque[tuple[list[Inbound], list[Future]]] = deque()
        depth = max(2, self.workers)
        try:
            while True:
                batch = self._take(self._batch_limit(depth))
                if batch:
                    pending.append((batch, self._submit(batch)))
                while pending and (
                    not batch
                    or len(pending) > depth
                    or all(future.done() for future in pending[0][1])
                ):
                    done_batch, futures = pending.popleft()
                    results = [r for future in futures for r in future.result()]
                    self._store(done_batch, results)
                self._chase_gaps()
                self._pump_outbox()
                self._flush_commands()
                if not batch and not pending:
                    if self._stopping.is_set() and not self._queue:
                        self._flush_commands(force=True)
                        return
                    self._wake.wait(0.1 if not self._queue else 0.001)
                    self._wake.clear()
        except BaseException as error:  # surfaced by the CLI; the broker redelivers
            self.error = error

    def _batch_limit(self, depth: int) -> int:
        """At most max_batch, and at most a share of the broker's window: PUBACKs go only after
        the commit, so a batch as large as the window would leave the broker waiting while it
        is verified and stored. Several smaller batches in the pipeline keep messages coming
        in while earlier ones are verified and committed."""
        self._window = max(self._window, self._received_qos - self._acked_qos)
        return max(1, min(self.max_batch, max(self._window // (depth + 2), 64)))

    def _take(self, limit: int) -> list[Inbound]:
        batch: list[Inbound] = []
        queue = self._queue
        if (
            queue
            and len(queue) < limit
            and len(queue) > self._queue_seen
            and self.linger_ms
            and not self._stopping.is_set()
            and now_ms() - queue[0].received_at < self.linger_ms
        ):
            # Still arriving: let the batch grow (fewer, larger transactions and worker calls).
            # Once arrivals pause (a broker with a small in-flight window waits for our
            # PUBACKs), take what is there at once.
            self._queue_seen = len(queue)
            return batch
        self._queue_seen = 0
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        return batch

    def _submit(self, batch: list[Inbound]) -> list[Future]:
        events = [i for i in batch if i.source.endswith("/evt")]
        keys = self.intake.keys(
            i.topic_device or self.intake.claimed_device(i.message) for i in events
        )
        items = [(i.message, i.topic_device) for i in events]
        if self._pool is None or len(items) < 8:
            future: Future = Future()
            future.set_result(verify_batch(items, keys))
            return [future]
        size = -(-len(items) // self.workers)
        return [
            self._pool.submit(verify_batch, items[start : start + size], keys)
            for start in range(0, len(items), size)
        ]

    def _store(self, batch: list[Inbound], results: list[tuple]) -> None:
        events = [i for i in batch if i.source.endswith("/evt")]
        states = [i for i in batch if i.source.endswith("/state")]
        others = [i for i in batch if not i.source.endswith(("/evt", "/state"))]
        outcome = self.intake.store_batch(events, results)
        for item in states:
            state = item.message.decode("utf-8", "replace").strip()
            if item.topic_device:
                self.store.set_device_state(item.topic_device, state, item.received_at)
                if state == "online" and self._online.get(item.topic_device) != "online":
                    self._online_at[item.topic_device] = item.received_at
                    self._outbox_checked = 0.0  # what waits for it goes now
                self._online[item.topic_device] = state
        if others:
            self.store.quarantine(
                [
                    QuarantineRow(
                        i.received_at,
                        i.source,
                        None,
                        None,
                        "topic-mismatch: unexpected topic",
                        i.message,
                    )
                    for i in others
                ]
            )
        # Committed: now the broker may forget these messages.
        client = self._client
        mids = [item.mid for item in batch if item.mid is not None]
        if client is not None and mids:
            _puback(client, mids)
            self._acked_qos += len(mids)
        stats = self._stats
        stats.received += len(events)
        stats.stored += outcome.stored
        stats.duplicates += outcome.duplicates
        stats.rejected += outcome.rejected + len(others)
        stats.chain_broken += outcome.chain_broken
        for reason, count in outcome.reasons.items():
            stats.reasons[reason] = stats.reasons.get(reason, 0) + count
        self._rate_window.append((time.monotonic(), stats.stored))
        for device, saw_duplicate in outcome.touched.items():
            self._advance(device, announce=saw_duplicate)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _advance(self, device: str, announce: bool = False) -> None:
        """Move the device's contiguous mark over stored events; ack it, note any gap."""
        before = self._contiguous.get(device)
        upto = before if before is not None else 0
        while True:
            following = self.store.seqs_after(device, upto, 5000)
            run = 0
            for seq in following:
                if seq != upto + run + 1:
                    break
                run += 1
            upto += run
            if run < len(following) or len(following) < 5000:
                break
        self._contiguous[device] = upto
        if upto > (before or 0):
            self._stats.chain_broken += self.intake.resolve_chain(device, before or 0, upto)
        gaps: list[_Gap] = []
        previous = upto
        known = {(g.first, g.last): g for g in self._gaps.get(device, [])}
        for seq in following[run:]:
            if seq > previous + 1 and len(gaps) < 10:
                old = known.get((previous + 1, seq - 1))
                gaps.append(old or _Gap(previous + 1, seq - 1, time.monotonic()))
            previous = seq
        if gaps:
            self._gaps[device] = gaps
        else:
            self._gaps.pop(device, None)
        if upto and (upto != before or announce):
            self._ack_wanted[device] = upto

    def _chase_gaps(self) -> None:
        now = time.monotonic()
        for device in list(self._gaps):
            due = [
                g
                for g in self._gaps.get(device, [])
                if now - g.seen_at >= self.gap_grace
                and (g.requested_at is None or now - g.requested_at >= self.resend_interval)
            ]
            if not due:
                continue
            # Another collector (shared subscription) may have stored the gap meanwhile.
            self._advance(device)
            for gap in self._gaps.get(device, []):
                if gap in due:
                    with self._outbox_lock:
                        self._outbox.append(
                            (device, "resend", {"from": gap.first, "to": gap.last})
                        )
                    gap.requested_at = now

    def _pump_outbox(self) -> None:
        """The store's outbox (`kvitto command`): close what the devices' events show done,
        queue what is due for sending (kvitto.store.outbox)."""
        from kvitto.store.outbox import drop_revoked, due, settle, wire_x

        clock = time.monotonic()
        if self.org_secret is None or clock - self._outbox_checked < self.outbox_interval:
            return
        self._outbox_checked = clock
        rows = self.store.outbox(open_only=True)
        if not rows:
            return
        at = now_ms()
        rows = drop_revoked(self.store, rows, at)
        closed = {row.id for row in settle(self.store, rows, at)}
        self._stats.commands_done += len(closed)
        rows = [row for row in rows if row.id not in closed]
        for row in due(rows, at, self._online, self._online_at, self.outbox_resend):
            if self.store.command_sent(row.id, at, row.sent_at):
                with self._outbox_lock:
                    self._outbox.append((row.device, row.type, wire_x(row, at)))
                self._stats.commands_sent += 1

    def _flush_commands(self, force: bool = False) -> None:
        """Sign and send the acks that are due (at most one per device per `ack_interval`),
        the resend requests and the queued commands (send_command); their sequence numbers are
        taken in one transaction."""
        now = time.monotonic()
        due = [
            device
            for device in self._ack_wanted
            if force or now - self._ack_sent_at.get(device, 0.0) >= self.ack_interval
        ]
        commands = [(d, "ack", {"upto": self._ack_wanted.pop(d)}) for d in due]
        with self._outbox_lock:
            commands += self._outbox
            self._outbox = []
        if not commands or self.org_secret is None or self._client is None:
            return
        with self.store.transaction():
            seqs = [self.store.next_command_seq(device) for device, _, _ in commands]
        expires = int(time.time()) + COMMAND_LIFETIME
        for (device, command_type, x), seq in zip(commands, seqs):
            message = sign_command(self.org_secret, device, seq, expires, command_type, x)
            self._client.publish(f"kvitto/v1/{device}/cmd", message, qos=1)
            if command_type == "ack":
                self._ack_sent_at[device] = now
                self._stats.acks_sent += 1
            elif command_type == "resend":
                self._stats.resends_sent += 1


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


# -- the case bundle ----------------------------------------------------------------------


def _csv_customers(path: Path) -> set[str]:
    import csv

    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "customer" not in reader.fieldnames:
                raise KvittoError(f"{path} line 1: no 'customer' column in the header")
            customers = set()
            for number, record in enumerate(reader, start=2):
                customer = (record.get("customer") or "").strip()
                if not customer:
                    raise KvittoError(f"{path} line {number}, field customer: empty")
                customers.add(customer)
            return customers
    except OSError as error:
        raise KvittoError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise KvittoError(f"{path}: not UTF-8 text") from None


def month_window(month: str) -> tuple[int, int]:
    """Unix seconds [start, end) of a month in Europe/Stockholm."""
    import datetime as dt

    from kvitto.store.registry import LOCAL

    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=LOCAL)
    except ValueError:
        raise KvittoError(f"month {month!r}: expected YYYY-MM") from None
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return int(first.timestamp()), int(following.timestamp())


@dataclass
class CaseExport:
    out: str
    month: str
    customers: int
    devices: int
    credentials: int
    events: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_case(
    store: Store,
    month: str,
    out: Path,
    *,
    provider: str | None = None,
    claims: Path | None = None,
    orders: Path | None = None,
) -> CaseExport:
    """Write the case bundle of FORMATS.md §3 for one month.

    Customers are those named in claims.csv and orders.csv (all, if neither is given); devices
    are theirs; credentials are the provider's (all, if none is named). Evidence is every event
    of those devices from each boot that has an event within the month (±1 day, by device time
    or else receive time), so the verifier can re-anchor every boot's clock from its own sync
    events. claims.csv and orders.csv are copied unchanged.
    """
    import shutil

    registry = Registry(store)
    start, end = month_window(month)
    wanted: set[str] | None = None
    for path in (claims, orders):
        if path is not None:
            wanted = (wanted or set()) | _csv_customers(path)
    customers = [c for c in registry.customers() if wanted is None or c.id in wanted]
    if wanted is not None:
        missing = sorted(wanted - {c.id for c in customers})
        if missing:
            raise KvittoError(f"customers not in the registry: {', '.join(missing)}")
    names = {c.id for c in customers}
    devices = [d for d in registry.devices() if d.customer in names]
    credentials = registry.credentials(provider)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    # Written under a temporary name and renamed: a bundle is never seen half-written.
    partial = out / "evidence.cbor-seq.partial"
    with partial.open("wb") as handle:
        for device in devices:
            rows = store.execute(
                "SELECT e.message FROM events e WHERE e.device = ? AND e.boot IN ("
                " SELECT DISTINCT boot FROM events WHERE device = ? AND"
                " COALESCE(t, received_at / 1000) >= ? AND COALESCE(t, received_at / 1000) < ?)"
                " ORDER BY e.seq",
                (device.id, device.id, start - 86400, end + 86400),
            )
            for (message,) in rows:
                handle.write(bytes(message))
                count += 1
    partial.replace(out / "evidence.cbor-seq")
    (out / "registry.toml").write_text(registry.to_toml(customers, devices, credentials))
    for path, name in ((claims, "claims.csv"), (orders, "orders.csv")):
        if path is not None and path.resolve() != (out / name).resolve():
            shutil.copyfile(path, out / name)
    return CaseExport(str(out), month, len(customers), len(devices), len(credentials), count)


# -- the `kvitto collect` loop: live view or JSON lines, until SIGTERM --------------------


def run_collect(
    store_url: str,
    broker_url: str,
    *,
    org_key: Path | None = None,
    share_group: str | None = None,
    client_id: str = "kvitto-collector",
    output_format: str = "text",
    workers: int = 0,
    ca_file: str | None = None,
    interval: float = 5.0,
    duration: float | None = None,
) -> Stats:
    """Collect until SIGTERM/SIGINT (or `duration` seconds); returns the final statistics.

    text: a live table (rich) on the terminal; json: one statistics object per `interval`
    seconds on stdout, and a last one after the clean shutdown.
    """
    import json
    import signal
    import sys

    from kvitto.store.db import open_store

    org_secret = load_org_key(org_key) if org_key else None
    store = open_store(store_url)
    if org_secret is None:
        print(
            "kvitto collect: no --org-key, so events are stored but devices get no ack or "
            "resend commands (their journals keep everything)",
            file=sys.stderr,
        )
        waiting = len(store.outbox(open_only=True))
        if waiting:
            print(
                f"kvitto collect: {waiting} queued command(s) in the outbox wait for a "
                "collector with --org-key (`kvitto command list --open`)",
                file=sys.stderr,
            )
    collector = Collector(
        store,
        broker_url,
        org_secret,
        client_id=client_id,
        share_group=share_group,
        workers=workers,
        ca_file=ca_file,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    deadline = None if duration is None else time.monotonic() + duration
    try:
        collector.start()
        if output_format == "json":
            while not stop.wait(interval if deadline is None else min(interval, 0.2)):
                if collector.error or (deadline and time.monotonic() > deadline):
                    break
                print(json.dumps(collector.stats().as_dict()), flush=True)
        else:
            _live_view(collector, stop, deadline)
    finally:
        collector.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
    if collector.error is not None:
        if isinstance(collector.error, KvittoError):
            raise collector.error
        raise KvittoError(f"collector stopped: {collector.error!r}")
    final = collector.stats()
    if output_format == "json":
        print(json.dumps(dict(final.as_dict(), final=True)), flush=True)
    return final


def _live_view(collector: Collector, stop: threading.Event, deadline: float | None) -> None:
    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        stats = collector.stats()
        view = Table(title=f"kvitto collect · {collector.broker_address}", show_header=False)
        rows = [
            ("broker", "connected" if stats.connected else "connecting…"),
            ("devices online", str(stats.devices_online)),
            ("events/s", f"{stats.events_per_second:.0f}"),
            ("stored", str(stats.stored)),
            ("duplicates", str(stats.duplicates)),
            ("gaps open", str(stats.gaps_open)),
            ("resends asked", str(stats.resends_sent)),
            ("acks sent", str(stats.acks_sent)),
            ("commands sent / done", f"{stats.commands_sent} / {stats.commands_done}"),
            ("chain breaks", str(stats.chain_broken)),
            ("rejected", ", ".join(f"{k} {v}" for k, v in stats.reasons.items()) or "0"),
        ]
        for name, value in rows:
            view.add_row(name, value)
        return view

    with Live(table(), refresh_per_second=2) as live:
        while not stop.wait(0.5):
            live.update(table())
            if collector.error or (deadline and time.monotonic() > deadline):
                break
