"""Collector throughput against the ceiling of its design on this machine, side by side, and
tap-to-stored latency at a steady rate.

    .venv/bin/python bench/collector.py                      # defaults: 40,000 events, 1,500/s
    .venv/bin/python bench/collector.py --events 100000 --workers 0,2 --sqlite-events 1000000
    .venv/bin/python bench/collector.py --sqlite-events 0 --rate 0 --profile 30

One broker, one backlog: persistent sessions for a bare paho subscriber, for the ceiling of
each process layout and for each collector configuration are subscribed first, then the signed
events are published once, so the broker queues the same messages for each. Each session then
drains its backlog alone: the raw rate is what paho can take from this broker; the ceiling
(bench/collector_ceiling.py) is the least this design must do per event in the collector's
process layout: paho QoS 1 receive with manual acknowledgement, `cryptography` Ed25519 verify
(inline, or in spawned worker processes), the events row INSERT and its COMMIT (WAL,
synchronous=FULL) before the PUBACKs; the collector rate is events verified (every check of
FORMATS.md), stored once with their chain checked, PUBACKed after the commit and acknowledged
to the devices with signed acks. Each collector is drained right after the ceiling of its
layout, and prints `ratio to its ceiling` twice: of the rates, and of the CPU time per event
(collector, its workers and the broker): on a machine others share, the second moves less.

Then tap-to-stored: a publisher process of its own sends events of --latency-devices devices
at a steady --rate to a collector configured as `kvitto collect` is by default, and each
event's publish time is matched with the commit that stored it (CLOCK_MONOTONIC, p50/p99/max).
Then the store alone: N events into SQLite, rate and bytes per event (events carry random
signature bytes there: verification is measured above). `--profile N` runs each collector's
pipeline and paho threads under cProfile and prints the top N functions by own time.

It also prints the single-core verify rate and the bounds it implies against the raw rate:
cores x verify rate / raw is the best ratio a collector that checks every signature one by one
could reach, if receiving, storing and the broker cost nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import multiprocessing
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
from collector_ceiling import Ceiling, paced_publish
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from kvitto.collect.collector import Collector
from kvitto.collect.intake import Inbound, Intake, verify_batch
from kvitto.evidence.cose import sig_structure, split_sign1
from kvitto.store.db import open_store
from kvitto.store.registry import Registry

ORG_SEED = bytes(range(32))
CREDENTIAL = bytes.fromhex("198f61fa6e666ca15e852132fe1190e3")


def device_key(device_id: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(device_id.encode()).digest())


def payloads(device_id: str, count: int) -> list[bytes]:
    """The chained payloads of one device's first `count` events (FORMATS.md §1)."""
    prev = bytes(32)
    out = []
    for seq in range(1, count + 1):
        fields = {
            0: 1, 1: device_id, 2: seq, 3: 1, 4: seq * 1000, 5: 1_790_000_000 + seq, 6: 30,
            7: "arrive" if seq % 2 else "depart", 8: CREDENTIAL, 9: prev, 10: {"via": "badge"},
        }  # fmt: skip
        payload = cbor2.dumps(fields, canonical=True)
        prev = hashlib.sha256(payload).digest()
        out.append(payload)
    return out


def envelope(device_id: str, payload: bytes, signature: bytes) -> bytes:
    protected = cbor2.dumps({1: -8, 4: device_id.encode()}, canonical=True)
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))


def signed_events(job: tuple[str, int]) -> list[bytes]:
    device_id, count = job
    key = device_key(device_id)
    protected = cbor2.dumps({1: -8, 4: device_id.encode()}, canonical=True)
    return [
        envelope(device_id, p, key.sign(sig_structure(protected, p)))
        for p in payloads(device_id, count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path, inflight: int):
        self.port = free_port()
        config = workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"max_queued_messages 0\nmax_inflight_messages {inflight}\n"
            f"log_dest none\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(config)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def raw_session(port: int, client_id: str, on_message=None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("kvitto/v1/+/evt", 1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    if on_message:
        client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("raw subscriber could not subscribe")
    return client


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> float:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    info = None
    for number, (device_id, message) in enumerate(messages, start=1):
        info = client.publish(f"kvitto/v1/{device_id}/evt", message, qos=1)
        if number % 20000 == 0:  # paho's message ids are 16 bits: keep fewer outstanding
            info.wait_for_publish(600)
    if info is not None:
        info.wait_for_publish(600)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


class CpuMeter:
    """CPU seconds spent by this process (and its worker children) and by the broker over a
    phase: unlike the rates, this does not move when other work shares the machine."""

    def __init__(self, broker_pid: int):
        self.broker_pid = broker_pid
        self.own = self.children = self.broker = 0.0
        self._start: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        out = {}
        for pid in {os.getpid(), self.broker_pid} | child_pids():
            try:
                out[pid] = cpu_seconds(pid)
            except OSError:
                pass
        return out

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        """Call while worker processes still run (their CPU time is gone once they exit)."""
        for pid, seconds in self._sample().items():
            spent = seconds - self._start.get(pid, 0.0)
            if pid == os.getpid():
                self.own += spent
            elif pid == self.broker_pid:
                self.broker += spent
            else:
                self.children += spent


def drain_raw(broker: Broker, total: int) -> tuple[float, CpuMeter]:
    count = 0
    finished = threading.Event()
    last = [0.0]

    def on_message(client, userdata, message):
        nonlocal count
        count += 1
        if count == total:
            last[0] = time.perf_counter()
            finished.set()

    meter = CpuMeter(broker.process.pid)
    meter.start()
    started = time.perf_counter()
    client = raw_session(broker.port, "bench-raw", on_message)
    if not finished.wait(600):
        raise RuntimeError(f"raw subscriber got {count} of {total}")
    meter.stop()
    client.disconnect()
    client.loop_stop()
    return total / (last[0] - started), meter


def drain_ceiling(
    broker: Broker, workdir: Path, name: str, workers: int, total: int, keys: dict[str, bytes]
) -> tuple[float, CpuMeter]:
    ceiling = Ceiling(str(workdir / f"{name}.db"), broker.port, name, workers, keys, total)
    meter = CpuMeter(broker.process.pid)
    meter.start()
    started = time.perf_counter()
    ceiling.start()
    if not ceiling.done.wait(600):
        raise RuntimeError(f"ceiling {name} stored {ceiling.stored} of {total}")
    elapsed = time.perf_counter() - started
    meter.stop()
    ceiling.stop()
    return total / elapsed, meter


def profiled(target, profile: cProfile.Profile):
    def run(*args, **kwargs):
        return profile.runcall(target, *args, **kwargs)

    return run


def print_profile(title: str, profile: cProfile.Profile, lines: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    body = out.getvalue().strip().splitlines()
    start = next((n for n, line in enumerate(body) if "ncalls" in line), 0)
    print(f"  profile, {title} (sorted by own time):")
    for line in body[start:]:
        print(f"    {line}")


def drain_collector(
    broker: Broker,
    workdir: Path,
    name: str,
    workers: int,
    total: int,
    max_batch: int,
    profile_lines: int = 0,
) -> tuple[float, CpuMeter]:
    store = open_store(f"sqlite:///{workdir}/{name}.db")
    collector = Collector(
        store, broker.url, ORG_SEED, client_id=name, workers=workers, max_batch=max_batch
    )
    profiles: dict[str, cProfile.Profile] = {}
    thread_main = mqtt.Client._thread_main
    if profile_lines:
        # cProfile sees one thread: one profile each for the pipeline and paho's network thread.
        profiles = {
            "pipeline thread": cProfile.Profile(),
            "paho network thread": cProfile.Profile(),
        }
        collector._run = profiled(collector._run, profiles["pipeline thread"])
        mqtt.Client._thread_main = profiled(thread_main, profiles["paho network thread"])
    done = threading.Event()

    # Told by the collector after each batch, rather than polled: a polling loop here would
    # take the GIL from the collector's own threads.
    def on_batch(outcome) -> None:
        if collector.stats().stored >= total:
            done.set()

    collector.on_batch = on_batch
    meter = CpuMeter(broker.process.pid)
    meter.start()
    started = time.perf_counter()
    collector.start()
    while not done.wait(0.2):
        if collector.error:
            raise RuntimeError(f"collector failed: {collector.error!r}")
    elapsed = time.perf_counter() - started
    meter.stop()
    stats = collector.stats()
    collector.stop()
    mqtt.Client._thread_main = thread_main
    store.close()
    if stats.rejected or stats.duplicates:
        print(f"  note: {name} rejected {stats.rejected}, duplicates {stats.duplicates}")
    for title, profile in profiles.items():
        print_profile(f"{name}, {title}", profile, profile_lines)
    return total / elapsed, meter


def prepare_store(workdir: Path, name: str, device_ids: list[str]) -> None:
    with open_store(f"sqlite:///{workdir}/{name}.db") as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        for device_id in device_ids:
            key = device_key(device_id).public_key().public_bytes_raw()
            registry.add_device(device_id, "c-1001", "tag", key, "2026-09-01")


def subscribe_collector(broker: Broker, workdir: Path, name: str) -> None:
    """Create the collector's persistent session, so the backlog is queued for it too."""
    store = open_store(f"sqlite:///{workdir}/{name}.db")
    collector = Collector(store, broker.url, ORG_SEED, client_id=name)
    collector.start()
    collector.wait_ready()
    collector.stop()
    store.close()


def bench_mqtt(args: argparse.Namespace, workdir: Path) -> None:
    device_ids = [f"tag-{n:04d}" for n in range(args.devices)]
    per_device = args.events // args.devices
    total = per_device * args.devices
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        streams = list(pool.map(signed_events, [(d, per_device) for d in device_ids]))
    print(
        f"signed {total} events of {args.devices} devices in {time.perf_counter() - started:.1f} s"
    )
    # Interleave devices, as a broker sees many doors at once.
    messages = [
        (device_ids[d], streams[d][i]) for i in range(per_device) for d in range(args.devices)
    ]
    size = sum(len(m) for _, m in messages) / total
    broker = Broker(workdir, args.inflight)
    try:
        configs = [(w, b) for w in args.workers for b in args.max_batch]
        rounds = range(1, args.rounds + 1)
        raw = raw_session(broker.port, "bench-raw")
        raw.disconnect()
        raw.loop_stop()
        for r in rounds:
            for workers, max_batch in configs:
                name = f"bench_collector_w{workers}_b{max_batch}_r{r}"
                prepare_store(workdir, name, device_ids)
                subscribe_collector(broker, workdir, name)
            for workers in args.workers:
                prepare_store(workdir, f"bench_ceiling_w{workers}_r{r}", device_ids)
                session = raw_session(broker.port, f"bench_ceiling_w{workers}_r{r}")
                session.disconnect()
                session.loop_stop()
        elapsed = publish_all(broker.port, messages)
        print(f"published {total} events ({size:.0f} bytes each) at {total / elapsed:,.0f}/s")
        raw_rate, raw_cpu = drain_raw(broker, total)
        print(
            f"raw paho QoS 1 delivery: {raw_rate:,.0f} events/s; CPU per event: subscriber "
            f"{raw_cpu.own / total * 1e6:.0f} us, broker {raw_cpu.broker / total * 1e6:.0f} us"
        )
        cores = os.cpu_count() or 1
        verify_us, signature_us = verify_cost(messages, device_ids)
        verify_rate = 1e6 / verify_us
        print(
            f"single-core verify: {verify_rate:,.0f} events/s ({verify_us:.0f} us each: "
            f"COSE/CBOR checks and Ed25519, the signature alone {signature_us:.0f} us) -> "
            f"bound {cores} cores x verify rate / raw = {cores * verify_rate / raw_rate:.2f} "
            f"(signature alone {cores * 1e6 / signature_us / raw_rate:.2f})"
        )
        # Tighter: the collector receives each event through paho too (the raw subscriber's
        # whole cost), so both cores at best divide receive + verify between them.
        receive_us = raw_cpu.own / total * 1e6
        bound = cores * 1e6 / (receive_us + verify_us)
        print(
            f"receive {receive_us:.0f} us + verify {verify_us:.0f} us on {cores} cores -> at most "
            f"{bound:,.0f} events/s, ratio bound {bound / raw_rate:.2f} (before storing, "
            f"acknowledging and the broker's own CPU)"
        )
        sodium_us = libsodium_cost(messages, device_ids)
        if sodium_us is not None:
            # The fastest Ed25519 verifier this machine has (libsodium, through PyNaCl if it
            # is installed; kvitto does not use it): the bound if it replaced OpenSSL's.
            best = cores * 1e6 / (receive_us + verify_us - signature_us + sodium_us)
            print(
                f"libsodium signature check: {sodium_us:.0f} us (OpenSSL {signature_us:.0f} us) "
                f"-> with it, ratio bound {best / raw_rate:.2f} (same terms as above)"
            )
        keys = {d: device_key(d).public_key().public_bytes_raw() for d in device_ids}
        ratios: dict[tuple[int, int], list[tuple[float, float]]] = {c: [] for c in configs}
        for r in rounds:
            ceilings: dict[int, tuple[float, float]] = {}  # workers -> rate, CPU us per event
            for workers, max_batch in configs:
                if workers not in ceilings:
                    # The ceiling of this layout, drained just before the collector: the two
                    # rates meet the same load on the machine as nearly as one run allows.
                    name = f"bench_ceiling_w{workers}_r{r}"
                    ceiling, cpu = drain_ceiling(broker, workdir, name, workers, total, keys)
                    ceiling_us = (cpu.own + cpu.children + cpu.broker) / total * 1e6
                    ceilings[workers] = (ceiling, ceiling_us)
                    print(
                        f"[{r}] ceiling workers={workers} (paho QoS 1 receive, Ed25519 verify, "
                        f"events INSERT + commit, PUBACK): {ceiling:,.0f} events/s; CPU per "
                        f"event: {(cpu.own + cpu.children) / total * 1e6:.0f} us "
                        f"({cpu.children / total * 1e6:.0f} in workers), broker "
                        f"{cpu.broker / total * 1e6:.0f} us; load {os.getloadavg()[0]:.1f}"
                    )
                name = f"bench_collector_w{workers}_b{max_batch}_r{r}"
                rate, cpu = drain_collector(
                    broker, workdir, name, workers, total, max_batch, args.profile
                )
                own_us = (cpu.own + cpu.children) / total * 1e6
                broker_us = cpu.broker / total * 1e6
                ceiling_rate, ceiling_us = ceilings[workers]
                # Two ratios: of the rates (moved by whatever else runs on the machine at each
                # moment) and of the CPU time per event, collector and broker (moved less).
                by_rate, by_cpu = rate / ceiling_rate, ceiling_us / (own_us + broker_us)
                ratios[(workers, max_batch)].append((by_rate, by_cpu))
                print(
                    f"[{r}] collector workers={workers} max_batch={max_batch}: {rate:,.0f} "
                    f"events/s verified and stored, ratio to its ceiling={by_rate:.2f}, by CPU "
                    f"per event {by_cpu:.2f} (to raw {rate / raw_rate:.2f}); CPU per event: "
                    f"collector {own_us:.0f} us ({cpu.children / total * 1e6:.0f} in workers), "
                    f"broker {broker_us:.0f} us; load {os.getloadavg()[0]:.1f}"
                )
        for (workers, max_batch), pairs in ratios.items():
            print(
                f"collector workers={workers} max_batch={max_batch}: median ratio to its ceiling "
                f"over {len(pairs)} rounds: {statistics.median(p[0] for p in pairs):.2f} by rate, "
                f"{statistics.median(p[1] for p in pairs):.2f} by CPU per event (goal >= 0.9)"
            )
    finally:
        broker.stop()


def bench_latency(args: argparse.Namespace, workdir: Path) -> None:
    """Tap-to-stored at a steady rate: each event's publish (CLOCK_MONOTONIC, in a publisher
    process of its own) to the return of the commit that stored it, in one collector
    configured as `kvitto collect` is by default (2 verify workers)."""
    devices = args.latency_devices
    per_device = max(1, int(args.rate * args.latency_seconds) // devices)
    device_ids = [f"door-{n:04d}" for n in range(devices)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        streams = list(pool.map(signed_events, [(d, per_device) for d in device_ids]))
    messages = [
        (device_ids[d], i + 1, streams[d][i]) for i in range(per_device) for d in range(devices)
    ]
    total = len(messages)
    broker = Broker(workdir, args.inflight)
    name = "bench_latency"
    prepare_store(workdir, name, device_ids)
    store = open_store(f"sqlite:///{workdir}/{name}.db")
    collector = Collector(store, broker.url, ORG_SEED, client_id=name, workers=2)
    committed: dict[tuple[str, int], float] = {}
    done = threading.Event()

    def on_batch(outcome) -> None:
        for row in outcome.stored_rows:
            committed[(row.device, row.seq)] = outcome.committed_at
        if len(committed) >= total:
            done.set()

    collector.on_batch = on_batch
    try:
        collector.start()
        collector.wait_ready()
        receiving, sending = multiprocessing.get_context("spawn").Pipe(duplex=False)
        publisher = multiprocessing.get_context("spawn").Process(
            target=paced_publish, args=(broker.port, messages, args.rate, sending)
        )
        load = os.getloadavg()[0]
        publisher.start()
        published, achieved = receiving.recv()
        publisher.join()
        if not done.wait(120):
            raise RuntimeError(f"collector stored {len(committed)} of {total}")
    finally:
        collector.stop()
        store.close()
        broker.stop()
    latencies = sorted(committed[key] - at for key, at in published.items())
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(
        f"tap-to-stored at a steady {achieved:,.0f} events/s ({total} events of {devices} "
        f"devices, load {load:.1f} at the start): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms (publish to commit, goal p99 <= 500 ms)"
    )


def libsodium_cost(messages: list[tuple[str, bytes]], device_ids: list[str]) -> float | None:
    """Microseconds per Ed25519 check in libsodium (crypto_sign_verify_detached, best of
    three over the same sample as verify_cost), or None without PyNaCl."""
    try:
        from nacl.bindings import crypto_sign_open  # pyright: ignore[reportMissingImports]
    except ImportError:
        return None
    keys = {d: device_key(d).public_key().public_bytes_raw() for d in device_ids}
    signed = []
    for device, message in messages[:2000]:
        _, protected, payload, signature = split_sign1(message)
        signed.append((keys[device], signature + sig_structure(protected, payload)))
    best = float("inf")
    for _ in range(3):
        before = time.perf_counter()
        for key, signed_message in signed:
            crypto_sign_open(signed_message, key)  # raises on a bad signature
        best = min(best, time.perf_counter() - before)
    return best / len(signed) * 1e6


def verify_cost(messages: list[tuple[str, bytes]], device_ids: list[str]) -> tuple[float, float]:
    """Microseconds per event on one core, best of three: the collector's whole verification
    (verify_batch) and the Ed25519 check alone (cryptography, key object made once)."""
    sample = [(m, d) for d, m in messages[:2000]]
    keys = {d: device_key(d).public_key().public_bytes_raw() for d in device_ids}
    objects = {d: Ed25519PublicKey.from_public_bytes(k) for d, k in keys.items()}
    signed = []
    for message, device in sample:
        _, protected, payload, signature = split_sign1(message)
        signed.append((objects[device], signature, sig_structure(protected, payload)))
    whole = alone = float("inf")
    for _ in range(3):
        before = time.perf_counter()
        verify_batch(sample, keys)
        whole = min(whole, time.perf_counter() - before)
        before = time.perf_counter()
        for key, signature, data in signed:
            key.verify(signature, data)
        alone = min(alone, time.perf_counter() - before)
    return whole / len(sample) * 1e6, alone / len(sample) * 1e6


def bench_sqlite(args: argparse.Namespace, workdir: Path) -> None:
    count = args.sqlite_events
    device_ids = [f"tag-{n:04d}" for n in range(max(1, args.devices))]
    per_device = count // len(device_ids)
    count = per_device * len(device_ids)
    url = f"sqlite:///{workdir}/million.db"
    prepare_store(workdir, "million", device_ids)
    store = open_store(url)
    intake = Intake(store)
    intake.reload_keys()
    stored = 0
    started = time.perf_counter()
    build = 0.0
    for device_id in device_ids:
        before = time.perf_counter()
        batch_payloads = payloads(device_id, per_device)
        hashes = [hashlib.sha256(p).digest() for p in batch_payloads]
        prevs = [bytes(32), *hashes[:-1]]
        build += time.perf_counter() - before
        for start in range(0, per_device, args.batch):
            before = time.perf_counter()
            chunk = batch_payloads[start : start + args.batch]
            batch = [
                Inbound(envelope(device_id, p, os.urandom(64)), "bench", device_id, 0)
                for p in chunk
            ]
            results = [
                ("ok", device_id, start + i + 1, 1, (start + i + 1) * 1000, 1_790_000_001 + i,
                 30, "arrive", CREDENTIAL, hashes[start + i], prevs[start + i])
                for i in range(len(chunk))
            ]  # fmt: skip
            build += time.perf_counter() - before
            stored += intake.store_batch(batch, results).stored
    elapsed = time.perf_counter() - started - build
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = sum(p.stat().st_size for p in workdir.glob("million.db*"))
    print(
        f"sqlite: {stored:,} events stored in {elapsed:.1f} s = {stored / elapsed:,.0f} events/s "
        f"(batches of {args.batch}, chain checked), {size / stored:.0f} bytes/event on disk"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=40000, help="events through MQTT")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument(
        "--workers", default="0,2", help="comma-separated collector verify-process counts"
    )
    parser.add_argument(
        "--max-batch", default="1000", help="comma-separated collector batch limits"
    )
    parser.add_argument("--inflight", type=int, default=1000, help="mosquitto max_inflight")
    parser.add_argument(
        "--rounds", type=int, default=3, help="ceiling/collector pairs drained per layout"
    )
    parser.add_argument("--sqlite-events", type=int, default=200000, help="0 to skip")
    parser.add_argument("--rate", type=float, default=1500.0, help="latency: events/s, 0 skips")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-devices", type=int, default=500)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="cProfile each collector's threads under the load, print the top N functions",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.max_batch = [int(b) for b in args.max_batch.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="kvitto-bench-"))
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()}")
        if args.events:
            bench_mqtt(args, workdir)
        if args.rate:
            bench_latency(args, workdir)
        if args.sqlite_events:
            bench_sqlite(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
