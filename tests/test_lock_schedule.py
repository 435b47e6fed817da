"""A lock that opens only when care is due (issue #23), end to end: the provider's plan.csv is
imported, `kvitto command schedule` queues the lock's visit windows in the outbox, a running
collector signs and sends them through a real Mosquitto to the real firmware on a virtual
board. Without a schedule the configured fallback decides (both ways); inside a window the
door opens, outside it is a signed `deny` with reason `outside_window`; a replayed or older
schedule is refused and changes nothing; a coordinator's one-off window opens it again."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from app_support import missing_firmware
from click.testing import CliRunner
from lock_support import Unit, provisioned
from lock_support import door as tap_door

from kvitto.cli import cli
from kvitto.evidence.cose import split_sign1
from kvitto.install.enroll import enroll_badge
from kvitto.sim.board import VirtualBoard
from kvitto.store.outbox import queue_command
from kvitto.store.registry import Registry
from kvitto.verify.workdays import local as stockholm

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

UID = "04a1b2c3"
LOCK = "lock-0201"


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def wait_closed(store, count: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = store.outbox()
        if len(rows) == count and all(row.done_at is not None for row in rows):
            return rows[-1]
        time.sleep(0.1)
    raise AssertionError(f"outbox not closed: {[(r.id, r.type, r.state) for r in rows]}")


def door(board: VirtualBoard, store) -> tuple[str, dict]:
    return tap_door(board, store, UID)


def plan(path, start: datetime, minutes: int) -> str:
    end = start + timedelta(minutes=minutes)
    path.write_text(
        f"customer,start,end,activities\nc-1001,{start.isoformat()},{end.isoformat()},omsorg\n"
    )
    return str(path)


def test_schedule_window_fallback_and_refused_schedules(tmp_path, mosquitto):
    def prepare(rig) -> None:
        enroll_badge(Registry(rig.store), rig.org.credential_salt, UID, "s-07", "p-1")
        run("provider", "add", "p-1", "--municipality", "haninge", "--customer", "c-1001",
            "--store", rig.store_url)  # fmt: skip

    with provisioned(tmp_path, mosquitto, Unit(LOCK, "lock"), prepare=prepare) as rig:
        board, store, store_url = rig.boards[LOCK], rig.store, rig.store_url
        base = ["--store", store_url, "--device", LOCK]
        run("command", "allow", *base, "--staff", "s-07")
        run("command", "time", *base)  # no NTP here: the lock's clock from the host
        run("command", "config", *base, "relock_ms=500")
        wait_closed(store, 3)
        assert [row.state for row in store.outbox()] == ["applied"] * 3

        # a new install holds no schedule: the fallback opens, and says so
        kind, x = door(board, store)
        assert (kind, x["reason"], x["fallback"]) == ("unlock", "fallback", "open_for_allowed")

        now = datetime.now(timezone.utc).replace(microsecond=0)
        # begun ten minutes ago, but not before the local midnight: the plan imported below
        # replaces the days it names, and just after midnight ten minutes ago is yesterday
        midnight = stockholm(now).replace(hour=0, minute=0, second=0).astimezone(timezone.utc)
        begun = max(now - timedelta(minutes=10), midnight)
        run("import-plan", plan(tmp_path / "plan.csv", begun, 30),
            "--provider", "p-1", "--store", store_url)  # fmt: skip
        run("command", "schedule", *base, "--days", "2", "--tolerance-min", "5")
        held = wait_closed(store, 4)
        assert held.state == "applied" and held.x["w"]
        kind, x = door(board, store)
        assert (kind, x["reason"]) == ("unlock", "window")

        # the visit moved to later (or earlier) the same day: outside its window the door stays
        # shut. The same local day, since an imported plan replaces the days it names: three
        # hours on from 21:00 Stockholm time would be a visit of tomorrow beside today's (and
        # the first visit was put on today, above)
        moved = now + timedelta(hours=3)
        if stockholm(moved).date() != stockholm(now).date():
            moved = now - timedelta(hours=3)
        run("import-plan", plan(tmp_path / "plan.csv", moved, 30),
            "--provider", "p-1", "--store", store_url)  # fmt: skip
        run("command", "schedule", *base, "--days", "2", "--tolerance-min", "5")
        newest = wait_closed(store, 5)
        assert newest.state == "applied"
        assert newest.x["issued"] > held.x["issued"]
        kind, x = door(board, store)
        assert (kind, x["reason"]) == ("deny", "outside_window")

        # the same schedule again, and last hour's, under fresh command numbers: refused
        at = int(time.time() * 1000)
        queue_command(store, LOCK, "schedule", dict(newest.x), at)
        replayed = wait_closed(store, 6)
        queue_command(store, LOCK, "schedule", dict(held.x), at)
        older = wait_closed(store, 7)
        assert replayed.state == older.state == "refused"
        assert "old" in (replayed.outcome or "") and "old" in (older.outcome or "")
        kind, x = door(board, store)
        assert (kind, x["reason"]) == ("deny", "outside_window")  # the newest still holds

        # a schedule gone stale (a long outage) with fallback deny: nothing opens
        run("command", "config", *base, "fallback=deny")
        stale = dict(newest.x, issued=newest.x["issued"] + 10, until=int(time.time()) - 60)
        queue_command(store, LOCK, "schedule", stale, at)
        wait_closed(store, 9)
        kind, x = door(board, store)
        assert (kind, x["reason"], x["fallback"]) == ("deny", "fallback", "deny")

        # a coordinator's one-off window for an unplanned visit
        local = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        run("command", "window", *base, "--start", (local - timedelta(minutes=1)).isoformat(),
            "--end", (local + timedelta(minutes=30)).isoformat())  # fmt: skip
        grant = wait_closed(store, 10)
        assert grant.type == "window" and grant.state == "applied"
        kind, x = door(board, store)
        assert (kind, x["reason"]) == ("unlock", "grant")

        # every decision is signed evidence the collector stored, none quarantined
        time.sleep(1.0)
        reasons = [
            cbor2.loads(split_sign1(bytes(row[6]))[2])[10].get("reason")
            for row in store.events(LOCK)
            if row[2] in ("unlock", "deny")
        ]
        assert reasons == ["fallback", "window", "outside_window", "outside_window",
                           "fallback", "grant"]  # fmt: skip
