"""`kvitto fleet` (issue #22): signed health reports go through a real Mosquitto and the
collector into the store; each alert is raised by a report (or by silence) and cleared by a
later one; text, JSON and the Prometheus exposition say the same; exit status 1 on alert."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from collect_support import ORG_SEED, FakeDevice, wait_for
from prometheus_client.parser import text_string_to_metric_families

from kvitto.cli import cli
from kvitto.collect.collector import Collector
from kvitto.fleet.status import fleet_status, render
from kvitto.store.db import open_store
from kvitto.store.registry import Registry

GOOD = {"fw": "0.2.0", "every_s": 900, "reset": "power", "heap": 90000, "heap_min": 80000,
        "backlog": 0, "fill": 1, "reader": "ok", "resets": 0, "sync_s": 60, "rssi": -61}  # fmt: skip


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    registry = Registry(store)
    registry.add_customer("c-1001")
    registry.add_customer("c-1002")
    yield store
    store.close()


@pytest.fixture
def fleet(store, mosquitto):
    """Two devices and a collector; `report(device, **changes)` sends one health report and
    waits until it is stored. Returns (report, devices)."""
    registry = Registry(store)
    devices = {}
    for device_id, customer, role in (("tag-0001", "c-1001", "tag"),
                                      ("lock-0002", "c-1002", "lock")):  # fmt: skip
        device = FakeDevice(device_id)
        registry.add_device(device_id, customer, role, device.public_key, "2026-09-01")
        devices[device_id] = device.connect(mosquitto.host, mosquitto.port)
    collector = Collector(open_store(store.url), mosquitto.url, ORG_SEED)
    collector.start()
    collector.wait_ready()

    def report(device_id: str, **changes) -> None:
        device = devices[device_id]
        x = {**GOOD, **changes}
        x = {key: value for key, value in x.items() if value is not None}
        device.next_event("health", **x)
        device.publish_seqs([device.seq])
        wait_for(lambda: store.event_count(device_id) == device.seq, what="report stored")

    yield report, devices
    collector.stop()
    collector.store.close()
    for device in devices.values():
        device.disconnect()


def alerts(store, now_s: int, **options) -> dict[str, list[str]]:
    return {d.device: d.alerts for d in fleet_status(store, now_s * 1000, **options)}


def received_s(store, device: str) -> int:
    return (
        store.execute("SELECT MAX(received_at) FROM events WHERE device = ?", (device,))[0][0]
        // 1000
    )


def test_each_alert_is_raised_by_a_report_and_cleared_by_the_next(store, fleet):
    report, _ = fleet
    report("tag-0001")
    report("lock-0002")
    now = received_s(store, "lock-0002")
    assert alerts(store, now) == {"tag-0001": [], "lock-0002": []}

    cases = [
        ({"reader": "failed", "resets": 7}, "reader"),
        ({"backlog": 250, "fill": 40}, "backlog"),
        ({"sync_s": 90000}, "clock"),
        ({"fw": "0.1.9"}, "version"),
    ]
    for changes, alert in cases:
        report("tag-0001", **changes)
        now = received_s(store, "tag-0001")
        assert alerts(store, now, current="0.2.0") == {"tag-0001": [alert], "lock-0002": []}
        report("tag-0001")  # the next report shows it mended
        now = received_s(store, "tag-0001")
        assert alerts(store, now, current="0.2.0") == {"tag-0001": [], "lock-0002": []}

    # silent: no event for more than two of its report intervals, cleared by the next event
    later = now + 2 * 900 + 1
    assert alerts(store, later)["tag-0001"] == ["silent"]
    assert alerts(store, now + 2 * 900)["tag-0001"] == []
    # a clock never synced in this boot counts the device's whole uptime (FakeDevice: seq s)
    report("lock-0002", sync_s=None)
    now = received_s(store, "lock-0002")
    assert alerts(store, now)["lock-0002"] == []
    assert alerts(store, now + 86400)["lock-0002"] == ["silent", "clock"]


def test_fleet_command_text_json_prometheus_and_exit_status(store, fleet):
    report, _ = fleet
    report("tag-0001")
    report("lock-0002", fw="0.1.0", reader="failed")
    runner = CliRunner()
    base = ["fleet", "--store", store.url]
    result = runner.invoke(cli, [*base, "--format", "json"])
    assert result.exit_code == 1, result.output  # in alert: drops into existing monitoring
    document = json.loads(result.output)
    rows = {d["device"]: d for d in document["devices"]}
    assert rows["lock-0002"]["alerts"] == ["reader", "version"]  # 0.2.0 is the newest seen
    assert rows["tag-0001"]["alerts"] == [] and rows["tag-0001"]["customer"] == "c-1001"
    assert document["versions"] == {"0.1.0": 1, "0.2.0": 1}

    text = runner.invoke(cli, base).output.splitlines()
    assert text[0].split() == [
        "device", "customer", "role", "last", "seen", "version", "update", "alerts"
    ]  # fmt: skip
    assert any(line.startswith("lock-0002") and line.endswith("reader, version") for line in text)
    assert text[-1] == "2 devices, 1 in alert; versions 0.1.0: 1, 0.2.0: 1"

    exposition = runner.invoke(cli, [*base, "--format", "prometheus"]).output
    samples = {
        (sample.name, sample.labels.get("device"), sample.labels.get("alert")): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    assert samples[("kvitto_device_alert", "lock-0002", "reader")] == 1
    assert samples[("kvitto_device_alert", "tag-0001", "reader")] == 0
    assert samples[("kvitto_device_heap_min_free_bytes", "tag-0001", None)] == 80000
    assert samples[("kvitto_fleet_devices_in_alert", None, None)] == 1

    report("lock-0002")  # mended and updated: the fleet is quiet, exit 0
    result = runner.invoke(cli, [*base, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert render(fleet_status(store, 0), "text", 0)  # renders with any clock


def test_a_rollout_shows_each_devices_last_update_step(store, fleet):
    report, devices = fleet
    report("tag-0001", fw="0.1.0")
    report("lock-0002", fw="0.1.0")
    for device_id, x in (
        ("tag-0001", {"ota": "installed", "fw": "0.2.0"}),
        ("tag-0001", {"ota": "valid", "fw": "0.2.0"}),
        ("lock-0002", {"ota": "installed", "fw": "0.2.0"}),
        ("lock-0002", {"ota": "rolled-back", "fw": "0.1.0", "refused": "0.2.0"}),
    ):  # the devices' own steps, as device.link.ota journals them
        device = devices[device_id]
        device.next_event("health", **x)
        device.publish_seqs([device.seq])
        wait_for(lambda d=device, i=device_id: store.event_count(i) == d.seq, what="stored")
    report("tag-0001", fw="0.2.0")
    now = received_s(store, "tag-0001") * 1000
    rows = {d.device: d for d in fleet_status(store, now)}
    assert (rows["tag-0001"].version, rows["tag-0001"].update) == ("0.2.0", "valid 0.2.0")
    assert (rows["lock-0002"].version, rows["lock-0002"].update) == ("0.1.0", "rolled-back 0.2.0")
    assert rows["lock-0002"].alerts == ["version"] and rows["tag-0001"].alerts == []
    assert (
        render(list(rows.values()), "text", now)
        .splitlines()[-1]
        .endswith("versions 0.1.0: 1, 0.2.0: 1")
    )


def test_a_device_that_never_reported_is_silent(store):
    Registry(store).add_device("tag-0009", "c-1001", "tag", bytes(32), "2026-09-01")
    [status] = fleet_status(store, 1_790_000_000_000)
    assert status.alerts == ["silent"] and status.version is None


def test_a_lock_door_held_open_alerts_until_it_closes(store, fleet):
    """issue #23: a lock's `door_open` with `held_s` raises `door`; the door_close clears it."""
    report, devices = fleet
    report("lock-0002")
    lock = devices["lock-0002"]

    def door(kind: str, **x) -> None:
        lock.next_event(kind, **x)
        lock.publish_seqs([lock.seq])
        wait_for(lambda: store.event_count("lock-0002") == lock.seq, what="door event stored")

    door("door_open")
    now = received_s(store, "lock-0002")
    assert alerts(store, now)["lock-0002"] == []  # open, not yet too long
    door("door_open", held_s=300)
    assert alerts(store, now)["lock-0002"] == ["door"]
    assert "door" in render(fleet_status(store, now * 1000), "text", now * 1000)
    door("door_close")
    assert alerts(store, now)["lock-0002"] == []
