"""Helpers for the link fault tests: a unix-port board process, the real collector, the count.

    board = LinkBoard(tmp_path / "flash.img", broker.host, broker.port, "tag-0042", events=200)
    board.start(); board.power_cut(); board.start()      # SIGKILL, then boot on the same flash
    run = CollectorRun.start(tmp_path, broker.url, ["tag-0042"]); run.tally("tag-0042", 200)

The board is tests/fakes/link_board.py: the real device modules (flash image, journal, link,
MQTT client, Ed25519) under the unix port. The collector is kvitto.collect.collector.Collector on SQLite.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import FAKES, micropython_binary, micropython_env
from kvitto.collect.collector import Collector
from kvitto.sim.netproxy import NetProxy
from kvitto.store.db import Store, open_store
from kvitto.store.registry import Registry

ORG_SEED = bytes(range(32))
ORG_PUBLIC = Ed25519PrivateKey.from_private_bytes(ORG_SEED).public_key().public_bytes_raw()
BOARD_SCRIPT = FAKES / "link_board.py"


def device_public(device_id: str) -> bytes:
    """The public key link_board.py derives for a device (test-only key derivation)."""
    secret = hashlib.sha256(b"kvitto-test-device:" + device_id.encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


class LinkBoard:
    """One board process on a flash image; survives SIGKILL/restart like a power cut."""

    def __init__(
        self,
        image: Path,
        host: str,
        port: int,
        device_id: str = "tag-0042",
        *,
        events: int = 0,
        interval_ms: int = 20,
        keepalive: int = 2,
        ack_timeout_ms: int = 5000,
        blocks: int = 256,
        backoff_max_ms: int = 1000,
        seed: int = 1,
    ):
        self.image = image
        self.host = host
        self.port = port
        self.device_id = device_id
        self.options = {
            "events": events,
            "interval": interval_ms,
            "keepalive": keepalive,
            "ack-timeout": ack_timeout_ms,
            "blocks": blocks,
            "backoff-max": backoff_max_ms,
            "seed": seed,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.boots = 0
        self.journaled = 0  # highest seq the board said was durable
        self._lock = threading.Lock()
        self._status = threading.Event()
        self._stderr = b""

    def start(self) -> None:
        binary = micropython_binary()
        if binary is None:
            raise RuntimeError("no micropython unix port")
        command = [binary, "-X", "heapsize=8M", str(BOARD_SCRIPT), str(self.image)]
        command += [self.host, str(self.port), self.device_id, ORG_PUBLIC.hex()]
        for key, value in self.options.items():
            command += [f"--{key}", str(value)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=micropython_env(),
        )
        self.boots += 1
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.process, ready), daemon=True).start()
        if not ready.wait(30):
            raise AssertionError(f"board did not boot: {self.tail()}")

    def _read(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            with self._lock:
                self.lines.append(line)
                if len(self.lines) > 2000:
                    del self.lines[:1000]
            if line.startswith("ready"):
                ready.set()
            elif line.startswith("journaled "):
                self.journaled = max(self.journaled, int(line.split()[1]))
            elif line.startswith("status "):
                self._status.set()
        if process.stderr is not None:
            self._stderr = process.stderr.read()

    def send(self, line: str) -> None:
        if self.process is None or self.process.stdin is None:
            raise RuntimeError("board not running")
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def status(self, timeout: float = 10.0) -> dict[str, int]:
        self._status.clear()
        self.send("status")
        if not self._status.wait(timeout):
            raise AssertionError(f"board did not answer status: {self.tail()}")
        with self._lock:
            line = next(x for x in reversed(self.lines) if x.startswith("status "))
        return {k: int(v) for k, v in (part.split("=") for part in line.split()[1:])}

    def wait_journaled(self, events: int) -> None:
        try:
            wait_for(lambda: self.journaled >= events, timeout=60 + events * 0.1, what="stream")
        except AssertionError as error:
            alive = "running" if self.alive() else f"exited {self.process and self.process.poll()}"
            raise AssertionError(f"{error}; board {alive}:\n{self.tail()}") from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def power_cut(self) -> None:
        """SIGKILL: no clean shutdown, no DISCONNECT (the broker publishes the will)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.power_cut()

    def tail(self) -> str:
        with self._lock:
            out = "\n".join(self.lines[-20:])
        return f"{out}\n--- stderr ---\n{self._stderr.decode(errors='replace')[-3000:]}"


@dataclass
class Tally:
    journaled: int
    stored: int
    lost: int
    duplicates: int
    gaps: int
    chain_broken: int
    faults_seen: int = 0  # connections (or boots) the board went through: the faults bit
    redelivered: int = 0  # copies the collector received and did not store again

    def line(self) -> str:
        return f"lost={self.lost} duplicates={self.duplicates} gaps={self.gaps}"


class CollectorRun:
    """The real collector (kvitto.collect.collector) on a SQLite store, with the test devices registered."""

    def __init__(self, store: Store, collector: Collector):
        self.store = store
        self.collector = collector

    @classmethod
    def start(cls, workdir: Path, broker_url: str, devices: list[str], **options) -> CollectorRun:
        store = open_store(f"sqlite:///{workdir}/kvitto.db")
        registry = Registry(store)
        registry.add_customer("c-1001")
        for device_id in devices:
            registry.add_device(device_id, "c-1001", "tag", device_public(device_id), "2026-09-01")
        options.setdefault("gap_grace", 0.5)
        options.setdefault("resend_interval", 2.0)
        collector = Collector(open_store(store.url), broker_url, ORG_SEED, **options)
        collector.start()
        wait_for(lambda: collector.stats().connected, what="collector connected")
        return cls(store, collector)

    def stored_seqs(self, device_id: str) -> list[int]:
        return [row[1] for row in self.store.events(device_id)]

    def tally(self, device_id: str, journaled: int) -> Tally:
        seqs = self.stored_seqs(device_id)
        distinct = set(seqs)
        expected = set(range(1, journaled + 1))
        rows = self.store.events(device_id)
        return Tally(
            redelivered=self.collector.stats().duplicates,
            journaled=journaled,
            stored=len(distinct),
            lost=len(expected - distinct),
            duplicates=len(seqs) - len(distinct),
            gaps=_gaps(sorted(distinct)),
            chain_broken=sum(1 for row in rows if row[5] == 0),
        )

    def wait_all(self, device_id: str, journaled: int, timeout: float = 120.0) -> Tally:
        """Wait until the collector stored 1..journaled, then count (never asserts itself)."""
        try:
            wait_for(
                lambda: len(self.stored_seqs(device_id)) >= journaled,
                timeout=timeout,
                interval=0.2,
                what=f"{journaled} events of {device_id} stored",
            )
        except AssertionError:
            pass
        return self.tally(device_id, journaled)

    def stop(self) -> None:
        self.collector.stop()
        self.collector.store.close()
        self.store.close()


def _gaps(seqs: list[int]) -> int:
    gaps = 0
    previous = 0
    for seq in seqs:
        if seq != previous + 1:
            gaps += 1
        previous = seq
    return gaps


# ---- fault scenarios (the tests run them with small counts, bench/faults.py with large) -----


def _board(workdir: Path, host: str, port: int, **options) -> LinkBoard:
    options.setdefault("interval_ms", 30)
    return LinkBoard(workdir / "flash.img", host, port, DEVICE, **options)


DEVICE = "tag-0042"


def broker_kills(workdir: Path, broker, kills: int, events: int, seed: int = 1) -> Tally:
    """`kills` times kill -9 the broker mid-stream and start it again on the same port."""
    rng = random.Random(seed)
    run = CollectorRun.start(workdir, broker.url, [DEVICE])
    board = _board(workdir, broker.host, broker.port, events=events)
    try:
        board.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 0.8))
            broker.kill()
            time.sleep(rng.uniform(0.05, 0.4))
            broker.start()
        board.wait_journaled(events)
        tally = run.wait_all(DEVICE, board.journaled, timeout=120)
        tally.faults_seen = board.status()["connects"]
        return tally
    finally:
        board.stop()
        run.stop()


def network_cuts(workdir: Path, broker, cuts: int, events: int, seed: int = 2) -> Tally:
    """`cuts` outages between board and broker through NetProxy: resets and black holes."""
    rng = random.Random(seed)
    run = CollectorRun.start(workdir, broker.url, [DEVICE])
    proxy = NetProxy(broker.host, broker.port).start()
    board = _board(workdir, proxy.host, proxy.port, events=events, keepalive=1)
    try:
        board.start()
        for number in range(cuts):
            time.sleep(rng.uniform(0.2, 0.8))
            if number % 2:
                proxy.blackhole()
            else:
                proxy.drop()
            time.sleep(rng.uniform(0.3, 1.5))
            proxy.restore()
        board.wait_journaled(events)
        tally = run.wait_all(DEVICE, board.journaled, timeout=120)
        tally.faults_seen = board.status()["connects"]
        return tally
    finally:
        board.stop()
        proxy.stop()
        run.stop()


def power_cuts(workdir: Path, broker, cuts: int, events: int, seed: int = 3) -> Tally:
    """`cuts` times SIGKILL the board at a random moment and boot it on the same flash."""
    rng = random.Random(seed)
    run = CollectorRun.start(workdir, broker.url, [DEVICE])
    board = _board(workdir, broker.host, broker.port, events=events)
    try:
        board.start()
        for _ in range(cuts):
            time.sleep(rng.uniform(0.1, 0.7))
            board.power_cut()
            board.start()
        board.wait_journaled(events)
        # What the board journaled is what its flash says now, not what it managed to print.
        status = board.status()
        tally = run.wait_all(DEVICE, status["next"] - 1, timeout=120)
        tally.faults_seen = status["boot"]
        return tally
    finally:
        board.stop()
        run.stop()


def long_outage(workdir: Path, broker, events: int, blocks: int = 256) -> tuple[Tally, bool]:
    """Journal `events` with the network down, restore it; (tally, stored in seq order)."""
    run = CollectorRun.start(workdir, broker.url, [DEVICE])
    proxy = NetProxy(broker.host, broker.port).start()
    proxy.drop()
    board = _board(workdir, proxy.host, proxy.port, keepalive=2, blocks=blocks)
    try:
        board.start()
        step = 500
        while board.journaled < events:
            target = board.journaled + min(step, events - board.journaled)
            board.send(f"append health {target - board.journaled}")
            wait_for(lambda t=target: board.journaled >= t, timeout=120, what="journaling")
        proxy.restore()
        tally = run.wait_all(DEVICE, events, timeout=60 + events * 0.05)
        rows = run.store.events(DEVICE)
        received = [row[4] for row in rows]
        in_order = all(a <= b for a, b in zip(received, received[1:]))
        return tally, in_order
    finally:
        board.stop()
        proxy.stop()
        run.stop()
