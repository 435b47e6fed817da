"""kvitto serve under load: p50/p95 of the day board, the deviation queue and the month page
with a 10k-customer month in the store, side by side with a static file from the same server.

    .venv/bin/python bench/web.py                          # 10 000 customers, 20 users, SQLite
    .venv/bin/python bench/web.py --customers 2000 --users 20 --requests 400
    .venv/bin/python bench/web.py --store postgresql://…   # an empty database

The month is bench/verify.py's synthetic October 2026 (~4 visits a day per customer, some short
or missing evidence): claims imported into the store, the rules' findings and billing basis
stored as `kvitto judge` stores them, the plan and signed arrive/depart events of the month's
last day (the day board's "today"), judged two days before the clock: the deadlines that passed
since are moved on first (timed; the queue's first request would). The server runs in `--workers` processes sharing one
listening socket (as `kvitto serve --workers` does) on a fixed clock (31 October 12:00); 20
client threads, each logged in as the provider's coordinator, request one
page at a time, pages interleaved round by round. Then the day board's live update (the page
says within 2 s): a new signed event stored, as the collector stores it, at one of the board's
customers, until the board the page fetches again on the server-sent `changed` shows it, at
random moments against the server's 1 s poll. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from verify import ACTIVITY, synthetic_month  # noqa: E402  (bench/verify.py's generator)

NOW = datetime(2026, 10, 31, 12, 0, tzinfo=timezone(timedelta(hours=1)))
JUDGED = NOW - timedelta(days=2)  # the verdicts' deadlines as of then: some passed since
MONTH = "2026-10"
PASSWORD = "bench-lösenord-bench"
PAGES = {
    "static file": "/static/kvitto.css",
    "day board": "/dag",
    "deviation queue": "/avvikelser",
    "month": f"/manad/{MONTH}",
}


def build(url: str, customers: int, profile_name: str) -> dict[str, int]:
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kvitto.store.db import open_store
    from kvitto.verify.case import CLAIM_FIELDS
    from kvitto.verify.rules import Facts, load_profile, run_rules
    from kvitto.verify.rules.billing import billing_basis
    from kvitto.verify.workdays import local
    from kvitto.web.accounts import add_provider, add_user, assign_customers
    from kvitto.web.claims import add_counts
    from kvitto.web.judge import deadline_columns

    profile = load_profile(profile_name)
    store = open_store(url)
    add_provider(store, "p-1", profile_name)
    counts = {"claims": 0, "findings": 0, "events": 0, "plan": 0}
    batch = 1000
    for first in range(0, customers, batch):
        registry, orders, claims, evidence = synthetic_month(
            min(batch, customers - first), ACTIVITY[profile_name], seed=7 + first, first=first
        )
        facts = Facts(profile, 2026, 10, registry, claims, orders, evidence)
        findings = run_rules(facts)
        billing = billing_basis(facts, findings)
        by_id = {c.claim_id: c for c in claims}
        with store.transaction():
            store.executemany(
                "INSERT INTO customers (id, household, age_group) VALUES (?, ?, '')",
                [(c.id, c.household) for c in registry.customers.values()],
            )
            keys = {}
            for device in registry.devices.values():
                key = Ed25519PrivateKey.from_private_bytes(
                    hashlib.sha256(device.id.encode()).digest()
                )
                keys[device.id] = key
                public = key.public_key().public_bytes_raw()
                store.execute(
                    "INSERT INTO devices (id, customer, role, public_key, installed) "
                    "VALUES (?, ?, 'tag', ?, '2026-01-01')",
                    (device.id, device.customer, public),
                )
            store.executemany(
                "INSERT INTO credentials (id, staff, provider, kind) VALUES (?, ?, 'p-1', 'badge')",
                [(c.id, c.staff) for c in registry.credentials.values()],
            )
            assign_customers(store, "p-1", list(registry.customers))
            rows = []
            for claim in claims:
                fields = {name: "" for name in CLAIM_FIELDS}
                fields.update(
                    claim_id=claim.claim_id, customer=claim.customer, staff=claim.staff,
                    activity=claim.activity, start=claim.start.isoformat(),
                    end=claim.end.isoformat(), registered_via=claim.registered_via,
                    registered_at=claim.registered_at.isoformat() if claim.registered_at else "",
                    approved_at=claim.approved_at.isoformat() if claim.approved_at else "",
                )  # fmt: skip
                rows.append(("p-1", claim.claim_id, claim.customer, MONTH,
                             int(claim.start.timestamp() * 1000), int(claim.end.timestamp() * 1000),
                             "tag", json.dumps(fields), 0))  # fmt: skip
            store.executemany(
                "INSERT INTO claims (provider, claim_id, customer, month, start_at, end_at, via, "
                "fields, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            add_counts(store, "p-1", MONTH, len(rows), 0)
            verdicts = []
            for f in findings:
                claim = by_id[f.claim_id]
                verdicts.append(("p-1", MONTH, f.customer, f.claim_id, f.rule, f.outcome,
                                 f.payable_minutes, f.why.stored(), claim.activity, claim.staff,
                                 int(claim.start.timestamp() * 1000),
                                 int(claim.end.timestamp() * 1000),
                                 *deadline_columns(profile, claim, MONTH, JUDGED)))  # fmt: skip
            store.executemany(
                "INSERT INTO verdicts (provider, month, customer, claim_id, rule, outcome, "
                "payable_minutes, reason, activity, staff, start_at, end_at, deadline_rule, "
                "deadline_at, deadline_last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                verdicts,
            )
            store.executemany(
                "INSERT INTO billing (provider, month, customer, category, payable_minutes, "
                "count) VALUES ('p-1', ?, ?, ?, ?, ?)",
                [(MONTH, b["customer"], b["category"], b["payable_minutes"], b.get("count", 0))
                 for b in billing],
            )  # fmt: skip
            # today: the plan and each visit's signed arrive and depart
            plan, events, seqs = [], [], {}
            for claim in claims:
                if local(claim.start).date() != NOW.date():
                    continue
                device = f"tag-{claim.customer[2:]}"
                plan.append(("p-1", claim.customer, int(claim.start.timestamp() * 1000),
                             int(claim.end.timestamp() * 1000), claim.activity, 0))  # fmt: skip
                cred = bytes.fromhex(hashlib.sha256(claim.staff.encode()).hexdigest()[:32])
                for kind, at in (("arrive", claim.start), ("depart", claim.end)):
                    seq = seqs[device] = seqs.get(device, 0) + 1
                    payload = cbor2.dumps({0: 1, 1: device, 2: seq, 3: 1, 4: seq * 1000,
                                           5: int(at.timestamp()), 6: 60, 7: kind, 8: cred,
                                           9: bytes(32), 10: {"via": "badge"}}, canonical=True)  # fmt: skip
                    protected = cbor2.dumps({1: -8, 4: device.encode()}, canonical=True)
                    signature = keys[device].sign(
                        cbor2.dumps(["Signature1", protected, b"", payload])
                    )
                    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
                    events.append((device, seq, 1, seq * 1000, int(at.timestamp()), 60, kind, cred,
                                   hashlib.sha256(payload).digest(), message,
                                   int(at.timestamp() * 1000), 1))  # fmt: skip
            store.executemany(
                "INSERT INTO plan (provider, customer, start_at, end_at, activities, imported_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                plan,
            )
            store.executemany(
                "INSERT INTO events (device, seq, boot, up, t, sync, type, cred, payload_hash, "
                "message, received_at, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                events,
            )
        counts["claims"] += len(claims)
        counts["findings"] += len(findings)
        counts["events"] += len(events)
        counts["plan"] += len(plan)
        print(f"  {first + batch:>6} customers stored", file=sys.stderr, flush=True)
    store.execute(
        "INSERT INTO judged (provider, month, judged_at, counts) VALUES ('p-1', ?, ?, '{}')",
        (MONTH, int(JUDGED.timestamp() * 1000)),
    )
    add_user(store, "samordnare-p1", "coordinator", PASSWORD, provider="p-1")
    store.close()
    return counts


def serve(url: str, sock, ready) -> None:  # noqa: ANN001 (a socket, an Event)
    """One server process on the shared listening socket (as `uvicorn --workers` shares it)."""
    import uvicorn

    from kvitto.web.app import create_app

    app = create_app(url, secret=b"bench", clock=lambda: NOW)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    threading.Thread(target=lambda: (time.sleep(0.5), ready.set()), daemon=True).start()
    server.run(sockets=[sock])


def client(base: str):  # noqa: ANN201 (an httpx.Client, logged in)
    import re

    import httpx

    session = httpx.Client(base_url=base, timeout=60)
    page = session.get("/login").text
    token = re.search(r'name="csrftoken" value="([^"]+)"', page)
    assert token is not None
    answer = session.post("/login", data={"name": "samordnare-p1", "password": PASSWORD,
                                          "csrftoken": token.group(1)})  # fmt: skip
    assert answer.status_code == 303, answer.text[:200]
    return session


def signed_event(device: str, seq: int, prev: bytes, at: datetime, cred: bytes):  # noqa: ANN201
    """A tag's signed `arrive` (FORMATS.md §1) and the events row the collector stores for it."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(device.encode()).digest())
    payload = cbor2.dumps({0: 1, 1: device, 2: seq, 3: 1, 4: seq * 1000, 5: int(at.timestamp()),
                           6: 60, 7: "arrive", 8: cred, 9: prev, 10: {"via": "badge"}},
                          canonical=True)  # fmt: skip
    protected = cbor2.dumps({1: -8, 4: device.encode()}, canonical=True)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    return (device, seq, 1, seq * 1000, int(at.timestamp()), 60, "arrive", cred,
            hashlib.sha256(payload).digest(), message)  # fmt: skip


def live_updates(base: str, url: str, count: int) -> list[float]:
    """Seconds from an event's commit to the day board showing it, the browser's way: the
    page's event stream says `changed`, the board fragment is fetched and holds the event."""
    import queue
    import random
    import re

    from kvitto.store.db import open_store

    store = open_store(url)
    session = client(base)
    page = session.get("/dag").text
    source = re.search(r'data-source="([^"]+)"', page)
    board = re.search(r'data-board="([^"]+)"', page)
    shown = re.search(r"<h2[^>]*>\s*(c-\d+)", page) or re.search(r"\b(c-\d{5})\b", page)
    assert source and board and shown, "the day board has no live stream or no customer"
    board_url = board.group(1).replace("&amp;", "&")
    device = f"tag-{shown.group(1)[2:]}"
    cred = bytes.fromhex(hashlib.sha256(b"s-live").hexdigest()[:32])
    store.execute("INSERT INTO credentials (id, staff, provider, kind) VALUES (?, 's-live', "
                  "'p-1', 'badge')", (cred.hex(),))  # fmt: skip
    last = store.execute("SELECT MAX(seq) FROM events WHERE device = ?", (device,))[0][0] or 0
    prev_rows = store.execute(
        "SELECT payload_hash FROM events WHERE device = ? AND seq = ?", (device, last)
    )
    prev = bytes(prev_rows[0][0]) if prev_rows else bytes(32)
    notices: queue.Queue[int] = queue.Queue()

    listener = client(base)

    def listen() -> None:
        try:
            with listener.stream("GET", source.group(1), timeout=None) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        notices.put(int(line[5:]))
        except Exception:  # noqa: BLE001 (closed at the end: the measurement is over)
            return

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(1.5)  # the stream is open
    pause = random.Random(19)
    newest = int(store.execute("SELECT MAX(received_at) FROM events")[0][0] or 0)
    took = []
    for number in range(count):
        time.sleep(pause.uniform(0.2, 1.2))  # a random phase against the server's poll
        seq = last + 1 + number
        at = NOW.replace(hour=23, minute=number % 60)
        row = signed_event(device, seq, prev, at, cred)
        prev = row[8]
        newest = max(newest + 1, int(time.time() * 1000))
        with store.transaction():
            store.execute(
                "INSERT INTO events (device, seq, boot, up, t, sync, type, cred, payload_hash, "
                "message, received_at, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (*row, newest),
            )
        stored = time.perf_counter()
        while notices.get(timeout=30) < newest:
            pass
        fragment = session.get(board_url).text
        took.append(time.perf_counter() - stored)
        assert fragment.count("s-live") >= number + 1, "the board does not show the new event"
    listener.close()  # else the servers wait for the open stream when they stop
    store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=20, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=200, help="per page")
    parser.add_argument("--store", default=None, help="a store URL (default: a new SQLite file)")
    parser.add_argument("--profile", default="huddinge")
    parser.add_argument("--workers", type=int, default=2, help="server processes (uvicorn's)")
    parser.add_argument("--live", type=int, default=20, help="events for the live day board")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kvitto-bench-web-"))
    url = args.store or f"sqlite:///{workdir / 'kvitto.db'}"
    started = time.perf_counter()
    counts = build(url, args.customers, args.profile)
    print(f"store: {url}")
    print(f"{args.customers} customers, {counts['claims']} claims, {counts['findings']} findings, "
          f"{counts['plan']} planned visits and {counts['events']} events today; built in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    from kvitto.store.db import open_store
    from kvitto.web.judge import refresh_deadlines

    with open_store(url) as store:  # what the queue's first request does, once
        begun = time.perf_counter()
        moved = refresh_deadlines(store, "p-1", [MONTH], NOW)
        print(f"deadlines passed in the 2 days since the judgement moved on: {moved} claims in "
              f"{(time.perf_counter() - begun) * 1000:.0f} ms (once per deadline)")  # fmt: skip
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    fork = multiprocessing.get_context("fork")  # the workers inherit the listening socket
    servers = []
    for _ in range(args.workers):
        ready = fork.Event()
        process = fork.Process(target=serve, args=(url, sock, ready), daemon=True)
        process.start()
        ready.wait(60)
        servers.append(process)
    base = f"http://127.0.0.1:{port}"
    try:
        sessions = [client(base) for _ in range(args.users)]
        times: dict[str, list[float]] = {name: [] for name in PAGES}

        def fetch(session, path: str) -> float:  # noqa: ANN001
            begun = time.perf_counter()
            answer = session.get(path)
            elapsed = time.perf_counter() - begun
            assert answer.status_code == 200, (path, answer.status_code)
            return elapsed

        for session in sessions:  # warm up: templates compiled, caches filled
            for path in PAGES.values():
                fetch(session, path)
        rounds = max(1, args.requests // args.users)
        with ThreadPoolExecutor(max_workers=args.users) as pool:
            for _ in range(rounds):
                for name, path in PAGES.items():
                    times[name] += pool.map(lambda s, p=path: fetch(s, p), sessions)
        live = live_updates(base, url, args.live) if args.live else []
    finally:
        for process in servers:
            process.terminate()
            process.join(10)
    print(
        f"{args.workers} server processes, {args.users} concurrent users, "
        f"{rounds * args.users} requests per page, latency at the client (ms), "
        "pages interleaved round by round"
    )
    print(f"{'page':<18} {'p50':>8} {'p95':>8} {'max':>8} {'p95 ÷ static':>13}")
    static = statistics.quantiles(times["static file"], n=20)[18]
    for name, samples in times.items():
        p95 = statistics.quantiles(samples, n=20)[18]
        print(f"{name:<18} {statistics.median(samples) * 1000:>8.1f} {p95 * 1000:>8.1f} "
              f"{max(samples) * 1000:>8.1f} {p95 / static:>13.1f}")  # fmt: skip
    if live:
        p95 = (
            statistics.quantiles(live, n=20, method="inclusive")[18] if len(live) > 1 else live[0]
        )
        print(
            f"live day board: event stored -> board updated, {len(live)} events (ms): "
            f"p50 {statistics.median(live) * 1000:.0f}, p95 {p95 * 1000:.0f}, "
            f"max {max(live) * 1000:.0f} (the page: within 2 s; the server polls every 1 s)"
        )


if __name__ == "__main__":
    main()
