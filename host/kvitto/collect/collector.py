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

import logging
import multiprocessing
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.collect.intake import Inbound, Intake, Outcome, now_ms, verify_batch
from kvitto.collect.watch import QuarantineLog, Stats
from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import DEVICE_ID
from kvitto.store.db import QuarantineRow, Store
from kvitto.store.outbox import next_command_seqs

log = logging.getLogger("kvitto.collect")

# The underscore keeps it out of the device ids' [a-z0-9-]{3,32}: no device's session can be
# named like the collector's. A broker configured by `kvitto broker-config` names each session
# by its username instead (kvitto_collector), for the same reason.
COLLECTOR_CLIENT_ID = "kvitto_collector"
EVENT_TOPIC = "kvitto/v1/+/evt"
STATE_TOPIC = "kvitto/v1/+/state"
COMMAND_LIFETIME = 300  # seconds a command stays valid (FORMATS.md §2 `expires`)
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
        client_id: str = COLLECTOR_CLIENT_ID,
        share_group: str | None = None,
        workers: int = 0,
        max_batch: int = 1000,
        gap_grace: float = 2.0,
        resend_interval: float = 10.0,
        ack_interval: float = 0.2,
        linger_ms: int = 10,
        inline_below: int = 64,
        ca_file: str | None = None,
        outbox_interval: float = 1.0,
        outbox_resend: float = 60.0,
    ):
        if DEVICE_ID.fullmatch(client_id):
            # A session is named by its client id: a device with this id would log us off.
            raise KvittoError(
                f"client id {client_id!r} could be a device's id ([a-z0-9-]): give the "
                "collector one with a character no device id has, such as '_'"
            )
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
        # A batch smaller than this is verified in the pipeline thread: at a steady trickle the
        # round trip through the workers (two more processes to schedule on a busy machine)
        # costs more latency than the check itself; a backlog comes in larger batches.
        self.inline_below = inline_below
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
        self._flushed_at = 0.0  # when acks last went out (monotonic)
        self._outbox: list[tuple[str, str, dict[str, Any]]] = []
        self._outbox_lock = threading.Lock()  # send_command() is called from other threads
        self.error: BaseException | None = None
        self.on_batch: Callable[[Outcome], None] | None = None
        self.log_quarantined = QuarantineLog()

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
        if not self._stopping.is_set():
            self._stats.disconnects += 1
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
        if self._pool is None or len(items) < self.inline_below:
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
        odd = [
            QuarantineRow(
                i.received_at, i.source, None, None, "topic-mismatch: unexpected topic", i.message
            )
            for i in others
        ]  # fmt: skip
        for item in states:
            state = item.message.decode("utf-8", "replace").strip()
            if state.startswith("ota "):
                continue  # an update's progress, for `kvitto ota push`: not the connection
            if item.topic_device and state in ("online", "offline"):
                self.store.set_device_state(item.topic_device, state, item.received_at)
                if state == "online" and self._online.get(item.topic_device) != "online":
                    self._online_at[item.topic_device] = item.received_at
                    self._outbox_checked = 0.0  # what waits for it goes now
                self._online[item.topic_device] = state
            else:
                reason = f"bad-state: {state[:40]!r} is neither 'online' nor 'offline'"
                odd.append(
                    QuarantineRow(
                        item.received_at, item.source, item.topic_device, None, reason,
                        item.message,
                    )
                )  # fmt: skip
        if odd:
            self.store.quarantine(odd)
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
        stats.rejected += outcome.rejected + len(odd)
        stats.chain_broken += outcome.chain_broken
        for reason, count in outcome.reasons.items():
            stats.reasons[reason] = stats.reasons.get(reason, 0) + count
        for row in odd:
            kind = row.reason.split(":")[0]
            stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
        self.log_quarantined(outcome.quarantined + odd)
        self._rate_window.append((time.monotonic(), stats.stored))
        runs: dict[str, tuple[int, int, int]] = {}  # device -> lowest, highest, count stored
        for row in outcome.stored_rows:
            low, high, count = runs.get(row.device, (row.seq, row.seq, 0))
            runs[row.device] = (min(low, row.seq), max(high, row.seq), count + 1)
        for device, saw_duplicate in outcome.touched.items():
            if not saw_duplicate and self._extends(device, runs.get(device)):
                continue
            self._advance(device, announce=saw_duplicate)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _extends(self, device: str, run: tuple[int, int, int] | None) -> bool:
        """The usual case, without asking the store: this batch stored the events right after
        the device's contiguous mark, without holes, and nothing beyond the mark was seen
        stored (no gap open). The mark moves to the highest of them and the ack follows; their
        links were checked at the insert against the mark's event, committed before. Events
        beyond them stored by another writer meanwhile are found by the next _advance (this
        ack stays below them until then: never above what is stored)."""
        before = self._contiguous.get(device)
        if run is None or before is None or device in self._gaps:
            return False
        low, high, count = run
        if low != before + 1 or high - low + 1 != count:
            return False
        self._contiguous[device] = high
        self._ack_wanted[device] = high
        return True

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
        """Sign and send the wanted acks, the resend requests and the queued commands
        (send_command); their sequence numbers are taken in one transaction. Acks go out
        together, at most once per `ack_interval` (so at most one per device per interval):
        each flush commits, and a flush after every batch doubled a busy collector's fsyncs.
        Commands and resend requests go at the next flush without waiting."""
        now = time.monotonic()
        if not force and not self._outbox and now - self._flushed_at < self.ack_interval:
            return
        commands = [(d, "ack", {"upto": upto}) for d, upto in self._ack_wanted.items()]
        self._ack_wanted = {}
        with self._outbox_lock:
            commands += self._outbox
            self._outbox = []
        if not commands or self.org_secret is None or self._client is None:
            return
        self._flushed_at = now
        with self.store.transaction():
            seqs = next_command_seqs(self.store, [device for device, _, _ in commands])
        expires = int(time.time()) + COMMAND_LIFETIME
        for (device, command_type, x), seq in zip(commands, seqs):
            message = sign_command(self.org_secret, device, seq, expires, command_type, x)
            self._client.publish(f"kvitto/v1/{device}/cmd", message, qos=1)
            if command_type == "ack":
                self._stats.acks_sent += 1
            elif command_type == "resend":
                self._stats.resends_sent += 1
