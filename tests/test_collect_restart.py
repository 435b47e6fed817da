"""Collector restarts mid-stream (nothing lost, nothing doubled), command sequences that never
repeat, and two collectors sharing one subscription into PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from collect_support import ORG_SEED, FakeDevice, fresh_database, postgres_cluster, wait_for

from kvitto.collect.collector import Collector
from kvitto.store.db import Store, open_store
from kvitto.store.registry import Registry


def registered(store_url: str, *device_ids: str) -> list[FakeDevice]:
    devices = [FakeDevice(device_id) for device_id in device_ids]
    with open_store(store_url) as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        for device in devices:
            registry.add_device(device.device_id, "c-1001", "tag", device.public_key)
    return devices


def start(store_url: str, broker_url: str, **options) -> Collector:
    collector = Collector(open_store(store_url), broker_url, ORG_SEED, **options)
    collector.start()
    collector.wait_ready()
    return collector


def test_a_killed_collector_loses_nothing_and_doubles_nothing(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    (device,) = registered(url, "tag-0042")
    device.connect(mosquitto.host, mosquitto.port)
    total = 3000
    device.events(total)
    first = start(url, mosquitto.url)
    device.publish_seqs(range(1, total + 1), wait=False)
    wait_for(lambda: first.stats().stored >= 300, what="some stored")
    first.kill()  # no flush, no PUBACK for what was queued: the broker must redeliver
    stored_before = first.stats().stored
    first.store.close()
    assert stored_before < total, "the kill came too late to test anything"
    second = start(url, mosquitto.url)
    try:
        wait_for(lambda: device.acked_upto == total, timeout=60, what="ack of everything")
        with open_store(url) as store:
            seqs = [row[1] for row in store.events("tag-0042")]
        assert seqs == list(range(1, total + 1))  # nothing lost, (device, seq) once each
        assert stored_before + second.stats().stored == total  # nothing stored twice
    finally:
        second.stop()
        second.store.close()
        device.disconnect()


class _Died(BaseException):
    """The collector's process ending where it stands (no handler of the collector's catches
    a BaseException that is not its own)."""


class _DiesBeforeCommit(Store):
    """A real SQLite store in which the collector dies after writing its first batch, before
    the COMMIT: the batch was received, verified and written, and is rolled back."""

    def __init__(self, url: str, dialect: str, connection) -> None:
        super().__init__(url, dialect, connection)
        self.written = threading.Event()
        self.die = threading.Event()

    def insert_events(self, rows, *args, **kwargs):
        super().insert_events(rows, *args, **kwargs)
        self.written.set()
        self.die.wait(30)
        raise _Died()


def test_nothing_is_acknowledged_before_its_commit(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    (device,) = registered(url, "tag-0042")
    device.answer_resends = False  # only the broker's redelivery can bring a lost event back
    device.connect(mosquitto.host, mosquitto.port)
    total = 200
    device.events(total)
    with open_store(url) as plain:
        dying = Collector(
            _DiesBeforeCommit(plain.url, plain.dialect, plain._connection), mosquitto.url,
            ORG_SEED,
        )  # fmt: skip
        dying.start()
        dying.wait_ready()
        device.publish_seqs(range(1, total + 1), wait=False)
        store = dying.store
        assert isinstance(store, _DiesBeforeCommit)
        assert store.written.wait(20), "the collector never wrote a batch"
        # Between the write and the commit: nothing may be acknowledged yet, to the device
        # (signed ack) or to the broker (PUBACK: what follows shows the broker kept it all).
        assert device.acked_upto == 0
        store.die.set()
        wait_for(lambda: isinstance(dying.error, _Died), what="the collector to die")
        dying.kill()
        assert dying.stats().stored == 0
        assert plain.event_count("tag-0042") == 0  # rolled back
    second = start(url, mosquitto.url)
    try:
        wait_for(lambda: device.acked_upto == total, timeout=60, what="ack of everything")
        with open_store(url) as check:
            seqs = [row[1] for row in check.events("tag-0042")]
        assert seqs == list(range(1, total + 1))  # the broker redelivered it all, once each
        assert second.stats().stored == total
    finally:
        second.stop()
        second.store.close()
        device.disconnect()


def test_command_sequences_rise_across_restarts_and_replays_are_refused(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    (device,) = registered(url, "tag-0042")
    device.connect(mosquitto.host, mosquitto.port)
    for round_ in range(3):
        collector = start(url, mosquitto.url)
        device.next_event()
        device.publish_seqs([device.seq])
        wait_for(lambda n=round_ + 1: device.acked_upto == n, what=f"ack {round_ + 1}")
        collector.stop()
        collector.store.close()
    seqs = device.command_seqs
    assert len(seqs) >= 3 and seqs == sorted(set(seqs))  # strictly rising, none repeated
    # A replayed command (captured off the broker) is refused by the device.
    assert device.client is not None
    device.client.publish("kvitto/v1/tag-0042/cmd", device.raw_commands[0], qos=1)
    wait_for(lambda: any(r.startswith("replayed") for r in device.refused), what="refusal")
    assert device.command_seqs == seqs
    device.disconnect()


def kvitto(*args: str) -> list[str]:
    return [sys.executable, "-m", "kvitto", *args]


def test_kvitto_collect_survives_sigkill_and_stops_cleanly_on_sigterm(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    (device,) = registered(url, "tag-0042")
    key = tmp_path / "org.key"
    key.write_text(ORG_SEED.hex())
    device.connect(mosquitto.host, mosquitto.port)
    total = 2000
    device.events(total)
    command = kvitto(
        "collect", "--broker", mosquitto.url, "--store", url, "--org-key", str(key),
        "--format", "json", "--interval", "0.2",
    )  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    half = total // 2
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout is not None
        while json.loads(first.stdout.readline())["subscribed"] is not True:
            pass
        device.publish_seqs(range(1, half + 1), wait=False)
        while json.loads(first.stdout.readline())["stored"] < 200:
            pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The second half goes out while no collector runs: the broker queues it for the
    # collector's persistent session, with whatever the first one had not yet acknowledged.
    device.publish_seqs(range(half + 1, total + 1), wait=False)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    # Drain its statistics as they come: an unread pipe would stall a collector that prints
    # every 0.2 s once the pipe buffer fills on a slow, loaded machine.
    lines: list[str] = []
    assert second.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(second.stdout), daemon=True)
    reader.start()
    wait_for(lambda: device.acked_upto == total, timeout=180, what="ack of everything")
    # Its signal handlers are in place once it has printed statistics.
    wait_for(lambda: any('"subscribed": true' in line for line in lines), what="second up")
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=30)
    reader.join(timeout=10)
    assert second.returncode == 0
    assert any(json.loads(line)["stored"] > 0 for line in lines)  # the restart did the rest
    final = json.loads(lines[-1])
    assert final["final"] is True and final["rejected"] == 0
    with open_store(url) as store:
        assert [row[1] for row in store.events("tag-0042")] == list(range(1, total + 1))
    device.disconnect()


@pytest.fixture(scope="module")
def pg_cluster():
    with postgres_cluster() as url:
        yield url


def test_two_collectors_sharing_a_subscription_store_each_event_once_in_postgresql(
    pg_cluster, mosquitto
):
    url = fresh_database(pg_cluster, "shared")
    devices = registered(url, "tag-0042", "tag-0043", "lock-0007")
    per_device = 400
    collectors = [
        start(url, mosquitto.url, client_id=f"collector_{name}", share_group="kvitto")
        for name in "ab"
    ]
    try:
        for device in devices:
            device.connect(mosquitto.host, mosquitto.port)
            device.events(per_device)
        for device in devices:
            device.publish_seqs(range(1, per_device + 1), wait=False)
        for device in devices:
            wait_for(lambda d=device: d.acked_upto == per_device, timeout=60, what="acks")
        time.sleep(0.3)
        stored = [c.stats().stored for c in collectors]
        assert all(count > 0 for count in stored), stored  # both did work
        assert sum(stored) == per_device * len(devices)  # and never the same event twice
        with open_store(url) as store:
            for device in devices:
                rows = store.events(device.device_id)
                assert [row[1] for row in rows] == list(range(1, per_device + 1))
                assert {row[5] for row in rows} == {1}  # chains checked across collectors
            assert store.quarantined() == []
    finally:
        for collector in collectors:
            collector.stop()
            collector.store.close()
        for device in devices:
            device.disconnect()


def test_events_published_while_the_collector_is_down_wait_in_its_session(tmp_path, mosquitto):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    (device,) = registered(url, "tag-0042")
    device.connect(mosquitto.host, mosquitto.port)
    device.events(20)
    first = start(url, mosquitto.url)
    device.publish_seqs(range(1, 11))
    wait_for(lambda: device.acked_upto == 10, what="ack 10")
    first.stop()
    first.store.close()
    device.publish_seqs(range(11, 21))  # nobody collecting: the broker keeps them
    device.answer_resends = False  # so only the persistent session can deliver them
    second = start(url, mosquitto.url)
    try:
        wait_for(lambda: device.acked_upto == 20, what="ack 20")
        assert device.resends == []
        # The first session's PUBACKs (one write per batch) reached the broker: it delivers
        # only what came after, nothing again.
        assert second.stats().received == 10 and second.stats().duplicates == 0
    finally:
        second.stop()
        second.store.close()
        device.disconnect()
