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
from lock_support import Unit, provisioned, until

from kvitto.evidence.cose import split_sign1
from kvitto.fleet.status import fleet_status
from kvitto.sim.board import BOARDS

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

ALARM = "alarm-0301"


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
    unit = Unit(ALARM, "alarm", board=tamper_board(tmp_path))
    with provisioned(tmp_path, mosquitto, unit) as rig:
        board, store = rig.boards[ALARM], rig.store
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
