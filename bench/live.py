"""Live verdicts (issue #21): with a month of 10k customers in the store, events stored at a
steady rate, the time from an event stored to its customer's verdict updated, beside the time
of a full rebuild of the month, in one run.

    .venv/bin/python bench/live.py                   # 10k customers, 150 then 1,500 events/s
    .venv/bin/python bench/live.py --customers 2000 --rates 500 --seconds 10

Setup (timed apart, printed): a SQLite store with N customers (every 25th pair cohabiting), a
tag each, staff serving 5 customers each, an order each, and November 2026 so far: one visit a
day per customer for the days before `--day`, signed (cbor2 + cryptography, the wire format),
stored through the collector's intake (kvitto.collect.intake: verify, store once, chain, mark
stale), and the month's claims imported (kvitto.web.claims). Then the month is judged whole
(kvitto.web.judge.judge): the full rebuild.

Live, per rate of `--rates` one phase per judge of `--judges` (20 s each): this process stores
pre-signed arrive/depart events of day `--day` through the intake at the rate in ticks of
100 ms, while a second process runs a judge's round back to back: `live`, kvitto judge --live's
kvitto.web.live.LiveJudge (primed before the phase: its time and resident memory printed), or
`stateless`, kvitto.web.judge.rejudge_stale (the judge before it, reading every judged
customer's month again). Each phase adds its events to the month the next phase judges. An event's latency is from its batch's commit to
the end of the first round that began after that commit with its customer among those judged
(or, when the round running at the commit read its marks already, which shows as its
customer in it and not in the next round, that round's end). Prints
p50/p99/max, rounds, customers per round, the time per customer judged and the load average
over the phase, the phases side by side with the full rebuild; asserts nothing.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kvitto.collect.intake import Inbound, Intake, verify_batch
from kvitto.store.db import open_store
from kvitto.store.registry import Order, Registry
from kvitto.verify.workdays import STOCKHOLM
from kvitto.web.accounts import add_provider, assign_customers
from kvitto.web.claims import import_claims
from kvitto.web.judge import judge, provider_profile, rejudge_stale
from kvitto.web.live import LiveJudge

MONTH = "2026-11"
CLAIM_HEADER = (
    "claim_id,customer,staff,activity,start,end,registered_via,registered_at,approved_at,"
    "adjusted_at,double_staffing,count,reason,planned_start,planned_end,notified_at,proof"
)


class Device:
    """One tag's signing state: key, sequence, chain."""

    def __init__(self, number: int):
        self.id = f"tag-{number:05d}"
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(self.id.encode()).digest())
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.protected = cbor2.dumps({1: -8, 4: self.id.encode()}, canonical=True)
        self.seq, self.prev = 0, bytes(32)
        self.boot_at = datetime(2026, 11, 1, 5, tzinfo=STOCKHOLM).timestamp()

    def sign(self, kind: str, at: float, cred: bytes | None, x: dict[str, Any]) -> bytes:
        """A signed event at `at` (Unix s), its clock synchronised just before (age 0)."""
        self.seq += 1
        fields: dict[int, Any] = {0: 1, 1: self.id, 2: self.seq, 3: 1,
                                  4: int((at - self.boot_at) * 1000), 5: int(at),
                                  6: 0, 7: kind,
                                  9: self.prev, 10: x}  # fmt: skip
        if cred is not None:
            fields[8] = cred
        payload = cbor2.dumps(fields, canonical=True)
        signature = self.key.sign(cbor2.dumps(["Signature1", self.protected, b"", payload]))
        self.prev = hashlib.sha256(payload).digest()
        return cbor2.dumps(cbor2.CBORTag(18, [self.protected, {}, payload, signature]))


def credential(staff: str) -> bytes:
    return hashlib.sha256(b"cred:" + staff.encode()).digest()[:16]


def store_messages(intake: Intake, messages: list[bytes], received_at: int) -> None:
    for start in range(0, len(messages), 1000):
        chunk = messages[start : start + 1000]
        batch = [Inbound(m, f"bench {start + n}", None, received_at) for n, m in enumerate(chunk)]
        keys = intake.keys(intake.claimed_device(i.message) for i in batch)
        intake.store_batch(batch, verify_batch([(i.message, None) for i in batch], keys))


def build(url: str, root: Path, customers: int, day: int, seed: int) -> tuple[list[Device], Any]:
    """The store with the month so far; returns the devices (to sign on) and the rng."""
    rng = random.Random(seed)
    store = open_store(url)
    registry = Registry(store)
    devices = [Device(number) for number in range(customers)]
    with store.transaction():
        for number, device in enumerate(devices):
            household = f"h-{number // 2}" if number % 25 in (0, 1) else ""
            registry.add_customer(f"c-{number:05d}", household=household)
            registry.add_device(device.id, f"c-{number:05d}", "tag", device.public)
            registry.add_order(Order(f"c-{number:05d}", "omsorg", 3000, "2026-01-01", "", 0, 0))
        for staff in range(customers // 5 + 1):
            registry.add_credential(credential(f"s-{staff:05d}").hex(), f"s-{staff:05d}", "p-1",
                                    "badge")  # fmt: skip
        add_provider(store, "p-1", "huddinge")
    assign_customers(store, "p-1", [f"c-{n:05d}" for n in range(customers)])
    messages: list[bytes] = []
    claims = root / "claims.csv"
    with open(claims, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CLAIM_HEADER.split(","))
        for number, device in enumerate(devices):
            staff = f"s-{number // 5:05d}"
            for date in range(1, day + 1):
                # the clock synchronised every morning (today's too: the live events are)
                synced = datetime(2026, 11, date, 6, 30, tzinfo=STOCKHOLM).timestamp()
                messages.append(device.sign("clock_sync", synced, None, {"offset_ms": 0}))
                if date == day:
                    break
                # staff of 5 customers visit them at five hours of the day, never overlapping
                start = datetime(2026, 11, date, 8 + 2 * (number % 5), rng.randrange(0, 30),
                                 tzinfo=STOCKHOLM)  # fmt: skip
                end = start + timedelta(minutes=rng.choice((20, 30, 45)))
                cred = credential(staff)
                messages.append(device.sign("arrive", start.timestamp(), cred, {"via": "badge"}))
                messages.append(device.sign("depart", end.timestamp(), cred, {"via": "badge"}))
                claimed = end + timedelta(minutes=10 if rng.random() < 0.05 else 0)
                writer.writerow([f"k-{number:05d}-{date:02d}", f"c-{number:05d}", staff, "omsorg",
                                 start.isoformat(), claimed.isoformat(), "tag",
                                 claimed.isoformat(), claimed.isoformat(), "", "", "", "", "",
                                 "", "", ""])  # fmt: skip
    received = int(datetime(2026, 11, day, 6, tzinfo=STOCKHOLM).timestamp() * 1000)
    started = time.perf_counter()
    intake = Intake(store)
    intake.reload_keys()
    store_messages(intake, messages, received)
    stored = time.perf_counter() - started
    started = time.perf_counter()
    count = import_claims(store, "p-1", claims, provider_profile(store, "p-1"), received)
    imported = time.perf_counter() - started
    print(f"setup: {customers} customers, {len(messages)} events stored in {stored:.1f} s, "
          f"{count} claims imported in {imported:.1f} s")  # fmt: skip
    store.close()
    return devices, rng


def judge_loop(url: str, now_ms: int, kept: bool, ready: Any, stop: Any, results: Any) -> None:
    """The second process: `kvitto judge --live`'s round, back to back, until told to stop
    and nothing is stale; each round's (start, end, customers judged). `ready` once it has
    imported and opened the store (events stored before would wait for the start)."""
    store = open_store(url, create=False)
    live_judge = LiveJudge(store)
    if kept:
        before, started = _rss_mib(), time.perf_counter()
        count = live_judge.prime()
        print(f"  live judge primed: {count} events and the month's claims kept in "
              f"{time.perf_counter() - started:.1f} s, its process {before:.0f} → "
              f"{_rss_mib():.0f} MiB resident", flush=True)  # fmt: skip
    rounds: list[tuple[float, float, list[str]]] = []
    ready.set()
    while True:
        stopping = stop.is_set()
        started = time.time()
        judged = live_judge.round(now_ms) if kept else rejudge_stale(store, now_ms)
        customers = [c for names in judged.values() for c in names]
        if customers:
            rounds.append((started, time.time(), customers))
        elif stopping:
            break
        else:
            time.sleep(0.005)
    store.close()
    results.put(rounds)


def _rss_mib() -> float:
    """This process's resident memory (Linux /proc), MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def live(url: str, devices: list[Device], rng: Any, rate: int, seconds: float, now_ms: int,
         moment: float, kept: bool) -> tuple[dict[str, Any], float]:  # fmt: skip
    """One live phase at `rate` events/s; returns its figures and the device time reached."""
    total = int(rate * seconds)
    # today's visits, pre-signed: arrive and depart at a random customer, in time order
    events: list[tuple[str, bytes]] = []
    while len(events) < total:
        number = rng.randrange(len(devices))
        device, cred = devices[number], credential(f"s-{number // 5:05d}")
        moment += 1
        events.append((f"c-{number:05d}",
                       device.sign("arrive", moment, cred, {"via": "badge"})))  # fmt: skip
        events.append((f"c-{number:05d}",
                       device.sign("depart", moment + 600, cred, {"via": "badge"})))  # fmt: skip
    events = events[:total]
    store = open_store(url, create=False)
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    worker = spawn.Process(target=judge_loop, args=(url, now_ms, kept, ready, stop, results))
    worker.start()
    ready.wait()
    intake = Intake(store)
    intake.reload_keys()
    per_tick = max(1, rate // 10)
    stored: list[tuple[float, str]] = []
    load_before = os.getloadavg()[0]
    begun = time.time()
    for tick, offset in enumerate(range(0, len(events), per_tick)):
        chunk = events[offset : offset + per_tick]
        wait = begun + tick * 0.1 - time.time()
        if wait > 0:
            time.sleep(wait)
        received = int(time.time() * 1000)
        batch = [Inbound(m, "bench live", None, received) for _, m in chunk]
        keys = intake.keys(intake.claimed_device(i.message) for i in batch)
        intake.store_batch(batch, verify_batch([(i.message, None) for i in batch], keys))
        committed = time.time()
        stored += [(committed, customer) for customer, _ in chunk]
    elapsed = time.time() - begun
    stop.set()
    rounds = results.get()
    worker.join()
    store.close()
    latencies, running = [], 0
    ends = [end for _, end, _ in rounds]
    for committed, customer in stored:
        # rounds run back to back, each judging what is stale at its start: the round running
        # at the commit read the event if its customer is in it and not in the next round
        # (else the customer would still be stale then); otherwise (or when the next round has
        # the customer too, which may be this event's) the first round that began after it
        at = bisect.bisect_left(ends, committed)
        if (
            at < len(rounds)
            and rounds[at][0] < committed
            and customer in rounds[at][2]
            and (at + 1 == len(rounds) or customer not in rounds[at + 1][2])
        ):
            latencies.append(rounds[at][1] - committed)
            running += 1
            continue
        latencies.append(next(end - committed for start, end, customers in rounds[at:]
                              if start >= committed and customer in customers))  # fmt: skip
    sizes = [len(c) for _, _, c in rounds]
    times = [end - start for start, end, _ in rounds]
    figures = {
        "rate": rate, "stored": len(stored), "achieved": len(stored) / elapsed,
        "rounds": len(rounds), "size_median": statistics.median(sizes), "size_max": max(sizes),
        "round_median": statistics.median(times), "round_max": max(times),
        "ms_per_customer": 1000 * sum(times) / sum(sizes),
        "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        "max": max(latencies), "running": running,
        "load": (load_before, os.getloadavg()[0]),
    }  # fmt: skip
    return figures, moment + 3600


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join((__doc__ or "").split("\n\n")[0].split())
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rates", default="150,1500", help="events stored per second, each "
                        "a live phase of its own (comma-separated)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a live phase")
    parser.add_argument("--day", type=int, default=8, help="November's day that is today")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--judges", default="stateless,live", help="per rate, a phase for "
                        "each: 'live' (kvitto.web.live.LiveJudge, what kvitto judge --live "
                        "runs), 'stateless' (kvitto.web.judge.rejudge_stale: every round reads "
                        "its customers' months again, the judge before it)")  # fmt: skip
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        url = f"sqlite:///{root / 'kvitto.db'}"
        devices, rng = build(url, root, args.customers, args.day, args.seed)
        now_ms = int(datetime(2026, 11, args.day, 20, tzinfo=STOCKHOLM).timestamp() * 1000)
        store = open_store(url, create=False)
        started = time.perf_counter()
        findings = judge(store, "p-1", MONTH, now_ms)
        full = time.perf_counter() - started
        store.close()
        print(f"full rebuild (kvitto judge, one core): {full:.1f} s, {findings} findings")
        sys.stdout.flush()
        moment = datetime(2026, 11, args.day, 7, tzinfo=STOCKHOLM).timestamp()
        phases = []
        for rate in rates:
            for name in args.judges.split(","):
                figures, moment = live(url, devices, rng, rate, args.seconds, now_ms, moment,
                                       name == "live")  # fmt: skip
                phases.append({**figures, "judge": name})
    for f in phases:
        print(f"{f['judge']} judge at {f['rate']} events/s: {f['stored']} events stored "
              f"({f['achieved']:.0f}/s), {f['rounds']} judge rounds, customers per round "
              f"median {f['size_median']:.0f} max {f['size_max']}, round median "
              f"{f['round_median']:.2f} s max {f['round_max']:.2f} s, "
              f"{f['ms_per_customer']:.1f} ms per customer judged, load average "
              f"{f['load'][0]:.1f} → {f['load'][1]:.1f}")  # fmt: skip
    print("event stored → verdict updated (goal p99 ≤ 2 s at 1,500 events/s), side by side:")
    for f in phases:
        print(f"  {f['judge']:>9} {f['rate']:>5} events/s: p50 {f['p50']:.2f} s, p99 "
              f"{f['p99']:.2f} s, "
              f"max {f['max']:.2f} s"
              + (f" ({f['running']} taken by the round running at their commit)"
                 if f["running"] else ""))  # fmt: skip
    print(f"  full rebuild of the month: {full:.1f} s")


if __name__ == "__main__":
    main()
