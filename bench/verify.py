"""Verification at municipal scale: rules + billing for a synthetic month, and the signature
re-check rate of an offline case bundle against raw `cryptography` verification.

    .venv/bin/python bench/verify.py                 # 1k, 10k, 50k customers, 20k events
    .venv/bin/python bench/verify.py --only rules --customers 1000 50000 --jobs 2
    .venv/bin/python bench/verify.py --customers 1000 10000 --events 5000
    .venv/bin/python bench/verify.py --profile huddinge
    .venv/bin/python bench/verify.py --only signatures --events 20000 --rounds 9
    .venv/bin/python bench/verify.py --audit-only --events 20000    # the offline audit alone
    .venv/bin/python bench/verify.py --only overlapping --overlapping 1000000

Part 3 (`--overlapping N`, issue #25.6) writes a case bundle whose claims.csv is the demo
day's 12 claims repeated to N rows (every row overlapping its copies) and times
`verify_case` on it: as shipped (the file is refused while it is read: more rows for one
customer-day than a day holds), and with that bound lifted for `--uncapped` rows, to show the
rules' own work stays linear (sort and sweep, never pairwise).

Part 1 (issue #21) judges a synthetic month of N customers (~4 visits a day, a few
cohabiting households, some missing and short evidence) streamed household by household
through kvitto.verify.month.judge_month, each unit made in the process that judges it (as a
reader of the store would), on one process and on `--jobs` (default every core), each run in a
fresh process: seconds and ms per customer (building the month included), peak memory (this
process's peak plus jobs × the largest worker's: a bound on all of them at once), the speed-up
1/N and a hash of the findings (equal for 1 and N). Part 2 signs a bundle with cbor2 +
cryptography, writes it, and compares kvitto's read + verify + pair (build_evidence) with a
bare loop of `Ed25519PublicKey.verify` over the same messages and keys, all on one core, by CPU
time, in rounds interleaved part by part of the bundle (the machine is shared); then the
offline audit on `--jobs` processes (kvitto.verify.audit) against raw verify per core × jobs
and against raw verify on `--jobs` processes at once, by wall clock and by CPU time of all
processes (`--audit-only`: this alone). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import cache, partial
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kvitto.evidence.cose import read_messages, split_sign1
from kvitto.evidence.events import EventVerifier
from kvitto.verify.audit import audit_cores
from kvitto.verify.case import Claim, Credential, Customer, Device, Order, Registry
from kvitto.verify.month import Flow, Month, Unit, judge_month
from kvitto.verify.rules import load_profile
from kvitto.verify.visits import Evidence, Presence, build_evidence, read_decoded
from kvitto.verify.workdays import STOCKHOLM

UTC = timezone.utc
ACTIVITY = {"norrtalje": "226", "huddinge": "omsorg", "upplands-bro": "omsorg",
            "haninge": "omsorg", "norrkoping": "omsorg"}  # fmt: skip
VISIT_HOURS = (8, 11, 14, 18)
MINUTES = [timedelta(minutes=n) for n in range(60)]
TWO_HOURS = timedelta(hours=2)


@cache
def _slot(day: int, hour: int) -> datetime:
    """October's `day` at `hour` Stockholm time, in UTC (made once, not once per visit)."""
    return datetime(2026, 10, day, hour, tzinfo=STOCKHOLM).astimezone(UTC)


def synthetic_month(customers: int, activity: str, seed: int = 7, first: int = 0):
    """(registry, orders, claims, evidence) for October 2026, ~4 visits a day per customer.

    Claims share equal times as kvitto.verify.case_csv.parse_claims makes them share (one object per
    distinct value), so memory is what `kvitto verify` holds for such a claims.csv."""
    rng = random.Random(seed)
    times: dict[datetime, datetime] = {}

    def shared(moment: datetime) -> datetime:
        return times.setdefault(moment, moment)

    registry = Registry()
    orders: list[Order] = []
    claims: list[Claim] = []
    evidence = Evidence()
    # One staff member per customer and a shared pool for households: no one is in two
    # places at once, so findings are the deliberate deviations below, not T2 noise.
    for number in range(first, first + customers):
        cred = hashlib.sha256(f"s-{number}".encode()).hexdigest()[:32]
        registry.credentials[cred] = Credential(cred, f"s-{number}", "p-1", "badge")
    creds = list(registry.credentials.values())
    key = bytes(32)
    for number in range(first, first + customers):
        customer = f"c-{number}"
        household = f"h-{number // 2}" if number % 50 < 2 else ""
        registry.customers[customer] = Customer(customer, household)
        device = f"tag-{number}"
        registry.devices[device] = Device(device, customer, "tag", key)
        orders.append(Order(customer, activity, 60 * 4 * 31, datetime(2026, 1, 1).date(), None))
        presences = []
        credential = creds[number - first]
        staff, cred_id = credential.staff, credential.id
        random_ = rng.random
        for day in range(1, 32):
            for slot, hour in enumerate(VISIT_HOURS):
                # the visit hours are far from 02:00–03:00: minutes add alike in UTC and local
                start = _slot(day, hour) + MINUTES[int(random_() * 40)]
                end = start + MINUTES[15 + int(random_() * 35)]
                roll = random_()
                claims.append(
                    Claim(
                        f"k-{number}-{day}-{slot}",
                        customer,
                        staff,
                        activity,
                        shared(start),
                        shared(end + MINUTES[5] if roll < 0.05 else end),
                        "tag",
                        shared(end),
                        shared(end + TWO_HOURS),
                    )  # fmt: skip
                )
                if roll > 0.02:  # 2 % of visits without a tap
                    presences.append(
                        Presence(
                            customer,
                            device,
                            "tag",
                            "visit",
                            cred_id,
                            staff,
                            "p-1",
                            True,
                            start - MINUTES[1],
                            end + MINUTES[1],
                            True,
                        )  # fmt: skip
                    )
        evidence.presences.extend(presences)
        evidence.by_customer[customer] = presences
    return registry, orders, claims, evidence


def customer_unit(number: int, activity: str, seed: int = 7) -> Unit:
    """Customer `number`'s month, as synthetic_month makes it for one customer (its own staff
    member and tag; the even customer of a pair among every 50 shares a household with the
    next): made where it is judged, as a worker reading its customers from a store would."""
    registry, orders, claims, evidence = synthetic_month(1, activity, seed=seed + number,
                                                         first=number)  # fmt: skip
    customer = f"c-{number}"
    return Unit((customer,), claims, orders, {customer: evidence.by_customer[customer]})


def month_registry(customers: int) -> Registry:
    """What every unit shares: the customers (with their households), tags and credentials."""
    registry = Registry()
    for number in range(customers):
        cred = hashlib.sha256(f"s-{number}".encode()).hexdigest()[:32]
        registry.credentials[cred] = Credential(cred, f"s-{number}", "p-1", "badge")
        household = f"h-{number // 2}" if number % 50 < 2 else ""
        registry.customers[f"c-{number}"] = Customer(f"c-{number}", household)
        registry.devices[f"tag-{number}"] = Device(f"tag-{number}", f"c-{number}", "tag",
                                                   bytes(32))  # fmt: skip
    return registry


def _households(customers: int, activity: str) -> Iterator[Any]:
    """The month's units, lazily: a household's two customers in one unit, others alone."""
    number = 0
    while number < customers:
        if number % 50 == 0 and number + 1 < customers:
            yield partial(household_unit, number, activity)
            number += 2
        else:
            yield partial(customer_unit, number, activity)
            number += 1


def household_unit(number: int, activity: str) -> Unit:
    first, second = customer_unit(number, activity), customer_unit(number + 1, activity)
    return Unit(first.customers + second.customers, first.claims + second.claims,
                first.orders + second.orders, {**first.presences, **second.presences})  # fmt: skip


def rules_month(
    count: int, profile_name: str, jobs: int
) -> tuple[float, int, int, int, str, float]:
    """(seconds, claims, findings, peak RSS of all processes in bytes, findings hash, CPU
    seconds of all processes) of
    judging `count` customers streamed household by household over `jobs` processes, each unit
    made in the process that judges it. Run in a fresh process: the peak is this count's alone;
    the sum of this process's peak and `jobs` times the largest worker's bounds all of them."""
    profile = load_profile(profile_name)
    activity = ACTIVITY[profile_name]
    registry = month_registry(count)
    flow = Flow()
    digest = hashlib.sha256()
    started = time.perf_counter()
    claims, findings = 0, 0
    for verdict in judge_month(Month(profile, 2026, 10, registry),
                               _households(count, activity), jobs, flow=flow):  # fmt: skip
        claims += verdict.claims
        findings += len(verdict.findings)
        for _, finding in verdict.findings:
            digest.update(repr(finding).encode())
    elapsed = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = (own.ru_maxrss + (workers.ru_maxrss * jobs if jobs > 1 else 0)) * 1024  # Linux: kB
    cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    return elapsed, claims, findings, peak, digest.hexdigest()[:12], cpu


def bench_rules(counts: list[int], profile_name: str, jobs: int) -> None:
    """Judge each count streamed unit by unit, on one process and on `jobs`, each run in a
    fresh process (side by side, the machine is shared). `cpu s`: CPU time of all processes;
    `cpu/N` is the wall time N idle cores would need at best (the machine is shared)."""
    print(f"rules + billing, profile {profile_name}, October 2026, 4 visits a day, streamed "
          f"household by household; jobs=1 and jobs={jobs} ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"{'customers':>10} {'jobs':>4} {'claims':>9} {'findings':>9} {'seconds':>8} "
          f"{'ms/cust':>8} {'× 1st':>6} {'peak MB':>8} {'kB/cust':>8} {'1/N':>5} "
          f"{'cpu s':>7} {'cpu/N':>6}  hash")  # fmt: skip
    first: dict[int, float] = {}
    spawn = multiprocessing.get_context("spawn")
    for count in counts:
        one = 0.0
        for run_jobs in sorted({1, jobs}):
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                elapsed, claim_count, finding_count, peak, digest, cpu = pool.submit(
                    rules_month, count, profile_name, run_jobs
                ).result()
            per_customer = elapsed / count * 1e3
            first.setdefault(run_jobs, per_customer)
            one = one or elapsed
            print(f"{count:>10} {run_jobs:>4} {claim_count:>9} {finding_count:>9} "
                  f"{elapsed:>8.2f} {per_customer:>8.2f} {per_customer / first[run_jobs]:>6.2f} "
                  f"{peak / 2**20:>8.0f} {peak / count / 1024:>8.1f} {one / elapsed:>5.2f} "
                  f"{cpu:>7.1f} {cpu / run_jobs:>6.1f}  {digest}")  # fmt: skip
            sys.stdout.flush()


def signed_bundle(root: Path, events: int, parts: int = 1) -> tuple[Registry, list[Path]]:
    """A CBOR-sequence bundle of `events` arrive/depart events over 50 devices, written as
    `parts` evidence files of whole device streams (the same events however many parts)."""
    registry = Registry()
    devices = 50
    keys = {}
    for number in range(devices):
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"d%d" % number).digest())
        device = f"tag-{number:04d}"
        keys[device] = key
        registry.customers[f"c-{number}"] = Customer(f"c-{number}")
        registry.devices[device] = Device(
            device, f"c-{number}", "tag",
            key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )  # fmt: skip
    cred = bytes.fromhex(hashlib.sha256(b"s-1").hexdigest()[:32])
    registry.credentials[cred.hex()] = Credential(cred.hex(), "s-1", "p-1", "badge")
    outs = [bytearray() for _ in range(parts)]
    t0 = int(datetime(2026, 10, 1, 6, tzinfo=UTC).timestamp())
    per_device = events // devices | 1  # odd: clock_sync, then whole arrive/depart pairs
    for number, (device, key) in enumerate(keys.items()):
        out = outs[number * parts // devices]
        prev = bytes(32)
        protected = cbor2.dumps({1: -8, 4: device.encode()}, canonical=True)
        for seq in range(1, per_device + 1):
            kind = "clock_sync" if seq == 1 else "arrive" if seq % 2 == 0 else "depart"
            fields = {0: 1, 1: device, 2: seq, 3: 1, 4: seq * 60_000, 5: t0 + seq * 60,
                      6: seq * 60, 7: kind, 9: prev}  # fmt: skip
            if kind != "clock_sync":
                fields[8] = cred
                fields[10] = {"via": "badge"}
            else:
                fields[6] = 0
                fields[10] = {"offset_ms": 0}
            payload = cbor2.dumps(fields, canonical=True)
            signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
            out += cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
            prev = hashlib.sha256(payload).digest()
    paths = []
    for part, out in enumerate(outs):
        folder = root / f"part-{part}" if parts > 1 else root
        folder.mkdir(exist_ok=True)
        paths.append(folder / "evidence.cbor-seq")
        paths[-1].write_bytes(bytes(out))
    return registry, paths


def bench_signatures(events: int, rounds: int, parts: int) -> None:
    """Times three contenders over the same events and keys: Ed25519 checks alone, a bare
    cbor2 parse + verify, and kvitto's re-check. The bundle is split into `parts` files of
    whole device streams; each round runs every contender on each part in turn, in a rotating
    order, so the three share the moments of load from other processes (this machine is
    shared). Figures are CPU time of this process; the ratio is the median of the ratios per
    part and round, with best vs best of whole rounds beside it."""
    with tempfile.TemporaryDirectory() as folder:
        registry, paths = signed_bundle(Path(folder), events, parts)
        # Raw: only the Ed25519 checks, keys and Sig_structures prepared outside the clock.
        prepared: dict[Path, list[tuple[Ed25519PublicKey, bytes, bytes]]] = {}
        for path in paths:
            prepared[path] = []
            for _, message in read_messages(path):
                protected, protected_bytes, payload, signature = split_sign1(message)
                public = registry.devices[protected[4].decode()].public_key
                sig_structure = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
                prepared[path].append(
                    (Ed25519PublicKey.from_public_bytes(public), signature, sig_structure)
                )

        def raw_verify_only(path: Path) -> None:
            for public, signature, data in prepared[path]:
                public.verify(signature, data)

        def raw_parse_and_verify(path: Path) -> None:
            keys: dict[str, Ed25519PublicKey] = {}
            for _, message in read_messages(path):
                protected_bytes, _, payload, signature = cbor2.loads(message).value
                kid = cbor2.loads(protected_bytes)[4].decode()
                if kid not in keys:
                    keys[kid] = Ed25519PublicKey.from_public_bytes(
                        registry.devices[kid].public_key
                    )
                keys[kid].verify(
                    signature, cbor2.dumps(["Signature1", protected_bytes, b"", payload])
                )

        found: dict[Path, Evidence] = {}

        def kvitto_recheck(path: Path) -> None:
            found[path] = build_evidence(registry, read_decoded(path))

        contenders = [raw_verify_only, raw_parse_and_verify, kvitto_recheck]
        # cpu[name][round][part]: CPU time of this process, which (unlike wall time) does not
        # count the moments another process held the core. Wall time is kept for comparison.
        cpu = {c.__name__: [[0.0] * parts for _ in range(rounds)] for c in contenders}
        wall = {c.__name__: [[0.0] * parts for _ in range(rounds)] for c in contenders}
        for number in range(rounds):
            for part, path in enumerate(paths):
                turn = (number + part) % 3
                for function in contenders[turn:] + contenders[:turn]:
                    cpu_started, wall_started = time.process_time(), time.perf_counter()
                    function(path)
                    cpu[function.__name__][number][part] = time.process_time() - cpu_started
                    wall[function.__name__][number][part] = time.perf_counter() - wall_started
    count = sum(len(items) for items in prepared.values())
    presences = sum(len(evidence.presences) for evidence in found.values())
    issues = sum(len(evidence.issues) for evidence in found.values())

    def rates(label: str, name: str) -> None:
        totals = [sum(parts_of_round) for parts_of_round in cpu[name]]
        print(f"  {label:<43}{count / min(totals):>9.0f}{count / statistics.median(totals):>9.0f}"
              f"{min(totals) / count * 1e6:>9.1f}")  # fmt: skip

    def ratio(times: dict[str, list[list[float]]], other: str) -> str:
        kvitto = [t for round_times in times["kvitto_recheck"] for t in round_times]
        others = [t for round_times in times[other] for t in round_times]
        paired = statistics.median(o / k for o, k in zip(others, kvitto))
        best = min(map(sum, times[other])) / min(map(sum, times["kvitto_recheck"]))
        return f"median of parts×rounds {paired:.2f}, best round vs best round {best:.2f}"

    print(f"\nsignature re-check of an offline bundle ({count} events in {parts} parts, "
          f"one core, {rounds} interleaved rounds, CPU time)")  # fmt: skip
    print(f"  {'':<43}{'best/s':>9}{'median/s':>9}{'µs best':>9}")
    rates("raw Ed25519PublicKey.verify only:", "raw_verify_only")
    rates("raw cbor2 parse + Sig_structure + verify:", "raw_parse_and_verify")
    rates("kvitto read+verify+chain+re-anchor+pair:", "kvitto_recheck")
    print(f"  ({presences} presences, {issues} issues)")
    print(
        f"  ratio kvitto / verify-only, per core:   {ratio(cpu, 'raw_verify_only')}  (goal ≥ 0.8)"
    )
    print(f"  ratio kvitto / parse+verify, per core:  {ratio(cpu, 'raw_parse_and_verify')}")
    print(f"  the same by wall clock, / verify-only:  {ratio(wall, 'raw_verify_only')}")


_PREPARED: list[tuple[Ed25519PublicKey, bytes, bytes]] = []  # raw checks' keys, messages


def _raw_share(part: int, parts: int) -> float:
    """Raw Ed25519 checks of every `parts`-th of _PREPARED from `part` (a forked process
    inherits them: keys do not pickle); its CPU seconds."""
    started = time.process_time()
    for public, signature, data in _PREPARED[part::parts]:
        public.verify(signature, data)
    return time.process_time() - started


def _cpu_of_all() -> float:
    """CPU seconds of this process and its waited-for children (a closed pool's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def bench_audit(events: int, rounds: int, jobs: int) -> None:
    """The offline audit on `jobs` processes (build_evidence with kvitto.verify.audit) against
    raw Ed25519 verification on one core times `jobs`, and against raw verification on `jobs`
    processes at once (the cores this shared machine gives at that moment), in interleaved
    rounds, best of each: by wall clock (what a person waiting for the audit sees) and by CPU
    time of all processes (what idle cores would need). The parent's own work after the last
    signature (chains, clocks, tap proofs, pairing: it cannot overlap the workers) is timed
    apart, on the same events."""
    import kvitto.verify.visits

    jobs = min(jobs, audit_cores())
    with tempfile.TemporaryDirectory() as folder:
        registry, (path,) = signed_bundle(Path(folder), events)
        messages = [message for _, message in read_messages(path)]
        prepared = _PREPARED
        prepared.clear()
        for message in messages:
            protected, protected_bytes, payload, signature = split_sign1(message)
            public = registry.devices[protected[4].decode()].public_key
            sig_structure = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
            prepared.append((Ed25519PublicKey.from_public_bytes(public), signature, sig_structure))
        fork = multiprocessing.get_context("fork")
        wall: dict[str, list[float]] = {name: [] for name in ("raw", "raw_n", "one", "audit")}
        cpu: dict[str, list[float]] = {name: [] for name in wall}
        loads = [os.getloadavg()[0]]
        found = 0
        for number in range(rounds):
            turns = ["raw", "raw_n", "one", "audit"]
            for name in turns[number % 4 :] + turns[: number % 4]:
                started, cpu_started = time.perf_counter(), _cpu_of_all()
                if name == "raw":
                    _raw_share(0, 1)
                elif name == "raw_n":
                    with ProcessPoolExecutor(jobs, mp_context=fork) as pool:
                        list(pool.map(_raw_share, range(jobs), [jobs] * jobs))
                else:
                    run_jobs = 1 if name == "one" else jobs
                    found = build_evidence(registry, messages, jobs=run_jobs).events
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(_cpu_of_all() - cpu_started)
            loads.append(os.getloadavg()[0])
        # the parent's work after the signatures, on the same verified events
        verifier = EventVerifier({d.id: d.public_key for d in registry.devices.values()}.get)
        checked = [(message, verifier.event(message)) for message in messages]
        real = kvitto.verify.visits.verified_events
        kvitto.verify.visits.verified_events = lambda *_: iter(checked)  # type: ignore[assignment]
        try:
            tail = []
            for _ in range(rounds):
                cpu_started = time.process_time()
                build_evidence(registry, messages)
                tail.append(time.process_time() - cpu_started)
        finally:
            kvitto.verify.visits.verified_events = real
    count = len(messages)
    rate = {name: count / min(times) for name, times in wall.items()}
    per_event = {name: min(times) / count * 1e6 for name, times in cpu.items()}
    print(f"\noffline audit on {jobs} processes ({count} events, {found} kept, best of {rounds} "
          f"interleaved rounds, load {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} cores)")  # fmt: skip
    print(f"  {'':<42}{'wall/s':>9}{'CPU µs/event':>14}")
    for name, label in (("raw", "raw Ed25519 verify, one process:"),
                        ("raw_n", f"raw Ed25519 verify, {jobs} processes at once:"),
                        ("one", "kvitto audit, jobs=1:"),
                        ("audit", f"kvitto audit, jobs={jobs}:")):  # fmt: skip
        print(f"  {label:<42}{rate[name]:>9.0f}{per_event[name]:>14.1f}")
    print(f"  of which the parent after the last signature (serial): "
          f"{min(tail) / count * 1e6:.1f} µs/event")  # fmt: skip
    print(f"  ratio audit / (raw per core × {jobs}), wall:   {rate['audit'] / (rate['raw'] * jobs):.2f}"
          "  (goal ≥ 0.8)")  # fmt: skip
    print(f"  ratio audit / raw on {jobs} processes, wall:    "
          f"{rate['audit'] / rate['raw_n']:.2f}  (the same load)")  # fmt: skip
    print(f"  ratio by CPU time, raw / audit (all processes): "
          f"{per_event['raw'] / per_event['audit']:.2f}  (what {jobs} idle cores would give "
          "at most)")  # fmt: skip
    print(f"  jobs={jobs} / jobs=1, wall: {rate['audit'] / rate['one']:.2f}")


# The demo day's claims (kvitto demo, Huddinge): cohabitants, double staffing, a decline, a
# long visit, manual ones, a night visit; every copy overlaps the others.
DEMO_DAY = [
    ("c-2001", "s-01", "omsorg", "07:30", "08:15", "lock", ""),
    ("c-2001", "s-02", "omsorg", "07:32", "08:15", "lock", "1"),
    ("c-1001", "s-03", "omsorg", "09:00", "09:40", "tag", ""),
    ("c-1002", "s-03", "omsorg", "09:40", "10:05", "tag", ""),
    ("c-2001", "s-04", "tillsyn", "11:14", "11:35", "alarm_unit", ""),
    ("c-1001", "s-01", "avbojt-besok", "12:00", "12:01", "tag", ""),
    ("c-1002", "s-04", "omsorg", "13:00", "13:30", "tag", ""),
    ("c-1001", "s-02", "omsorg", "15:00", "16:10", "tag", ""),
    ("c-1002", "s-01", "omsorg", "16:30", "17:00", "manual", ""),
    ("c-1002", "s-02", "omsorg", "22:30", "22:50", "tag", ""),
    ("c-2001", "s-02", "tillsyn", "02:31", "02:48", "alarm_unit", ""),
    ("c-1001", "s-01", "paklaedning", "19:00", "19:20", "manual", ""),
]


def overlapping_case(root: Path, rows: int) -> Path:
    """A bundle (registry, orders, claims; no evidence) of `rows` claims: DEMO_DAY repeated."""
    root.mkdir(parents=True, exist_ok=True)
    registry = []
    for customer, household in (("c-1001", "h-1"), ("c-1002", "h-1"), ("c-2001", "")):
        registry += ["[[customer]]", f'id = "{customer}"']
        registry += [f'household = "{household}"'] if household else []
    for number in range(1, 5):
        registry += ["[[credential]]", f'id = "{number:032x}"', f'staff = "s-0{number}"',
                     'provider = "p-1"', 'kind = "badge"']  # fmt: skip
    (root / "registry.toml").write_text("\n".join(registry) + "\n")
    orders = ["customer,activity,granted_minutes_month,valid_from,valid_to,double_staffing,"
              "tag_exempt"]  # fmt: skip
    for customer in ("c-1001", "c-1002", "c-2001"):
        for activity in ("omsorg", "tillsyn", "paklaedning"):
            orders.append(f"{customer},{activity},3000,2026-01-01,,1,0")
    (root / "orders.csv").write_text("\n".join(orders) + "\n")
    with open(root / "claims.csv", "w") as out:
        out.write("claim_id,customer,staff,activity,start,end,registered_via,registered_at,"
                  "approved_at,adjusted_at,double_staffing,count,reason,planned_start,"
                  "planned_end,notified_at,proof\n")  # fmt: skip
        for number in range(rows):
            customer, staff, activity, start, end, via, double = DEMO_DAY[number % 12]
            day = "2026-11-11T"
            out.write(f"x{number:07d},{customer},{staff},{activity},{day}{start},{day}{end},"
                      f"{via},{day}{end},{day}18:00,,{double},,,,,,\n")  # fmt: skip
    (root / "evidence.cbor-seq").write_bytes(b"")  # no events: the claims alone are the load
    return root


def overlapping_run(rows: int, cap: int | None) -> tuple[float, str, int]:
    """(seconds, outcome, peak RSS bytes) of verify_case over `rows` overlapping claims, in a
    fresh process; `cap` replaces kvitto.verify.case_csv.MAX_CLAIMS_PER_CUSTOMER_DAY when given."""
    import kvitto.verify.case_csv
    from kvitto.errors import KvittoError
    from kvitto.verify.check import verify_case

    if cap is not None:
        kvitto.verify.case_csv.MAX_CLAIMS_PER_CUSTOMER_DAY = cap
    with tempfile.TemporaryDirectory() as folder:
        case = overlapping_case(Path(folder), rows)
        started = time.perf_counter()
        try:
            result = verify_case(case, "huddinge", "2026-11")
            outcome = f"verified: {len(result.findings)} findings"
        except KvittoError as error:
            outcome = f"refused: {str(error).split(': ', 1)[1][:60]}…"
        elapsed = time.perf_counter() - started
    return elapsed, outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_overlapping(rows: int, uncapped: list[int]) -> None:
    print("\noverlapping claims (issue #25.6): the demo day's 12 claims repeated, verify_case "
          "on one core")  # fmt: skip
    print(f"{'rows':>9} {'bound':>10} {'seconds':>8} {'peak MB':>8}  outcome")
    spawn = multiprocessing.get_context("spawn")
    runs = [(rows, None)] + [(count, 10**9) for count in uncapped]
    for count, cap in runs:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            elapsed, outcome, peak = pool.submit(overlapping_run, count, cap).result()
        bound = "as shipped" if cap is None else "lifted"
        print(f"{count:>9} {bound:>10} {elapsed:>8.2f} {peak / 1e6:>8.0f}  {outcome}")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join((__doc__ or "").split("\n\n")[0].split())
    )
    parser.add_argument("--customers", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--profile", default="norrtalje", choices=sorted(ACTIVITY))
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default every core)"
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved rounds of the signature re-check"
    )
    parser.add_argument("--only", choices=["rules", "signatures", "overlapping"],
                        help="run one part only")  # fmt: skip
    parser.add_argument("--audit-only", action="store_true",
                        help="run the offline audit alone (--events × 5 events)")  # fmt: skip
    parser.add_argument("--overlapping", type=int, default=1_000_000,
                        help="rows of the overlapping claims file (part 3)")  # fmt: skip
    parser.add_argument("--uncapped", type=int, nargs="*", default=[20_000, 100_000],
                        help="rows verified with the per-day bound lifted (part 3)")  # fmt: skip
    parser.add_argument(
        "--parts", type=int, default=10, help="evidence files the bundle is split into (≤ 50)"
    )
    args = parser.parse_args()
    if args.audit_only:
        bench_audit(args.events * 5, max(3, args.rounds // 2), args.jobs)
        return
    if args.only in (None, "rules"):
        bench_rules(args.customers, args.profile, args.jobs)
    if args.only in (None, "signatures"):
        bench_signatures(args.events, args.rounds, args.parts)
        bench_audit(args.events * 5, max(3, args.rounds // 2), args.jobs)
    if args.only in (None, "overlapping"):
        bench_overlapping(args.overlapping, args.uncapped)


if __name__ == "__main__":
    main()
