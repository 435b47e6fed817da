"""Hostile and faulty messages against the collector and `kvitto ingest` (issue #25): one
validly signed event with numbers the store cannot hold, or any message whose handling raises,
is quarantined and acknowledged, and collection goes on, also after a restart. An operator sees
each quarantined message as a log line and in `kvitto quarantine list`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import cbor2
import pytest
from collect_support import ORG_SEED, FakeDevice, wait_for

from kvitto.cli import main
from kvitto.collect.collector import Collector
from kvitto.collect.intake import Inbound, Intake, ingest, verify_batch
from kvitto.collect.watch import QuarantineLog
from kvitto.store.db import QuarantineRow, Store, open_store
from kvitto.store.registry import Registry

HUGE = [2**63 - 1 + 1, 2**64 - 1]  # above what SQLite INTEGER / PostgreSQL BIGINT hold
EDGE = 2**63 - 1  # the largest the store holds: its neighbour seq + 1 does not exist


def signed(device: FakeDevice, seq: int, overrides: dict[int, Any] | None = None) -> bytes:
    """A validly signed event of `device` with the fields given (not in its journal)."""
    fields: dict[int, Any] = {
        0: 1, 1: device.device_id, 2: seq, 3: 1, 4: 5, 5: 1790000000, 6: 30, 7: "door_open",
        9: bytes(32),
    }  # fmt: skip
    fields.update(overrides or {})
    return device.sign(cbor2.dumps(fields, canonical=True))


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/kvitto.db"


def register(store_url: str, *devices: FakeDevice) -> None:
    with open_store(store_url) as store:
        registry = Registry(store)
        if registry.customer("c-1001") is None:
            registry.add_customer("c-1001")
        for device in devices:
            registry.add_device(device.device_id, "c-1001", "tag", device.public_key)


def start(store_url: str, broker_url: str) -> Collector:
    collector = Collector(open_store(store_url), broker_url, ORG_SEED, gap_grace=60)
    collector.start()
    collector.wait_ready()
    return collector


def stop(collector: Collector) -> None:
    collector.stop()
    collector.store.close()


def test_poison_events_through_mosquitto_are_quarantined_and_collection_goes_on(
    store_url, mosquitto
):
    attacker, genuine = FakeDevice("tag-0666"), FakeDevice("tag-0042")
    register(store_url, attacker, genuine)
    attacker.connect(mosquitto.host, mosquitto.port)
    genuine.connect(mosquitto.host, mosquitto.port)
    collector = start(store_url, mosquitto.url)
    try:
        for seq in [EDGE, *HUGE]:
            attacker.publish(signed(attacker, seq), wait=True)
        for value in HUGE:  # the other stored numbers too
            attacker.publish(signed(attacker, 7, {4: value}), wait=True)
        for message in genuine.events(3):
            genuine.publish(message, wait=True)
        wait_for(lambda: collector.store.event_count("tag-0042") == 3, what="genuine events")
        wait_for(lambda: collector.stats().rejected == 4, what="the poison quarantined")
        assert collector.error is None
        reasons = [row[3] for row in collector.store.quarantined()]
        assert all(reason.startswith("bad-payload") for reason in reasons), reasons
        # The edge value is storable; its missing neighbour seq + 1 is not looked up.
        assert [row[1] for row in collector.store.events("tag-0666")] == [EDGE]
    finally:
        stop(collector)
    # A restart: nothing comes back from the broker (the poison was acknowledged), and the
    # genuine device's next events are stored.
    collector = start(store_url, mosquitto.url)
    try:
        for message in genuine.events(2):
            genuine.publish(message, wait=True)
        wait_for(lambda: collector.store.event_count("tag-0042") == 5, what="after the restart")
        assert collector.error is None
        assert collector.stats().rejected == 0
        assert len(collector.store.quarantined()) == 4
    finally:
        stop(collector)
        attacker.disconnect()
        genuine.disconnect()


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_poison_events_in_a_file_are_quarantined_by_ingest_twice(tmp_path, store_url, capsys):
    attacker, genuine = FakeDevice("tag-0666"), FakeDevice("tag-0042")
    register(store_url, attacker, genuine)
    path = tmp_path / "evidence.cbor-seq"
    poison = [signed(attacker, seq) for seq in HUGE] + [signed(attacker, 3, {5: HUGE[0]})]
    path.write_bytes(b"".join([*poison, *genuine.events(3)]))
    for _ in range(2):  # again: nothing stops a second run either
        code, out, err = run(
            ["ingest", str(path), "--store", store_url, "--format", "json"], capsys
        )
        assert (code, err) == (0, "")
    report = json.loads(out)
    assert (report["stored"], report["duplicates"], report["rejected"]) == (0, 3, 3)
    with open_store(store_url) as store:
        assert store.event_count("tag-0042") == 3 and store.event_count("tag-0666") == 0
        rows = store.quarantined()
        assert len(rows) == 6 and all("above 9223372036854775807" in r[3] for r in rows)


class _FailsFor(Store):
    """A real SQLite store whose chain lookup raises for one device: a fault nobody foresaw."""

    bad_device = "tag-0666"

    def stored_hashes(self, device, seqs):
        if device == self.bad_device:
            raise RuntimeError("disk says no for this one")
        return super().stored_hashes(device, seqs)

    def stored_hashes_in(self, spans):
        spans = list(spans)
        if any(device == self.bad_device for device, _, _ in spans):
            raise RuntimeError("disk says no for this one")
        return super().stored_hashes_in(spans)


def test_a_message_whose_handling_raises_is_quarantined_alone(store_url):
    attacker, genuine = FakeDevice("tag-0666"), FakeDevice("tag-0042")
    register(store_url, attacker, genuine)
    with open_store(store_url) as plain:
        store = _FailsFor(plain.url, plain.dialect, plain._connection)
        intake = Intake(store)
        intake.reload_keys()
        messages = [*genuine.events(4), attacker.next_event(), *genuine.events(3)]
        batch = [Inbound(m, f"test {n}", None, 1) for n, m in enumerate(messages)]
        results = verify_batch(
            [(m, None) for m in messages], intake.keys(["tag-0042", "tag-0666"])
        )
        outcome = intake.store_batch(batch, results)
        assert (outcome.stored, outcome.rejected, outcome.reasons) == (7, 1, {"error": 1})
        assert store.event_count("tag-0042") == 7 and store.event_count("tag-0666") == 0
        (row,) = store.quarantined()
        assert row[0] == "test 4" and row[1] == "tag-0666"
        assert row[3] == "error: RuntimeError: disk says no for this one"


def test_each_quarantined_message_is_one_log_line(store_url, mosquitto, caplog):
    attacker = FakeDevice("tag-0666")
    register(store_url)  # the attacker is not registered
    attacker.connect(mosquitto.host, mosquitto.port)
    collector = start(store_url, mosquitto.url)
    try:
        with caplog.at_level(logging.WARNING, logger="kvitto.collect"):
            attacker.publish(attacker.next_event(), wait=True)
            wait_for(lambda: collector.stats().rejected == 1, what="the quarantine")
        (line,) = [r.getMessage() for r in caplog.records if r.name == "kvitto.collect"]
        assert line.startswith("quarantined: unknown-device: 'tag-0666' is not registered")
        assert line.endswith("(device tag-0666, topic kvitto/v1/tag-0666/evt)")
    finally:
        stop(collector)
        attacker.disconnect()


def test_the_quarantine_log_is_rate_limited_and_says_what_it_held_back(caplog):
    now = [0.0]
    quarantine_log = QuarantineLog(burst=3, window=10.0, clock=lambda: now[0])
    row = QuarantineRow(1, "kvitto/v1/tag-0666/evt", "tag-0666", None, "bad-signature: x", b"")
    with caplog.at_level(logging.WARNING, logger="kvitto.collect"):
        quarantine_log([row] * 50)
        assert len(caplog.records) == 3
        now[0] = 11.0
        quarantine_log([row])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[3].startswith("47 more quarantined messages were not logged")
    assert lines[4].startswith("quarantined: bad-signature")


def test_kvitto_collect_into_a_file_writes_lines_while_it_runs(tmp_path, store_url, mosquitto):
    attacker = FakeDevice("tag-0666")
    register(store_url)
    attacker.connect(mosquitto.host, mosquitto.port)
    out, err = tmp_path / "collect.out", tmp_path / "collect.err"
    command = [
        sys.executable, "-m", "kvitto", "collect", "--broker", mosquitto.url, "--store",
        store_url, "--interval", "0.2", "--workers", "0",
    ]  # fmt: skip
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=dict(os.environ))
    try:
        wait_for(lambda: "connected (lost 0)" in out.read_text(), what="a status line in the file")
        time.sleep(0.3)  # the subscription is confirmed right after the connection
        attacker.publish(attacker.next_event(), wait=True)
        wait_for(lambda: "quarantined: unknown-device" in err.read_text(), what="the log line")
        wait_for(lambda: "rejected unknown-device 1" in out.read_text(), what="the count")
        assert process.poll() is None  # all of this while it runs
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        attacker.disconnect()
    assert process.returncode == 0


def test_quarantine_list_shows_each_refused_message(tmp_path, store_url, capsys):
    genuine, stranger = FakeDevice("tag-0042"), FakeDevice("tag-0777")
    register(store_url, genuine)
    path = tmp_path / "evidence.cbor-seq"
    path.write_bytes(b"".join([genuine.next_event(), stranger.next_event(), b"\x40"]))
    with open_store(store_url) as store:
        ingest(store, path)
    code, out, _ = run(["quarantine", "list", "--store", store_url, "--format", "json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [(r["source"], r["device"], r["reason"].split(":")[0]) for r in rows] == [
        (f"{path} item 2", "tag-0777", "unknown-device"),
        (f"{path} item 3", None, "malformed"),
    ]
    assert (
        hashlib.sha256(bytes.fromhex(rows[0]["message"])).digest()
        == hashlib.sha256(stranger.journal[1]).digest()
    )
    code, out, _ = run(["quarantine", "list", "--store", store_url, "--last", "1"], capsys)
    assert code == 0 and out.count("\n") == 1 and "item 3" in out and "malformed" in out
