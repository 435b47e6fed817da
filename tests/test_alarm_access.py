"""Alarm-opened access (issue #23) on virtual boards through a real Mosquitto: while the
customer's alarm is open (call stored, no check-out yet) the customer's lock opens for a
credential of the provider on alarm duty, whatever the schedule and though it is not on the
allowlist; the unlock names the alarm call event; the check-out closes it again. The collector
queues the grants (kvitto.collect.alarm_access); the firmware keeps them (lockpolicy)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from app_support import missing_firmware
from lock_support import Unit, door, provisioned
from test_lock_schedule import run as cli

from kvitto.install.enroll import enroll_badge
from kvitto.store.registry import Registry

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

LOCK, ALARM = "lock-0201", "alarm-0301"
CARE, DUTY = "04a1b2c3", "04d4e5f6"  # the customer's provider's staff; the alarm duty's


def wait_outbox(store, device: str, count: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = store.outbox(device=device)
        if len(rows) >= count and all(row.done_at is not None for row in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{device}: {[(r.id, r.type, r.state) for r in rows]}")


def test_an_open_alarm_opens_the_lock_for_the_alarm_duty_until_check_out(tmp_path, mosquitto):
    def prepare(rig) -> None:
        store = rig.store
        enroll_badge(Registry(store), rig.org.credential_salt, CARE, "s-07", "p-1")
        enroll_badge(Registry(store), rig.org.credential_salt, DUTY, "s-90", "p-larm")
        cli("provider", "add", "p-1", "--municipality", "haninge", "--customer", "c-1001",
            "--store", rig.store_url)  # fmt: skip
        cli("provider", "add", "p-larm", "--municipality", "haninge", "--alarm-duty",
            "--store", rig.store_url)  # fmt: skip

    units = Unit(LOCK, "lock"), Unit(ALARM, "alarm")
    with provisioned(tmp_path, mosquitto, *units, prepare=prepare) as rig:
        lock, alarm = rig.boards[LOCK], rig.boards[ALARM]
        store, store_url = rig.store, rig.store_url
        base = ["--store", store_url, "--device", LOCK]
        cli("command", "allow", *base, "--staff", "s-07")  # the duty's badge is not
        cli("command", "time", *base)
        cli("command", "time", "--store", store_url, "--device", ALARM)
        cli("command", "config", *base, "relock_ms=500")
        # the customer's next planned visit is this afternoon: no window now
        later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3)
        (tmp_path / "plan.csv").write_text(
            "customer,start,end,activities\n"
            f"c-1001,{later.isoformat()},{(later + timedelta(minutes=30)).isoformat()},omsorg\n"
        )
        cli("import-plan", str(tmp_path / "plan.csv"), "--provider", "p-1",
            "--store", store_url)  # fmt: skip
        cli("command", "schedule", *base, "--days", "1", "--tolerance-min", "5")
        wait_outbox(store, LOCK, 4)
        wait_outbox(store, ALARM, 1)
        kind, x = door(lock, store, DUTY)
        assert (kind, x["reason"]) == ("deny", "unknown")  # no alarm: not allowlisted
        kind, x = door(lock, store, CARE)
        assert (kind, x["reason"]) == ("deny", "outside_window")

        alarm.press("alarm_call")
        grant = wait_outbox(store, LOCK, 5)[-1]
        assert grant.type == "window" and grant.state == "applied"
        calls = [row for row in store.events(ALARM) if row[2] == "alarm_call"]
        (call,) = calls
        assert grant.x["alarm"] == f"{ALARM} #{call[1]}"
        kind, x = door(lock, store, DUTY)
        assert (kind, x["reason"], x["alarm"]) == ("unlock", "alarm", grant.x["alarm"])
        kind, x = door(lock, store, CARE)  # the customer's own provider: still its schedule
        assert (kind, x["reason"]) == ("deny", "outside_window")

        alarm.press("green")
        time.sleep(0.5)
        alarm.press("yellow")
        closing = wait_outbox(store, LOCK, 6)[-1]
        assert closing.x["alarm"] == grant.x["alarm"] and closing.x["creds"] == []
        assert closing.state == "applied"
        kind, x = door(lock, store, DUTY)
        assert (kind, x["reason"]) == ("deny", "unknown")

        # the collector took every event, the alarm unlock with its link among them
        time.sleep(1.0)
        assert store.execute("SELECT COUNT(*) FROM quarantine")[0][0] == 0
        stored = [row[2] for row in store.events(LOCK)]
        assert stored.count("unlock") == 1 and stored.count("deny") == 4
