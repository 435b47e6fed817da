"""A lock's visit windows on the host (issue #23, kvitto.store.schedules): built from the plan
in the store, merged and bounded as the lock checks them, `issued` strictly increasing per
lock; bad schedules and grants are refused before they are queued, with a clear message and
exit status 2 from the command line."""

from __future__ import annotations

import pytest
from collect_support import ORG_PUBLIC, ORG_SEED, FakeDevice

from kvitto.cli import main
from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command, verify_command
from kvitto.store.db import open_store
from kvitto.store.outbox import outcome_of, queue_command
from kvitto.store.registry import Registry
from kvitto.store.schedules import schedule_x, window_x

NOW = 1_796_000_000_000  # ms
HOUR = 3_600_000


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    registry = Registry(store)
    registry.add_customer("c-1001")
    registry.add_customer("c-1002")
    registry.add_device("lock-0201", "c-1001", "lock", FakeDevice("lock-0201").public_key)
    registry.add_device("tag-0042", "c-1001", "tag", FakeDevice("tag-0042").public_key)
    rows = [
        ("c-1001", NOW - 2 * HOUR, NOW - HOUR),  # over: left out
        ("c-1001", NOW + HOUR, NOW + HOUR + 1_800_000),
        ("c-1001", NOW + HOUR + 900_000, NOW + 2 * HOUR),  # overlaps the one before: merged
        ("c-1001", NOW + 30 * HOUR, NOW + 30 * HOUR + 1_800_000),
        ("c-1002", NOW + HOUR, NOW + 2 * HOUR),  # another customer's
        ("c-1001", NOW + 80 * HOUR, NOW + 81 * HOUR),  # beyond the days asked for
    ]
    store.executemany(
        "INSERT INTO plan (provider, customer, start_at, end_at, activities, imported_at) "
        "VALUES ('p-1', ?, ?, ?, 'omsorg', 0)",
        rows,
    )
    yield store
    store.close()


def test_schedule_from_the_plan_merged_bounded_and_signed(store):
    x = schedule_x(store, "lock-0201", NOW, days=2, tolerance_s=900)
    second = NOW // 1000
    assert x == {
        "issued": NOW,
        "until": second + 2 * 86400,
        "tol": 900,
        "w": [[second + 3600, second + 7200], [second + 30 * 3600, second + 30 * 3600 + 1800]],
    }
    queue_command(store, "lock-0201", "schedule", x, NOW)
    # queued in the same millisecond, a second schedule is still issued later than the first
    assert schedule_x(store, "lock-0201", NOW, days=2, tolerance_s=900)["issued"] == NOW + 1
    message = sign_command(ORG_SEED, "lock-0201", 7, second + 300, "schedule", x)
    assert verify_command(message, ORG_PUBLIC, "lock-0201").x == x


def test_schedules_and_windows_a_lock_would_refuse_are_not_queued(store):
    with pytest.raises(KvittoError, match="only a lock has a schedule"):
        schedule_x(store, "tag-0042", NOW, 7, 900)
    with pytest.raises(KvittoError, match="only a lock has a door to open"):
        queue_command(store, "tag-0042", "window", {"start": 1, "end": 2}, NOW)
    with pytest.raises(KvittoError, match="--days 40"):
        schedule_x(store, "lock-0201", NOW, 40, 900)
    with pytest.raises(KvittoError, match="tol 9000 is over 7200"):
        queue_command(store, "lock-0201", "schedule",
                      {"issued": 1, "until": 2, "tol": 9000, "w": []}, NOW)  # fmt: skip
    with pytest.raises(KvittoError, match="ends before it starts"):
        queue_command(store, "lock-0201", "schedule",
                      {"issued": 1, "until": 2, "tol": 0, "w": [[5, 4]]}, NOW)  # fmt: skip
    with pytest.raises(KvittoError, match="over already"):
        window_x(100, 200, 300)
    with pytest.raises(KvittoError, match="at most a day"):
        window_x(100, 100 + 86401, 0)
    with pytest.raises(KvittoError, match="fallback 'sometimes' is not one of"):
        queue_command(store, "lock-0201", "config", {"fallback": "sometimes"}, NOW)
    assert store.outbox() == []


def test_a_refused_schedule_closes_its_command_with_the_reason(store):
    queue_command(store, "lock-0201", "schedule",
                  {"issued": 1, "until": 2, "tol": 0, "w": []}, NOW)  # fmt: skip
    [row] = store.outbox()
    refused = {"schedule": "refused", "error": "old: issued 1, holding 5"}
    assert outcome_of(row, "health", refused) == "refused: old: issued 1, holding 5"
    assert outcome_of(row, "health", {"schedule": 0}) == "applied"
    assert outcome_of(row, "health", {"config": {"relock_ms": 500}}) is None


def test_command_line_errors_are_one_line_and_exit_2(store, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    for args, message in (
        (["window", "--start", "2026-12-07T10.00", "--end", "2026-12-07T11:00"], "colon"),
        (["window", "--start", "2026-12-07T10:00", "--end", "2026-12-07T09:00"], "after"),
        (["schedule", "--days", "0"], "--days 0"),
    ):
        with pytest.raises(SystemExit) as exit_status:
            main(["command", *args, "--store", url, "--device", "lock-0201"])
        err = capsys.readouterr().err
        assert exit_status.value.code == 2
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert store.outbox() == []
