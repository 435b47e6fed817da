"""The store: migrations, (device, seq) stored once, command sequence — SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from collect_support import fresh_database, postgres_cluster

from kvitto.errors import KvittoError
from kvitto.store.db import EventRow, QuarantineRow, open_store
from kvitto.store.migrations import MIGRATIONS
from kvitto.store.outbox import next_command_seqs


@pytest.fixture(scope="module")
def pg_cluster():
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/kvitto.db"
    cluster = request.getfixturevalue("pg_cluster")
    return fresh_database(cluster, f"t_{request.node.name.split('[')[0][-40:]}".lower())


def row(seq: int, device: str = "tag-0042", body: bytes = b"m") -> EventRow:
    message = body + seq.to_bytes(4, "big")
    return EventRow(
        device, seq, 1, seq * 10, None, None, "arrive", None,
        hashlib.sha256(message).digest(), message, 1_790_000_000_000,
    )  # fmt: skip


def test_migrations_run_once_and_record_their_version(store_url):
    store = open_store(store_url)
    assert store.schema_version() == MIGRATIONS[-1][0]
    store.close()
    again = open_store(store_url)
    assert again.migrate() == []  # nothing left to apply
    assert again.schema_version() == MIGRATIONS[-1][0]
    again.close()


def test_each_device_seq_is_stored_once(store_url):
    with open_store(store_url) as store:
        assert store.insert_events([row(1), row(2), row(2)]) == [True, True, False]
        assert store.insert_events([row(2), row(3), row(1, "tag-0043")]) == [False, True, True]
        assert store.event_count() == 4
        assert store.event_count("tag-0042") == 3
        assert store.seqs_after("tag-0042", 1) == [2, 3]
        assert store.stored_hashes("tag-0042", [1, 9]) == {1: row(1).payload_hash}


def test_a_failed_transaction_leaves_nothing(store_url):
    with open_store(store_url) as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.insert_events([row(1)])
                raise RuntimeError("power cut")
        assert store.event_count() == 0


def test_quarantine_keeps_the_message_and_reason(store_url):
    with open_store(store_url) as store:
        store.quarantine(
            [QuarantineRow(1, "kvitto/v1/x/evt", None, None, "malformed: x", b"\x01")]
        )
        assert store.quarantined() == [("kvitto/v1/x/evt", None, None, "malformed: x", b"\x01")]


def test_command_seq_rises_and_never_repeats(store_url):
    with open_store(store_url) as store:
        first = store.next_command_seq("tag-0042", now_ms=1000)
        second = store.next_command_seq("tag-0042", now_ms=1000)  # same millisecond
        third = store.next_command_seq("tag-0042", now_ms=500)  # clock stepped back
        assert first == 1000 and second == 1001 and third == 1002
        assert store.next_command_seq("lock-0001", now_ms=7) == 7
    with open_store(store_url) as reopened:
        assert reopened.next_command_seq("tag-0042", now_ms=1000) == 1003


def test_command_seqs_taken_together_are_those_taken_one_by_one(store_url, tmp_path):
    devices = ["tag-0042", "lock-0001", "tag-0042", "tag-0043", "tag-0042"]
    with open_store(store_url) as store, open_store(f"sqlite:///{tmp_path}/b.db") as other:
        for each in (store, other):
            each.next_command_seq("tag-0042", now_ms=5000)  # above the clock below
            each.next_command_seq("lock-0001", now_ms=10)
        for now in (1000, 1000, 9000):
            with store.transaction():
                together = next_command_seqs(store, devices, now_ms=now)
            one_by_one = [other.next_command_seq(device, now_ms=now) for device in devices]
            assert together == one_by_one
        assert together == [9000, 9000, 9001, 9000, 9002]
    with open_store(store_url) as reopened:
        assert reopened.next_command_seq("tag-0042", now_ms=0) == 9003


def test_bad_store_urls_are_refused_with_the_url_named(tmp_path):
    with pytest.raises(KvittoError, match="mysql"):
        open_store("mysql://x/y")
    with pytest.raises(KvittoError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/kvitto.db")


def test_collectors_starting_together_migrate_once(store_url):
    import threading

    errors: list[BaseException] = []

    def open_and_close():
        try:
            open_store(store_url).close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_store(store_url) as store:
        assert store.execute("SELECT COUNT(*) FROM schema_version")[0][0] == len(MIGRATIONS)


def test_the_outbox_keeps_a_command_until_it_is_closed_once(store_url):
    with open_store(store_url) as store:
        first = store.queue_command("lock-0201", "revoke", {"creds": [bytes(16)]}, 1000)
        second = store.queue_command("lock-0201", "config", {"relock_ms": 8000}, 1001)
        assert [(r.id, r.state, r.x) for r in store.outbox()] == [
            (first, "queued", {"creds": [bytes(16)]}),
            (second, "queued", {"relock_ms": 8000}),
        ]
        assert store.command_sent(first, 2000, None)
        assert not store.command_sent(first, 2001, None)  # a second collector lost the race
        assert store.command_sent(first, 3000, 2000)
        assert store.command_done(first, 4000, "applied (event 7)", 7)
        assert not store.command_done(first, 4001, "applied (event 8)", 8)  # closed once
        [row] = store.outbox(open_only=True)
        assert row.id == second
        done = store.outbox(device="lock-0201")[0]
        assert (done.state, done.attempts, done.sent_at, done.done_seq) == ("applied", 2, 3000, 7)


def test_verdicts_of_a_version_7_store_gain_the_deadline_marker(store_url, monkeypatch):
    """Version 8 (issue #19): a verdict judged before it has deadline_last 0, so the deviation
    queue moves its stored deadline on once (kvitto.web.judge.refresh_deadlines); the
    index that finds the due rows exists."""
    import kvitto.store.db as db

    monkeypatch.setattr(db, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 8])
    with open_store(store_url) as store:
        assert store.schema_version() == 7
        store.execute(
            "INSERT INTO verdicts (provider, month, customer, claim_id, rule, outcome, "
            "payable_minutes, reason, activity, staff, start_at, end_at, deadline_rule, "
            "deadline_at) VALUES ('p-1', '2026-11', 'c-1', 'k-1', 'D4', 'reject', 0, '', "
            "'omsorg', 's-1', 1, 2, 'D1', 3)"
        )
    monkeypatch.setattr(db, "MIGRATIONS", MIGRATIONS)
    with open_store(store_url) as store:
        assert store.schema_version() == MIGRATIONS[-1][0] >= 8
        assert store.execute("SELECT deadline_rule, deadline_at, deadline_last FROM verdicts") == [
            ("D1", 3, 0)]  # fmt: skip
        plan = store.execute(
            "EXPLAIN QUERY PLAN SELECT claim_id FROM verdicts WHERE provider = 'p-1' "
            "AND deadline_last = 0 AND deadline_at <= 5"
            if store.dialect == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'verdicts'"
        )
        assert "verdicts_due" in repr(plan)
