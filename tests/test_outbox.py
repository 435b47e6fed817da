"""The command outbox (`kvitto command`, kvitto.store.outbox): commands checked when queued, sent by
a running collector while the device is online, again after a reconnect, and closed only by
the device's own signed events. Against a real Mosquitto, with a CPython device."""

from __future__ import annotations

import hashlib
import json

import cbor2
import pytest
from click.testing import CliRunner
from collect_support import ORG_SEED, FakeDevice, wait_for

from kvitto.cli import cli
from kvitto.collect.collector import Collector
from kvitto.errors import KvittoError
from kvitto.evidence.cose import split_sign1
from kvitto.store.db import open_store
from kvitto.store.outbox import due, parse_setting, queue_command
from kvitto.store.registry import Registry

CRED = bytes.fromhex("198f61fa6e666ca15e852132fe1190e3")
OTHER = bytes.fromhex("00112233445566778899aabbccddeeff")
NOW = 1_790_000_000_000


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    registry = Registry(store)
    registry.add_customer("c-1001")
    for device_id, role in (("lock-0201", "lock"), ("lock-0202", "lock"), ("tag-0042", "tag")):
        registry.add_device(device_id, "c-1001", role, FakeDevice(device_id).public_key)
    yield store
    store.close()


def commands_seen(device: FakeDevice) -> list[tuple[str, dict]]:
    """(type, x) of each command the device accepted (acks left out)."""
    seen = []
    for raw in device.raw_commands:
        fields = cbor2.loads(split_sign1(raw)[2])
        if fields[7] != "ack":
            seen.append((fields[7], fields.get(10, {})))
    return seen


# -- queueing: what a device would refuse is refused here, with the reason --------------------


def test_a_command_a_device_would_refuse_is_not_queued(store):
    with pytest.raises(KvittoError, match="not registered"):
        queue_command(store, "lock-9999", "allow", {"creds": [CRED]}, NOW)
    with pytest.raises(KvittoError, match="only a lock has an allowlist"):
        queue_command(store, "tag-0042", "allow", {"creds": [CRED]}, NOW)
    with pytest.raises(KvittoError, match="relock_ms: a tag has no such setting"):
        queue_command(store, "tag-0042", "config", {"relock_ms": 5000}, NOW)
    with pytest.raises(KvittoError, match="16-byte credential id"):
        queue_command(store, "lock-0201", "revoke", {"creds": [b"short"]}, NOW)
    with pytest.raises(KvittoError, match="one of allow, revoke, config, time"):
        queue_command(store, "lock-0201", "ack", {"upto": 3}, NOW)
    Registry(store).revoke_device("lock-0202", "2026-10-01")
    with pytest.raises(KvittoError, match="revoked"):
        queue_command(store, "lock-0202", "allow", {"creds": [CRED]}, NOW)
    assert store.outbox() == []


def test_settings_from_the_command_line_name_the_bad_part():
    assert parse_setting("relock_ms=8000") == ("relock_ms", 8000)
    assert parse_setting("tag_mode=False") == ("tag_mode", False)
    with pytest.raises(KvittoError, match="name=value"):
        parse_setting("relock_ms")
    with pytest.raises(KvittoError, match="'colour': one of"):
        parse_setting("colour=red")
    with pytest.raises(KvittoError, match="'soon' is not an integer"):
        parse_setting("relock_ms=soon")


def test_due_waits_for_an_offline_device_and_resends_after_a_reconnect(store):
    first = queue_command(store, "lock-0201", "allow", {"creds": [CRED]}, NOW)
    queue_command(store, "lock-0202", "allow", {"creds": [CRED]}, NOW)
    rows = store.outbox()
    online = {"lock-0201": "online", "lock-0202": "offline"}
    assert [r.device for r in due(rows, NOW, online, {})] == ["lock-0201"]
    assert store.command_sent(first, NOW, None)
    assert not store.command_sent(first, NOW + 1, None)  # another collector sent it already
    rows = store.outbox()
    assert [r.device for r in due(rows, NOW + 1000, online, {})] == []  # sent, not yet due
    assert [r.device for r in due(rows, NOW + 60_000, online, {})] == ["lock-0201"]
    # the device came back after the send: it may have missed it
    assert [r.device for r in due(rows, NOW + 2000, online, {"lock-0201": NOW + 1500})] == [
        "lock-0201"
    ]


def test_a_store_of_version_1_gains_the_outbox(tmp_path):
    from kvitto.store.migrations import MIGRATIONS

    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url, migrate=False)
    store.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at TEXT NOT NULL)"
    )
    version, description, statements = MIGRATIONS[0]
    for statement in statements:
        store.execute(statement.format(blob="BLOB", bigint="INTEGER",
                                       serial="INTEGER PRIMARY KEY AUTOINCREMENT",
                                       clustered="WITHOUT ROWID"))  # fmt: skip
    store.execute(
        "INSERT INTO schema_version VALUES (1, ?, '2026-10-01T00:00:00Z')", (description,)
    )
    store.close()
    upgraded = open_store(url)
    assert upgraded.schema_version() == MIGRATIONS[-1][0]  # and every later one
    assert upgraded.outbox() == []
    upgraded.close()


# -- the collector sends and settles --------------------------------------------------------


@pytest.fixture
def running(store, mosquitto):
    started: list = []

    def start(*device_ids: str):
        devices = [FakeDevice(d).connect(mosquitto.host, mosquitto.port) for d in device_ids]
        collector = Collector(
            open_store(store.url), mosquitto.url, ORG_SEED, outbox_interval=0.1, outbox_resend=2.0
        )
        collector.start()
        collector.wait_ready()
        started.append((devices, collector))
        return devices, collector

    yield start
    for devices, collector in started:
        collector.stop()
        collector.store.close()
        for device in devices:
            device.disconnect()


def test_a_revoke_reaches_the_lock_and_closes_on_its_health_event(store, running):
    command_id = queue_command(store, "lock-0201", "revoke", {"creds": [CRED]}, NOW)
    (lock,), collector = running("lock-0201")
    wait_for(lambda: commands_seen(lock), what="the revoke command at the lock")
    assert commands_seen(lock)[0] == ("revoke", {"creds": [CRED]})
    [row] = store.outbox()
    assert row.state == "sent" and row.attempts >= 1
    # An unrelated health event closes nothing; the lock's allowlist change does.
    lock.publish(lock.next_event("health", t=None, task="reader"), wait=True)
    lock.publish(lock.next_event("health", t=None, revoke=1), wait=True)
    wait_for(lambda: store.outbox()[0].done_at is not None, what="the command closed")
    [row] = store.outbox()
    assert (row.id, row.state, row.done_seq) == (command_id, "applied", 2)
    assert row.outcome == "applied (event 2)"
    assert collector.stats().commands_done == 1
    sent = len(commands_seen(lock))
    lock.publish(lock.next_event("arrive"), wait=True)
    wait_for(lambda: store.event_count("lock-0201") == 3, what="the next event stored")
    assert len(commands_seen(lock)) == sent  # closed: never sent again


def test_a_resend_after_the_device_answered_does_not_keep_the_command_open(store):
    # the race CI met under load: the outcome's row was received (received_at) before a resend
    # stamped a later sent_at, and committed only after that round's settle had looked
    from kvitto.evidence.cose import split_sign1 as split
    from kvitto.store.db import EventRow
    from kvitto.store.outbox import settle

    command_id = queue_command(store, "lock-0201", "revoke", {"creds": [CRED]}, NOW)
    assert store.command_sent(command_id, NOW + 1_000, None)
    lock = FakeDevice("lock-0201")
    message = lock.next_event("health", t=None, revoke=1)
    payload = split(message)[2]
    row = EventRow("lock-0201", 1, 1, 1000, None, None, "health", None,
                   hashlib.sha256(payload).digest(), message, NOW + 2_000)  # fmt: skip
    assert store.command_sent(command_id, NOW + 3_000, NOW + 1_000)  # the resend
    store.insert_events([row])
    closed = settle(store, store.outbox(open_only=True), NOW + 4_000)
    assert [r.id for r in closed] == [command_id]
    assert store.outbox()[0].outcome == "applied (event 1)"
    # an event received before the command was queued closes nothing
    later = queue_command(store, "lock-0201", "revoke", {"creds": [OTHER]}, NOW + 5_000)
    assert store.command_sent(later, NOW + 6_000, None)
    early = lock.next_event("health", t=None, revoke=1)
    store.insert_events([EventRow("lock-0201", 2, 1, 2000, None, None, "health", None,
                                  b"\0" * 32, early, NOW + 4_500)])  # fmt: skip
    assert settle(store, store.outbox(open_only=True), NOW + 7_000) == []


def test_an_unanswered_command_is_sent_again_and_a_refusal_is_recorded(store, running):
    queue_command(store, "tag-0042", "config", {"debounce_ms": 900}, NOW)
    (tag,), _ = running("tag-0042")
    wait_for(lambda: len(commands_seen(tag)) >= 3, timeout=30, what="attempts after the first")
    assert all(c == ("config", {"debounce_ms": 900}) for c in commands_seen(tag))
    refusal = {"config": "refused", "error": "out of range", "field": "debounce_ms"}
    tag.publish(tag.next_event("health", t=None, **refusal), wait=True)
    wait_for(lambda: store.outbox()[0].done_at is not None, what="the refusal recorded")
    assert store.outbox()[0].outcome == "refused: debounce_ms: out of range (event 1)"
    assert store.outbox()[0].state == "refused"


def test_outcomes_close_the_open_commands_in_queue_order(store, running):
    first = queue_command(store, "lock-0201", "allow", {"creds": [CRED]}, NOW)
    second = queue_command(store, "lock-0201", "allow", {"creds": [OTHER]}, NOW)
    clock = queue_command(store, "lock-0201", "time", {}, NOW)
    (lock,), _ = running("lock-0201")
    wait_for(lambda: len(commands_seen(lock)) >= 3, what="three commands")
    types = [t for t, _ in commands_seen(lock)[:3]]
    assert types == ["allow", "allow", "time"]
    assert commands_seen(lock)[2][1]["t"] > NOW // 1000  # the time of sending
    lock.publish(lock.next_event("clock_sync", t=None, offset_ms=5, src="cmd"), wait=True)
    lock.publish(lock.next_event("health", t=None, allow=1), wait=True)
    wait_for(lambda: len(store.outbox(open_only=True)) == 1, what="two closed")
    done = {row.id: row.done_seq for row in store.outbox() if row.done_at is not None}
    assert done == {clock: 1, first: 2}
    assert [row.id for row in store.outbox(open_only=True)] == [second]


def test_a_lock_offline_gets_its_command_when_it_comes_back(store, running, mosquitto):
    offline = FakeDevice("lock-0202").connect(mosquitto.host, mosquitto.port)
    assert offline.client is not None
    offline.client.publish("kvitto/v1/lock-0202/state", b"offline", qos=1, retain=True)
    offline.disconnect()
    (_,), collector = running("lock-0201")
    wait_for(lambda: collector.stats().connected, what="collector up")
    wait_for(lambda: store.device_states().get("lock-0202") == "offline", what="state")
    queue_command(store, "lock-0202", "revoke", {"creds": [CRED]}, NOW)
    wait_for(lambda: collector._outbox_checked > 0, what="an outbox pass")
    assert store.outbox()[0].sent_at is None  # not sent into the void
    back = FakeDevice("lock-0202").connect(mosquitto.host, mosquitto.port)
    try:
        wait_for(lambda: commands_seen(back), what="the revoke after the reconnect")
        assert commands_seen(back)[0] == ("revoke", {"creds": [CRED]})
    finally:
        back.disconnect()


# -- the command line ------------------------------------------------------------------------


def test_revoking_a_credential_queues_it_for_every_lock(store, tmp_path):
    registry = Registry(store)
    registry.add_credential(CRED.hex(), "s-07", "p-1", "badge")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["revoke", "--store", store.url, "--credential", CRED.hex(), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["locks"] == ["lock-0201", "lock-0202"]
    rows = store.outbox()
    assert [(r.device, r.type, r.x) for r in rows] == [
        ("lock-0201", "revoke", {"creds": [CRED]}),
        ("lock-0202", "revoke", {"creds": [CRED]}),
    ]
    result = runner.invoke(cli, ["command", "list", "--store", store.url, "--open"])
    assert result.exit_code == 0, result.output
    assert [line.split()[1:4] for line in result.output.splitlines()] == [
        ["lock-0201", "revoke", "queued"],
        ["lock-0202", "revoke", "queued"],
    ]
    result = runner.invoke(cli, ["command", "cancel", "--store", store.url, str(rows[1].id)])
    assert result.exit_code == 0, result.output
    assert [r.state for r in store.outbox()] == ["queued", "cancelled"]
    result = runner.invoke(cli, ["command", "cancel", "--store", store.url, str(rows[1].id)])
    assert "cancelled already" in str(result.exception)


def test_enrolling_with_locks_queues_allow_and_a_wrong_lock_enrolls_nothing(store, tmp_path):
    from kvitto.install.pki import ensure_org

    ensure_org(tmp_path / "pki")
    pki = str(tmp_path / "pki")
    runner = CliRunner()
    enroll = ["enroll", "--store", store.url, "--pki", pki, "--provider", "p-1"]
    enroll += ["--format", "json"]
    result = runner.invoke(cli, [*enroll, "--staff", "s-07", "--badge", "04a1b2c3",
                                 "--lock", "lock-0202"])  # fmt: skip
    assert result.exit_code == 0, result.output
    first = json.loads(result.output)
    assert first["locks"] == ["lock-0202"]
    result = runner.invoke(cli, [*enroll, "--staff", "s-08", "--badge", "04a1b2c4", "--all-locks"])
    assert result.exit_code == 0, result.output
    second = json.loads(result.output)
    assert second["locks"] == ["lock-0201", "lock-0202"]
    assert [(r.device, r.type, r.x) for r in store.outbox()] == [
        ("lock-0202", "allow", {"creds": [bytes.fromhex(first["credential"])]}),
        ("lock-0201", "allow", {"creds": [bytes.fromhex(second["credential"])]}),
        ("lock-0202", "allow", {"creds": [bytes.fromhex(second["credential"])]}),
    ]
    # A tag has no allowlist: the error names it, and neither the badge nor a command is kept.
    result = runner.invoke(cli, [*enroll, "--staff", "s-09", "--badge", "04a1b2c5",
                                 "--lock", "lock-0201", "--lock", "tag-0042"])  # fmt: skip
    assert isinstance(result.exception, KvittoError)
    assert "tag-0042" in str(result.exception) and "only a lock" in str(result.exception)
    assert sorted(c.staff for c in Registry(store).credentials()) == ["s-07", "s-08"]
    assert len(store.outbox()) == 3
    # Without --lock, the text output says that no door opens for it yet.
    result = runner.invoke(cli, [*enroll[:-2], "--staff", "s-10", "--badge", "04a1b2c6"])  # text
    assert result.exit_code == 0, result.output
    assert "no lock lets it in yet" in result.output


def test_command_line_allow_by_staff_and_config_with_errors_named(store):
    registry = Registry(store)
    registry.add_credential(CRED.hex(), "s-07", "p-1", "badge")
    registry.add_credential(OTHER.hex(), "s-07", "p-1", "badge")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["command", "allow", "--store", store.url, "--device", "lock-0201", "--staff", "s-07"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(store.outbox()[0].x["creds"]) == sorted([CRED, OTHER])
    result = runner.invoke(
        cli, ["command", "config", "--store", store.url, "--device", "lock-0201", "relock_ms=8000"]
    )
    assert result.exit_code == 0, result.output
    assert store.outbox()[1].x == {"relock_ms": 8000}
    result = runner.invoke(
        cli, ["command", "config", "--store", store.url, "--device", "tag-0042", "relock_ms=8000"]
    )
    assert "a tag has no such setting" in str(result.exception)
    result = runner.invoke(
        cli, ["command", "allow", "--store", store.url, "--device", "lock-0201", "--staff", "s-99"]
    )
    assert "no credential enrolled" in str(result.exception)
    assert len(store.outbox()) == 2


def test_a_collector_without_the_command_key_says_what_waits(store, mosquitto, capsys):
    from kvitto.collect.live import run_collect

    queue_command(store, "lock-0201", "allow", {"creds": [CRED]}, NOW)
    run_collect(store.url, mosquitto.url, output_format="json", duration=0.3)
    assert "1 queued command(s) in the outbox wait" in capsys.readouterr().err
    assert store.outbox()[0].sent_at is None  # unsigned commands are never sent


def test_a_device_revoked_after_queueing_gets_no_more_commands(store, running):
    queue_command(store, "lock-0201", "revoke", {"creds": [CRED]}, NOW)
    Registry(store).revoke_device("lock-0201", "2026-10-01")
    (lock,), _ = running("lock-0201")
    wait_for(lambda: store.outbox()[0].done_at is not None, what="the command closed")
    [row] = store.outbox()
    assert (row.state, row.attempts, row.outcome) == (
        "cancelled",
        0,
        "cancelled: the device was revoked",
    )
    assert commands_seen(lock) == []
