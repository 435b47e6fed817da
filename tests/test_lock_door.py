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

from kvitto.cli import cli
from kvitto.collect.collector import Collector
from kvitto.evidence.cose import split_sign1
from kvitto.fleet.status import fleet_status
from kvitto.install.pki import ensure_org
from kvitto.install.provision import Provisioning, provision
from kvitto.sim.board import VirtualBoard
from kvitto.store.db import open_store
from kvitto.store.keys import load_command_key

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

LOCK = "lock-0201"


def until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def door_alert(store) -> bool:
    [lock] = [d for d in fleet_status(store, int(time.time() * 1000)) if d.device == LOCK]
    return "door" in lock.alerts


def test_a_door_held_open_is_signed_and_alerts_until_it_closes(tmp_path, mosquitto):
    pki = tmp_path / "pki"
    ensure_org(pki)
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(store_url).close()
    board = VirtualBoard(
        tmp_path / "lock", LOCK, "lock", broker=(mosquitto.host, mosquitto.port),
        provision=False, proxy=False,
    )  # fmt: skip
    with board:
        board.wait_ready(60, app=False)
        provision(
            Provisioning(
                port=board.serial_port, device=LOCK, customer="c-1001", role="lock",
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
        finally:
            collector.stop()
            collector.store.close()
            store.close()
