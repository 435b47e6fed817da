"""A lock's door left open (issue #23), end to end: the real firmware on a virtual board, its
limit set by a signed `config` command through the outbox and a real Mosquitto; the door held
open past it is one more signed `door_open` with `held_s`, which raises the `door` alert in the
fleet view until the door's `door_close` arrives."""

from __future__ import annotations

import time

import cbor2
import pytest
from app_support import missing_firmware
from click.testing import CliRunner
from lock_support import Unit, provisioned, until

from kvitto.cli import cli
from kvitto.evidence.cose import split_sign1
from kvitto.fleet.status import fleet_status

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

LOCK = "lock-0201"


def door_alert(store) -> bool:
    [lock] = [d for d in fleet_status(store, int(time.time() * 1000)) if d.device == LOCK]
    return "door" in lock.alerts


def test_a_door_held_open_is_signed_and_alerts_until_it_closes(tmp_path, mosquitto):
    with provisioned(tmp_path, mosquitto, Unit(LOCK, "lock")) as rig:
        board, store, store_url = rig.boards[LOCK], rig.store, rig.store_url
        result = CliRunner().invoke(
            cli, ["command", "config", "--store", store_url, "--device", LOCK,
                  "door_open_s=10"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        until(lambda: store.outbox()[0].state == "applied", "the config applied")

        board.door(True)
        held = until(
            lambda: [row for row in store.events(LOCK) if row[2] == "door_open"][1:],
            "the held-open report",
        )
        assert len(held) == 1
        x = cbor2.loads(split_sign1(bytes(held[0][6]))[2])[10]
        assert x["held_s"] >= 10
        assert door_alert(store)
        board.door(False)
        until(lambda: any(row[2] == "door_close" for row in store.events(LOCK)), "close")
        assert not door_alert(store)
