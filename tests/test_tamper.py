"""A tamper switch (issue #23), end to end: the real firmware on a virtual board whose board.json
names a `tamper` input; opening the housing is a signed `tamper` event {"open": 1} through a
real Mosquitto, which raises the `tamper` alert in the fleet view until the switch closes again.
The tag role never loads the tamper code (device.roles.wiring is the lock's and alarm's)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cbor2
import pytest
from app_support import missing_firmware

from kvitto.collect.collector import Collector
from kvitto.evidence.cose import split_sign1
from kvitto.fleet.status import fleet_status
from kvitto.install.pki import ensure_org
from kvitto.install.provision import Provisioning, provision
from kvitto.sim.board import BOARDS, VirtualBoard
from kvitto.store.db import open_store
from kvitto.store.keys import load_command_key

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

ALARM = "alarm-0301"


def until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def tamper_alert(store) -> bool:
    [unit] = [d for d in fleet_status(store, int(time.time() * 1000)) if d.device == ALARM]
    return "tamper" in unit.alerts


def tamper_board(tmp_path: Path) -> Path:
    board = json.loads((BOARDS / "sim.json").read_text())
    board["inputs"]["tamper"] = {"pin": 14, "active": 1, "pull": None}
    path = tmp_path / "sim-tamper.json"
    path.write_text(json.dumps(board))
    return path


def test_opening_the_housing_is_signed_and_alerts_until_it_closes(tmp_path, mosquitto):
    pki = tmp_path / "pki"
    ensure_org(pki)
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(store_url).close()
    board = VirtualBoard(
        tmp_path / "alarm", ALARM, "alarm", broker=(mosquitto.host, mosquitto.port),
        provision=False, proxy=False, board=tamper_board(tmp_path),
    )  # fmt: skip
    with board:
        board.wait_ready(60, app=False)
        provision(
            Provisioning(
                port=board.serial_port, device=ALARM, customer="c-1001", role="alarm",
                board="sim", store_url=store_url, pki_dir=pki, broker_host=mosquitto.host,
                broker_port=mosquitto.port, ntp=[], label_dir=tmp_path / "labels", reset=False,
            )
        )  # fmt: skip
        board.reset()
        board.wait_ready(60)
        store = open_store(store_url)
        collector = Collector(
            open_store(store_url), mosquitto.url, load_command_key(pki), outbox_interval=0.2
        )
        collector.start()
        try:
            collector.wait_ready()
            until(lambda: store.events(ALARM), "the unit's first events")
            assert not tamper_alert(store)

            board.control("set tamper 1")
            until(lambda: tamper_alert(store), "the tamper alert")
            board.control("set tamper 0")
            until(lambda: not tamper_alert(store), "the alert to clear")

            opens = [
                cbor2.loads(split_sign1(bytes(row[6]))[2])[10]["open"]
                for row in store.events(ALARM)
                if row[2] == "tamper"
            ]
            assert opens == [1, 0]
            assert store.execute("SELECT COUNT(*) FROM quarantine")[0][0] == 0

            def reports() -> list[dict]:
                found = [
                    cbor2.loads(split_sign1(bytes(row[6]))[2])[10]
                    for row in store.events(ALARM)
                    if row[2] == "health"
                ]
                return [x for x in found if "fw" in x]

            # the health report journals with the input's state too (an int: x holds no bool)
            assert until(reports, "a health report")[0]["tamper"] == 0
        finally:
            collector.stop()
            collector.store.close()
            store.close()
