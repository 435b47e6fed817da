"""The ceiling of the collector's design on this machine, and a paced publisher, for
bench/collector.py.

    ceiling = Ceiling(db_path, broker_port, "bench-ceiling-w2", workers=2, keys=keys)
    ceiling.start(); ceiling.done.wait(); ceiling.stop()    # ceiling.stored: events committed
    times = paced_publish(port, messages, rate=1500)         # (device, seq) -> publish time

The ceiling is the least this design must do per event, in the collector's process layout:
paho receives with manual acknowledgement (QoS 1) on its network thread, a pipeline thread takes
batches and verifies them with `cryptography` Ed25519 (inline, or split over `workers` spawned
processes that hold the key objects from their start), and each batch is stored by the one
write the design needs before its PUBACK: an INSERT … ON CONFLICT DO NOTHING of the event rows
into the store's own `events` table (its primary key and indexes), one transaction per batch,
committed in WAL with synchronous=FULL; then the batch's PUBACKs go as one write. Left out, as
not needed to make an event durable: the collector's checks of the exact COSE form and field
types, the chain status, duplicate and conflict detection, quarantine, gap tracking and the
signed device acks.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from kvitto.collect.collector import _puback
from kvitto.evidence.cose import sig_structure

_KEYS: dict[str, Ed25519PublicKey] = {}

_INSERT = (
    "INSERT INTO events (device, seq, boot, up, t, sync, type, cred, payload_hash, message, "
    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING"
)


def load_keys(keys: dict[str, bytes]) -> None:
    """Worker initialiser: the key objects, made once per process."""
    _KEYS.update({d: Ed25519PublicKey.from_public_bytes(k) for d, k in keys.items()})


def verify_rows(items: list[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    """(device, message) -> the event's columns up to its payload hash: decode, check the
    signature. The message itself stays with the caller (not pickled back)."""
    rows = []
    for device, message in items:
        # The bench's messages have one layout (tag 18, array of 4, a protected header under
        # 24 bytes, the empty map, a payload of 24..255 bytes, a 64-byte signature): slice
        # rather than decode, the least any collector could spend on finding the parts.
        header_end = 3 + message[2] - 0x40
        payload = message[header_end + 3 : -66]
        signed = sig_structure(message[3:header_end], payload)
        _KEYS[device].verify(message[-64:], signed)
        f = cbor2.loads(payload)
        digest = hashlib.sha256(payload).digest()
        rows.append((device, f[2], f[3], f[4], f[5], f[6], f[7], f[8], digest))
    return rows


class Ceiling:
    """The least collector of this design (see the module docstring); counts what it stored."""

    def __init__(
        self, db_path: str, port: int, client_id: str, workers: int, keys: dict[str, bytes],
        total: int, batch: int = 250,
    ):  # fmt: skip
        self.db_path, self.port, self.client_id = db_path, port, client_id
        self.workers, self.keys, self.total, self.batch = workers, keys, total, batch
        self.stored = 0
        self.done = threading.Event()
        self._queue: deque[tuple[str, bytes, int, int]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.workers:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=load_keys,
                initargs=(self.keys,),
            )
            for future in [self._pool.submit(verify_rows, []) for _ in range(self.workers)]:
                future.result()
        else:
            load_keys(self.keys)
        self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            manual_ack=True,
        )  # fmt: skip
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        client.connect("127.0.0.1", self.port)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        self._client.disconnect()
        self._client.loop_stop()
        if self._pool is not None:
            self._pool.shutdown()
        self._db.close()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("kvitto/v1/+/evt", 1)

    def _on_message(self, client, userdata, message) -> None:
        device = message.topic.split("/")[2]
        self._queue.append((device, message.payload, int(time.time() * 1000), message.mid))
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        pending: deque[tuple[list[tuple[str, bytes, int, int]], list[Future]]] = deque()
        depth = max(2, self.workers)
        queue = self._queue
        seen = 0
        while not self._stopping.is_set():
            batch = []
            if (
                len(queue) < self.batch
                and len(queue) > seen
                and time.time() * 1000 - queue[0][2] < 10
            ):
                seen = len(queue)  # still arriving: let the batch grow, as the collector does
            else:
                seen = 0
                while queue and len(batch) < self.batch:
                    batch.append(queue.popleft())
            if batch:
                pending.append((batch, self._submit([(d, m) for d, m, _, _ in batch])))
            while pending and (
                not batch or len(pending) > depth or all(f.done() for f in pending[0][1])
            ):
                batch_done, futures = pending.popleft()
                results = [row for f in futures for row in f.result()]
                rows = [
                    (*row, message, received_at)
                    for row, (_, message, received_at, _) in zip(results, batch_done)
                ]
                self._store(rows, [mid for _, _, _, mid in batch_done])
            if not batch and not pending:
                self._wake.wait(0.001 if queue else 0.1)
                self._wake.clear()

    def _submit(self, items: list[tuple[str, bytes]]) -> list[Future]:
        if self._pool is None:
            future: Future = Future()
            future.set_result(verify_rows(items))
            return [future]
        size = -(-len(items) // self.workers)
        return [
            self._pool.submit(verify_rows, items[start : start + size])
            for start in range(0, len(items), size)
        ]

    def _store(self, rows: list[tuple[Any, ...]], mids: list[int]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(_INSERT, rows)
        self._db.execute("COMMIT")
        _puback(self._client, mids)
        self.stored += len(rows)
        if self.stored >= self.total:
            self.done.set()


def paced_publish(
    port: int, messages: list[tuple[str, int, bytes]], rate: float, sink: Any
) -> None:
    """Publish (device, seq, message) at a steady `rate` per second, QoS 1, and send
    {(device, seq): CLOCK_MONOTONIC at publish} to `sink` (a multiprocessing connection).
    Runs in its own process, so the publisher does not share the collector's GIL."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paced")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    published: dict[tuple[str, int], float] = {}
    started = time.monotonic()
    info = None
    for number, (device, seq, message) in enumerate(messages):
        due = started + number / rate
        wait = due - time.monotonic()
        if wait > 0.001:
            time.sleep(wait)
        published[(device, seq)] = time.monotonic()
        info = client.publish(f"kvitto/v1/{device}/evt", message, qos=1)
    if info is not None:
        info.wait_for_publish(60)
    achieved = len(messages) / (time.monotonic() - started)
    client.disconnect()
    client.loop_stop()
    sink.send((published, achieved))
    sink.close()
