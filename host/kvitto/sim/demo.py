"""`kvitto demo`: a day of home care on virtual boards, end to end, in one command.

    from kvitto.sim.demo import run_demo
    outcome = run_demo(out=Path("kvitto-demo"))      # broker=None: the embedded amqtt broker
    print(outcome.report_html, outcome.result.counts)

What runs is the real system: four virtual boards (the firmware under the unix port) are
provisioned over their serial ptys the way an installer does it (kvitto.install.provision, mpremote's
raw REPL), staff credentials are enrolled in a temporary registry, the boards publish signed
events through a network proxy to an MQTT broker, the real Collector stores them, and
kvitto.verify.check checks a provider's claims for the month against that evidence.

A scripted day happens in seconds of wall time, so its times come from the scenario: before
each step the board's clock is set to the scripted moment with the organisation's signed
`time` command (FORMATS.md §2) over MQTT, exactly as an operator would; the board journals a
`clock_sync`, and the host re-anchors the boot's events on it (RULES.md I5). The day is in the
previous month, so device times are never ahead of the collector's receipt. Every finding in
the report comes from verify on the collected evidence; nothing here is precomputed.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kvitto.errors import KvittoError

PROVIDER = "p-1"
COMMAND_LIFETIME = 600
STEP_TIMEOUT = 20.0
DEBOUNCE_S = 3.3  # firmware/device/visits.py: a second tap within 3 s is the same tap

# The cast: pseudonyms only. Credentials: two badges (UID), an NTAG 424 badge, a phone.
BADGE_A = "04a1b2c3"  # s-01
BADGE_B = "04d4e5f6"  # s-02
NTAG_C = "04112233445566"  # s-03, NTAG 424 DNA (7-byte UID)
PHONE_SEED = bytes(range(200, 232))  # s-04's provider-owned phone (its HCE app key)

BOARDS = (
    # device, role, customer, household
    ("tag-0101", "tag", "c-1001", "h-17"),
    ("tag-0102", "tag", "c-1002", "h-17"),
    ("lock-0201", "lock", "c-2001", ""),
    ("alarm-0202", "alarm", "c-2001", ""),
)

ORDERS = (
    # customer, activity role (see activities()), granted minutes/month, double staffing
    ("c-1001", "visit", 900, 0),
    ("c-1001", "declined", 0, 0),
    ("c-1002", "visit", 900, 0),
    ("c-2001", "visit", 1200, 0),
    ("c-2001", "alarm", 300, 0),
)


def order_rows(codes: dict[str, str]) -> list[tuple[str, str, int, int]]:
    """ORDERS in the profile's codes, one row per customer and activity."""
    rows: dict[tuple[str, str], tuple[str, str, int, int]] = {}
    for customer, role, minutes, double in ORDERS:
        key = (customer, codes[role])
        if key not in rows or rows[key][2] < minutes:
            rows[key] = (customer, codes[role], minutes, double)
    return list(rows.values())


def activities(profile: Any) -> dict[str, str]:
    """The scenario's activity roles in the profile's own codes: `visit` (ordinary care at
    home), `alarm` (an alarm visit, or supervision where the profile has no alarm activity),
    `declined` (declined at the door), `extra` (an activity nobody ordered)."""
    catalogue = profile.activities

    def first(test: Callable[[Any], bool], default: str) -> str:
        return next((code for code, a in catalogue.items() if test(a)), default)

    visit = first(lambda a: a.name == "Omsorg", next(iter(catalogue)))
    alarm = first(
        lambda a: a.category == "larm" or a.where == "alarm",
        first(lambda a: "tillsyn" in a.code and a.where == "tag", visit),
    )
    declined = first(lambda a: a.name.startswith("Avböjt"), visit)
    used = {visit, alarm, declined}
    extra = first(lambda a: a.where == "tag" and a.code not in used, visit)
    return {"visit": visit, "alarm": alarm, "declined": declined, "extra": extra}


@dataclass
class DemoOutcome:
    out: Path
    report_html: Path
    report_json: Path
    case_dir: Path
    month: str
    result: Any  # kvitto.verify.check.Result
    journaled: dict[str, int]  # device -> events in its journal (next_seq - 1)
    stored: int  # events the collector stored
    exported: int  # events in the exported case bundle
    seconds: float
    notes: list[str] = field(default_factory=list)


# -- small helpers ------------------------------------------------------------------------


def _zone() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Stockholm")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.1)
    raise KvittoError(f"the broker on {host}:{port} did not come up")


_AMQTT = """
import asyncio, logging, sys
from amqtt.broker import Broker
logging.basicConfig(level=logging.WARNING)
config = {
    "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d", "max_connections": 64}},
    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
}
async def main():
    broker = Broker(config)
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


@contextlib.contextmanager
def embedded_broker(workdir: Path) -> Iterator[str]:
    """amqtt, the embedded Python broker of DESIGN "Scale", as a subprocess on a free port."""
    port = _free_port()
    log = open(workdir / "amqtt.log", "wb")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-c", _AMQTT % port], stdout=log, stderr=log, cwd=workdir
    )
    log.close()
    try:
        _wait_port("127.0.0.1", port, 20)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Progress:
    """One line per step with the elapsed wall time."""

    def __init__(self, console: Console):
        self.console = console
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] {text}")


# -- the day ------------------------------------------------------------------------------


class Day:
    """Drives the boards through the scripted day: clock first (signed `time`), then the act,
    each waited for in the board's journal."""

    def __init__(self, boards: dict[str, Any], store: Any, org_secret: bytes, broker_url: str,
                 day: dt.date, say: Callable[[str], None]):  # fmt: skip
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.boards = boards
        self.store = store
        self.org_secret = org_secret
        self.day = day
        self.say = say
        self.zone = _zone()
        self.last_tap: dict[tuple[str, str], float] = {}
        self.badges: Any = None  # kvitto.sim.board.NtagBadges: NTAG 424 keys and read counters
        url = urlparse(broker_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kvitto-demo-org")
        if url.username:
            self.client.username_pw_set(url.username, url.password or "")
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def moment(self, hhmm: str, day_offset: int = 0) -> dt.datetime:
        hour, minute = (int(part) for part in hhmm.split(":"))
        day = self.day + dt.timedelta(days=day_offset)
        return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)

    def command(self, device: str, kind: str, x: dict[str, Any]) -> None:
        from kvitto.evidence.commands import sign_command

        with self.store.transaction():
            seq = self.store.next_command_seq(device)
        message = sign_command(
            self.org_secret, device, seq, int(time.time()) + COMMAND_LIFETIME, kind, x
        )
        self.client.publish(f"kvitto/v1/{device}/cmd", message, qos=1).wait_for_publish(10)

    def last_seq(self, device: str) -> int:
        return int(json.loads(self.boards[device].control("status"))["next_seq"]) - 1

    def wait_for(self, device: str, after: int, types: tuple[str, ...], timeout: float) -> dict:
        board = self.boards[device]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in board.events(after + 1):
                if event["type"] in types:
                    return event
            time.sleep(0.05)
        raise KvittoError(f"{device}: no {'/'.join(types)} event; log:\n{board.log_tail()}")

    def clock(self, device: str, at: dt.datetime) -> None:
        """Set the board's clock with the signed `time` command and wait for its clock_sync.
        A command can lose the race against one of the collector's acks (both take the next
        command sequence from the store; the board obeys only rising ones): send it again."""
        target = int(at.timestamp())
        for _ in range(4):
            after = self.last_seq(device)
            self.command(device, "time", {"t": target})
            with contextlib.suppress(KvittoError):
                event = self.wait_for(device, after, ("clock_sync",), 6)
                if event.get("t") is not None and abs(int(event["t"]) - target) <= 2:
                    return
        raise KvittoError(f"{device}: the clock was not set to {at.isoformat()}")

    def act(self, device: str, at: dt.datetime, what: str, action: Callable[[Any], None],
            expect: tuple[str, ...]) -> dict:  # fmt: skip
        self.clock(device, at)
        after = self.last_seq(device)
        action(self.boards[device])
        event = self.wait_for(device, after, expect, STEP_TIMEOUT)
        self.say(f"{at:%H:%M} {device:<10} {what} → {event['type']}")
        return event

    def tap(self, device: str, at: dt.datetime, kind: str, raw: str, who: str,
            expect: tuple[str, ...]) -> dict:  # fmt: skip
        key = (device, raw)
        wait = self.last_tap.get(key, 0) + DEBOUNCE_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        # an NTAG 424 badge's SUN comes from its real keys and its counter across doors
        card = self.badges.card(raw) if kind == "ntag424" and self.badges else {}
        event = self.act(
            device, at, f"{who} taps ({kind})", lambda b: b.tap(kind, raw, **card), expect
        )
        self.last_tap[key] = time.monotonic()
        return event

    def press(self, device: str, at: dt.datetime, name: str, expect: tuple[str, ...]) -> dict:
        return self.act(device, at, f"{name} pressed", lambda b: b.press(name), expect)


# -- the run ------------------------------------------------------------------------------


def _revoke_at_the_office(store: Any, credential: str, say: Callable[[str], None]) -> None:
    """`kvitto revoke --credential`: the registry, and a `revoke` queued for every lock;
    waits until the running collector has it closed by the locks' events."""
    from kvitto.store.outbox import lock_devices, queue_command
    from kvitto.store.registry import Registry

    with store.transaction():
        Registry(store).revoke_credential(credential)
        locks = lock_devices(store)
        for lock in locks:
            queue_command(store, lock, "revoke", {"creds": [bytes.fromhex(credential)]},
                          int(time.time() * 1000))  # fmt: skip
    say(f"23:00 office     s-02's badge revoked; `revoke` queued for {', '.join(locks)}")
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        rows = [row for row in store.outbox() if row.type == "revoke"]
        if rows and all(row.done_at is not None for row in rows):
            for row in rows:
                say(f"      {row.device:<10} revoke {row.outcome}, sent {row.attempts}×")
            return
        time.sleep(0.1)
    raise KvittoError(f"the locks did not confirm the revoke: {store.outbox()}")


def _previous_month_day(today: dt.date) -> dt.date:
    """A Wednesday in the middle of the previous month: in the past, never on a holiday."""
    first = today.replace(day=1)
    previous = (first - dt.timedelta(days=1)).replace(day=10)
    while previous.weekday() != 2:
        previous += dt.timedelta(days=1)
    return previous


def run_demo(
    console: Console | None = None,
    *,
    out: Path | str = "kvitto-demo",
    broker: str | None = None,
    profile: str = "huddinge",
    keep: bool = False,
) -> DemoOutcome:
    console = console or Console()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = Progress(console)
    started = time.monotonic()
    if keep:
        workdir = out / "work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="kvitto-demo-"))
    try:
        with contextlib.ExitStack() as stack:
            if broker is None:
                broker = stack.enter_context(embedded_broker(workdir))
                say(f"embedded broker (amqtt) on {broker}")
            else:
                say(f"broker {broker}")
            outcome = _run(console, say, out, workdir, broker, profile, stack)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    _summary(console, outcome)
    return outcome


def _run(console: Console, say: Progress, out: Path, workdir: Path, broker: str, profile: str,
         stack: contextlib.ExitStack) -> DemoOutcome:  # fmt: skip
    from urllib.parse import urlparse

    from kvitto.collect.collector import Collector
    from kvitto.install.enroll import enroll_badge, enroll_ntag424, enroll_phone, ntag424_masters
    from kvitto.install.pki import ensure_org, load_command_key
    from kvitto.install.provision import Provisioning, provision
    from kvitto.sim.board import NtagBadges, VirtualBoard
    from kvitto.store.db import open_store
    from kvitto.store.registry import Order, Registry
    from kvitto.verify.check import verify_store
    from kvitto.verify.export import export_case
    from kvitto.verify.report import render
    from kvitto.verify.rules import load_profile

    loaded_profile = load_profile(profile)  # an unknown profile fails before any board starts
    url = urlparse(broker)
    broker_host, broker_port = url.hostname or "127.0.0.1", url.port or 1883
    pki = workdir / "pki"
    org = ensure_org(pki)
    org_secret = load_command_key(pki)
    store_url = f"sqlite:///{workdir / 'kvitto.db'}"
    store = open_store(store_url)
    stack.callback(store.close)
    registry = Registry(store)
    say(f"registry and store: {store_url}; organisation key and credential salt in {pki}")

    # Boards fresh from `kvitto flash`: no config, console open; provisioned over their pty.
    boards: dict[str, VirtualBoard] = {}
    for device, role, _, _ in BOARDS:
        board = VirtualBoard(
            workdir / device, device, role, broker=(broker_host, broker_port), provision=False
        )
        stack.callback(board.stop)
        board.start()
        boards[device] = board
    for board in boards.values():
        board.wait_ready(60, app=False)
    for device, role, customer, household in BOARDS:
        board = boards[device]
        host, port = board.broker_address() or (broker_host, broker_port)
        result = provision(
            Provisioning(
                port=board.serial_port, device=device, customer=customer, role=role,
                board="sim", store_url=store_url, pki_dir=pki, broker_host=host,
                broker_port=port, household=household, ntp=[], label_dir=out / "labels",
                reset=False,
            )
        )  # fmt: skip
        # The unix port has no machine.reset(): the installer's reset button, as in
        # tests/test_provision.py. ntp=[]: the scripted day sets every clock by command.
        board.reset()
        mark = f" (label {result.mark})" if result.mark else ""
        say(f"provisioned {device} ({role}) for {customer}{mark} over {board.serial_port}")
    for board in boards.values():
        board.wait_ready(60)

    # Staff: two badges, an NTAG 424 badge, a provider-owned phone.
    salt = org.credential_salt
    staff = {}
    staff["s-01"] = enroll_badge(registry, salt, BADGE_A, "s-01", PROVIDER)
    staff["s-02"] = enroll_badge(registry, salt, BADGE_B, "s-02", PROVIDER)
    staff["s-03"] = enroll_ntag424(registry, salt, ntag424_masters(pki), NTAG_C, "s-03", PROVIDER)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    phone_public = Ed25519PrivateKey.from_private_bytes(PHONE_SEED).public_key().public_bytes_raw()
    staff["s-04"] = enroll_phone(registry, salt, phone_public.hex(), "s-04", PROVIDER)
    # the simulated phone holds its app key: its answers to the doors' challenges are real
    phone_raw = PHONE_SEED.hex()
    say("enrolled s-01, s-02 (badges), s-03 (NTAG 424), s-04 (phone)")

    today = dt.datetime.now(_zone()).date()
    day = _previous_month_day(today)
    month = f"{day:%Y-%m}"
    codes = activities(loaded_profile)
    for customer, code, minutes, double in order_rows(codes):
        registry.add_order(Order(customer, code, minutes, f"{day.replace(day=1)}", "", double, 0))

    scene = Day(boards, store, org_secret, broker, day, say)
    scene.badges = NtagBadges(ntag424_masters(pki))
    stack.callback(scene.close)
    at = scene.moment
    # The lock opens for s-01 and s-02 (signed `allow`, FORMATS.md §2), sent before the
    # collector runs so none of its acks can take a higher command sequence first; the
    # `time` after it is obeyed in order, so its clock_sync shows the allowlist is set.
    creds = [bytes.fromhex(staff[s].credential_id) for s in ("s-01", "s-02")]
    scene.command("lock-0201", "allow", {"creds": creds})
    scene.clock("lock-0201", at("01:00"))
    say("lock-0201 allowlist: s-01, s-02 (signed `allow`)")

    collector = Collector(store, broker, org_secret, client_id="kvitto-demo-collector")
    collector.start()
    stack.callback(collector.stop)
    collector.wait_ready(20)
    say(f"collector subscribed; the scripted day is {day:%A %Y-%m-%d}")

    # 02:10 night alarm at c-2001, answered by s-02
    scene.press("alarm-0202", at("02:10"), "alarm_call", ("alarm_call",))
    scene.press("alarm-0202", at("02:31"), "green", ("alarm_checkin",))
    scene.press("alarm-0202", at("02:48"), "yellow", ("alarm_checkout",))
    # 07:30-08:15 double staffing at the lock: s-01 unlocks, s-02 arrives while it is open
    scene.tap("lock-0201", at("07:30"), "badge", BADGE_A, "s-01", ("unlock",))
    scene.act("lock-0201", at("07:31"), "door opens", lambda b: b.door(True), ("door_open",))
    scene.tap("lock-0201", at("07:32"), "badge", BADGE_B, "s-02", ("arrive",))
    scene.act("lock-0201", at("07:33"), "door closes", lambda b: b.door(False), ("door_close",))
    # 08:15 both tap out (depart, no strike); the exit button lets them out
    scene.tap("lock-0201", at("08:15"), "badge", BADGE_A, "s-01", ("depart",))
    scene.tap("lock-0201", at("08:15"), "badge", BADGE_B, "s-02", ("depart",))
    scene.press("lock-0201", at("08:16"), "exit", ("unlock",))
    scene.act("lock-0201", at("08:16"), "door opens", lambda b: b.door(True), ("door_open",))
    scene.act("lock-0201", at("08:16"), "door closes", lambda b: b.door(False), ("door_close",))
    # 09:00-09:40 and 09:40-10:05 s-03 at the two cohabitants (alternative 2: back to back)
    scene.tap("tag-0101", at("09:00"), "ntag424", NTAG_C, "s-03", ("arrive",))
    scene.tap("tag-0101", at("09:40"), "ntag424", NTAG_C, "s-03", ("depart",))
    scene.tap("tag-0102", at("09:40"), "ntag424", NTAG_C, "s-03", ("arrive",))
    scene.tap("tag-0102", at("10:05"), "ntag424", NTAG_C, "s-03", ("depart",))
    # 11:02 alarm call, s-04 checks in 12 minutes later, out at 11:35
    scene.press("alarm-0202", at("11:02"), "alarm_call", ("alarm_call",))
    scene.press("alarm-0202", at("11:14"), "green", ("alarm_checkin",))
    scene.press("alarm-0202", at("11:35"), "yellow", ("alarm_checkout",))
    # 12:00 declined at the door at c-1001: s-01 arrives and leaves a minute later
    scene.tap("tag-0101", at("12:00"), "badge", BADGE_A, "s-01", ("arrive",))
    scene.tap("tag-0101", at("12:01"), "badge", BADGE_A, "s-01", ("depart",))
    # 13:00 power cut during s-04's visit at c-1002 (phone); power back at 13:20
    scene.tap("tag-0102", at("13:00"), "phone", phone_raw, "s-04", ("arrive",))
    boards["tag-0102"].power_cut()
    say("13:05 tag-0102   power cut")
    boards["tag-0102"].power_restore()
    boards["tag-0102"].wait_ready(60)
    say("13:20 tag-0102   power back (boot 2: clock unset until the next `time`)")
    event = scene.tap("tag-0102", at("13:30"), "phone", phone_raw, "s-04", ("depart", "arrive"))
    if event["type"] == "arrive":
        say("               the open visit did not survive the power cut: a new arrival")
    # 15:00 network outage at c-1001: the arrival is journaled, delivered after the restore
    scene.clock("tag-0101", at("15:00"))
    boards["tag-0101"].network_cut()
    say("15:00 tag-0101   network cut")
    after = scene.last_seq("tag-0101")
    boards["tag-0101"].tap("badge", BADGE_B)
    scene.wait_for("tag-0101", after, ("arrive",), STEP_TIMEOUT)
    scene.last_tap[("tag-0101", BADGE_B)] = time.monotonic()
    say("15:00 tag-0101   s-02 taps (badge) → arrive, journaled, not delivered")
    boards["tag-0101"].network_restore()
    say("15:10 tag-0101   network back")
    scene.tap("tag-0101", at("15:45"), "badge", BADGE_B, "s-02", ("depart",))
    # 22:30 late visit at c-1002 by s-02
    scene.tap("tag-0102", at("22:30"), "badge", BADGE_B, "s-02", ("arrive",))
    scene.tap("tag-0102", at("22:50"), "badge", BADGE_B, "s-02", ("depart",))
    # 23:00 s-02 leaves the provider and the office revokes the badge. The lock keeps its
    # allowlist on flash, so the `revoke` waits in the store's outbox until the collector has
    # sent it and the lock's own signed health event shows it done (kvitto.store.outbox).
    scene.clock("lock-0201", at("23:00"))
    _revoke_at_the_office(store, staff["s-02"].credential_id, say)
    scene.tap("lock-0201", at("23:10"), "badge", BADGE_B, "s-02", ("deny",))

    # Everything journaled is collected: wait until the store holds each board's journal.
    journaled = {device: scene.last_seq(device) for device in boards}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(store.event_count(d) >= n for d, n in journaled.items()):
            break
        time.sleep(0.2)
    stored = {d: store.event_count(d) for d in boards}
    say(f"collected {sum(stored.values())} of {sum(journaled.values())} journaled events")
    if stored != journaled:
        raise KvittoError(f"the collector stored {stored}, the boards journaled {journaled}")

    # The provider's claims for the day, some deviating.
    claims_path = out / "claims.csv"
    orders_path = out / "orders.csv"
    _write_orders(orders_path, day, codes)
    claims = _claims(scene, codes)
    _write_claims(claims_path, claims)
    case_dir = out / "case"
    shutil.rmtree(case_dir, ignore_errors=True)
    exported = export_case(store, month, case_dir, provider=PROVIDER, claims=claims_path,
                           orders=orders_path)  # fmt: skip
    say(f"exported the case bundle: {case_dir} ({exported.events} events)")
    # the organisation's keys check the NTAG 424 SUNs (the phone's key is in the registry)
    result = verify_store(store_url, claims_path, loaded_profile, month, orders_path, pki)
    say(f"verified {len(claims)} claims under profile {profile} for {month}")
    document = result.as_dict()
    document["demo"] = {"journaled": journaled, "stored": sum(stored.values()),
                        "exported": exported.events, "day": f"{day}",
                        "outbox": [(r.device, r.type, r.state) for r in store.outbox()]}  # fmt: skip
    report_json = out / "report.json"
    report_json.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    report_html = out / "report.html"
    report_html.write_text(render(result, "html"), encoding="utf-8")
    return DemoOutcome(
        out=out, report_html=report_html, report_json=report_json, case_dir=case_dir,
        month=month, result=result, journaled=journaled, stored=sum(stored.values()),
        exported=exported.events, seconds=0.0,
    )  # fmt: skip


def _claims(scene: Day, codes: dict[str, str]) -> list[dict[str, str]]:
    at = scene.moment

    def iso(moment: dt.datetime) -> str:
        return moment.isoformat(timespec="minutes")

    approved = iso(at("18:00"))
    rows = []

    def claim(claim_id, customer, staff, role, start, end, via="tag", **extra):
        row = {
            "claim_id": claim_id, "customer": customer, "staff": staff, "activity": codes[role],
            "start": iso(at(start)), "end": iso(at(end)), "registered_via": via,
            "registered_at": iso(at(end)), "approved_at": approved,
        }  # fmt: skip
        row.update(extra)
        rows.append(row)

    claim("k-01", "c-2001", "s-01", "visit", "07:30", "08:15", "lock")
    claim("k-02", "c-2001", "s-02", "visit", "07:32", "08:15", "lock", double_staffing="1")
    claim("k-03", "c-1001", "s-03", "visit", "09:00", "09:40")
    claim("k-04", "c-1002", "s-03", "visit", "09:40", "10:05")
    claim("k-05", "c-2001", "s-04", "alarm", "11:14", "11:35", "alarm_unit")
    claim("k-06", "c-1001", "s-01", "declined", "12:00", "12:01",
          planned_start=iso(at("12:00")), planned_end=iso(at("12:30")))  # fmt: skip
    claim("k-07", "c-1002", "s-04", "visit", "13:00", "13:30")
    claim("k-08", "c-1001", "s-02", "visit", "15:00", "16:10")  # longer than the evidence
    claim("k-09", "c-1002", "s-01", "visit", "16:30", "17:00", "manual")  # no evidence
    claim("k-10", "c-1002", "s-02", "visit", "22:30", "22:50")  # late evening
    claim("k-11", "c-2001", "s-02", "alarm", "02:31", "02:48", "alarm_unit")  # night alarm
    claim("k-12", "c-1001", "s-01", "extra", "19:00", "19:20", "manual")  # not ordered
    return rows


CLAIM_HEADER = (
    "claim_id", "customer", "staff", "activity", "start", "end", "registered_via",
    "registered_at", "approved_at", "adjusted_at", "double_staffing", "count", "reason",
    "planned_start", "planned_end", "notified_at", "proof",
)  # fmt: skip


def _write_claims(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CLAIM_HEADER, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: row.get(name, "") for name in CLAIM_HEADER})


def _write_orders(path: Path, day: dt.date, codes: dict[str, str]) -> None:
    from kvitto.verify.check import ORDER_HEADER

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ORDER_HEADER)
        for customer, code, minutes, double in order_rows(codes):
            writer.writerow([customer, code, minutes, f"{day.replace(day=1)}", "", double, 0])


def _summary(console: Console, outcome: DemoOutcome) -> None:
    result = outcome.result
    claims = {c.claim_id: c for c in result.claims}
    table = Table(title=f"kvitto demo · {result.profile} · {result.month}")
    wide = console.width >= 140
    columns = ["claim", "cust.", "staff", "activity", "claimed", "rule", "outcome", "min"]
    for column in columns + (["reason"] if wide else []):
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    colours = {"reject": "red", "adjust": "yellow", "follow_up": "cyan"}
    for claim_id, claim in claims.items():
        findings = result.findings_for(claim_id)
        span = f"{claim.local_start:%H:%M}-{claim.local_end:%H:%M}"
        base = [claim_id, claim.customer, claim.staff, claim.activity, span]
        if not findings:
            table.add_row(*base, "", "[green]payable[/]", str(claim.minutes), *[""][: int(wide)])
        for finding in findings:
            outcome_text = f"[{colours.get(finding.outcome, 'white')}]{finding.outcome}[/]"
            reason = [finding.reason] if wide else []
            table.add_row(*base, finding.rule, outcome_text, str(finding.payable_minutes),
                          *reason)  # fmt: skip
            base = ["", "", "", "", ""]
    console.print(table)
    integrity = Table(title="evidence")
    integrity.add_column("what")
    integrity.add_column("count", justify="right")
    integrity.add_row("events journaled by the boards", str(sum(outcome.journaled.values())))
    integrity.add_row("events stored by the collector", str(outcome.stored))
    integrity.add_row("events in the case bundle", str(outcome.exported))
    integrity.add_row("events verified", str(result.counts.get("events", 0)))
    integrity.add_row("open visits", str(result.counts.get("open_visits", 0)))
    for issue in result.integrity:
        integrity.add_row(
            f"{issue['rule']} {issue['device']}#{issue['seq']}: {issue['reason']}", ""
        )
    console.print(integrity)
    console.print(f"report: {outcome.report_html}  (JSON: {outcome.report_json})")
    console.print(f"case bundle: {outcome.case_dir}  ·  {outcome.seconds:.0f} s")
