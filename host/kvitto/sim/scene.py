"""The demo's scripted day: its boards, staff, orders and claims, the embedded broker, and the
steps of the day as they happen at the doors (`Day`). `kvitto.sim.demo` runs it end to end.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from kvitto.errors import KvittoError

PROVIDER = "p-1"
COMMAND_LIFETIME = 600
STEP_TIMEOUT = 20.0
DEBOUNCE_S = 3.3  # firmware/device/roles/visits.py: a second tap within 3 s is the same tap

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
        self.badges: Any = None  # kvitto.sim.fleet.NtagBadges: NTAG 424 keys and read counters
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
            # acknowledged already, and so gone from the board's journal: the store has it
            stored = self._stored(device, after, types)
            if stored is not None:
                return stored
            time.sleep(0.05)
        raise KvittoError(f"{device}: no {'/'.join(types)} event; log:\n{board.log_tail()}")

    def _stored(self, device: str, after: int, types: tuple[str, ...]) -> dict | None:
        from kvitto.evidence.cose import split_sign1
        from kvitto.evidence.events import decode_payload

        for _, seq, kind, t, _, _, message in self.store.events(device):
            if seq > after and kind in types:
                event = decode_payload(split_sign1(bytes(message))[2])
                return {"seq": seq, "type": kind, "boot": event.boot, "t": t, "x": event.x,
                        "cred": event.cred.hex() if event.cred else None}  # fmt: skip
        return None

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
