"""`kvitto ota push` end to end (issue #22): a signed image through a real Mosquitto to a virtual
board running the real firmware; the board writes it to its other slot, restarts on trial,
passes its self-test once the collector acknowledges its first event, and keeps it; visits
tapped during the update are all delivered; `kvitto fleet` then shows the new version."""

from __future__ import annotations

import json
import threading
import time

from board_support import board_public_key
from click.testing import CliRunner
from collect_support import wait_for
from ota_support import sim_image

from kvitto.cli import cli
from kvitto.collect.collector import Collector
from kvitto.fleet.ota import Pusher
from kvitto.fleet.release import make_release_key, sign_image
from kvitto.fleet.status import fleet_status
from kvitto.install.pki import ensure_org
from kvitto.sim.board import VirtualBoard, make_config
from kvitto.store.db import open_store
from kvitto.store.keys import load_command_key
from kvitto.store.registry import Registry

SALT = bytes(range(16, 32))
UID = "04a1b2c3"


def test_an_update_is_installed_confirmed_and_visits_keep_flowing(tmp_path, mosquitto):
    pki = tmp_path / "pki"
    org = ensure_org(pki)
    release_public = make_release_key(pki)
    image_path = tmp_path / "fw-0.2.0.bin"
    image_path.write_bytes(sim_image("0.2.0", 240_000, 2))
    release, manifest_path = sign_image(pki, image_path, "0.2.0", "sim")
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    store = open_store(store_url)
    registry = Registry(store)
    registry.add_customer("c-1001")
    broker = (mosquitto.host, mosquitto.port)
    config = make_config("tag-0001", "tag", broker, SALT, org.command_public_key,
                         release_public_key=release_public.hex())  # fmt: skip
    with VirtualBoard(tmp_path / "board", "tag-0001", "tag", broker=broker, config=config,
                      proxy=False) as board:  # fmt: skip
        board.wait_ready()
        registry.add_device("tag-0001", "c-1001", "tag", board_public_key(board.serial_port),
                            "2026-09-01")  # fmt: skip
        collector = Collector(open_store(store_url), mosquitto.url, load_command_key(pki))
        collector.start()
        stop = threading.Event()
        taps = []

        def visits() -> None:  # a carer comes and goes while the update runs
            while not stop.is_set():
                try:
                    board.tap("badge", UID)
                    taps.append(time.monotonic())
                except Exception:
                    pass  # the board restarting into the new firmware
                stop.wait(3.3)  # longer than the tag's debounce: each tap a visit event

        try:
            collector.wait_ready()
            tapper = threading.Thread(target=visits, daemon=True)
            tapper.start()
            pusher = Pusher(store, mosquitto.url, load_command_key(pki), image_path.read_bytes(),
                            manifest_path.read_bytes(), release_public, rate=20)  # fmt: skip
            results = pusher.push(["tag-0001"])
            stop.set()
            tapper.join()
            target = results["tag-0001"]
            assert target.state == "valid", (target, board.log_tail(40))
            assert target.chunks_sent >= pusher.chunks == 118
            status = board.wait_ready()
            wait_for(lambda: _journal_acked(board), timeout=60, what="every event acknowledged")
            # every event the board journaled, the visits tapped during the update among them,
            # reached the store, in one unbroken chain (a tap in the instant of the restart is
            # never read, so never journaled: the carer sees no green light and taps again)
            rows = store.events("tag-0001")
            visits = [row for row in rows if row[2] in ("arrive", "depart")]
            assert len(taps) >= 2 and len(visits) >= len(taps) - 1
            assert [row[1] for row in rows] == list(range(1, status["next_seq"]))
            assert all(row[5] == 1 for row in rows[1:])
            assert status["boot"] == 2  # one restart: into the new image
            wait_for(lambda: _version(store) == "0.2.0", timeout=60, what="a health report")
        finally:
            stop.set()
            collector.stop()
            collector.store.close()
    assert release.version == "0.2.0"
    store.close()


def _journal_acked(board: VirtualBoard) -> bool:
    status = board.wait_ready()
    return status["acked"] == status["next_seq"] - 1


def _version(store) -> str | None:
    [status] = fleet_status(store, int(time.time() * 1000))
    return status.version


def test_a_failed_canary_stops_the_rollout(tmp_path, mosquitto):
    """The canary holds no release key (provisioned before `kvitto release key`): it refuses
    the offer with its reason, journaled, and the rest of the fleet is never offered it."""
    pki = tmp_path / "pki"
    org = ensure_org(pki)
    make_release_key(pki)  # the devices were provisioned before it: they hold none
    image_path = tmp_path / "fw-0.2.0.bin"
    image_path.write_bytes(sim_image("0.2.0", 10_000, 2))
    _, manifest_path = sign_image(pki, image_path, "0.2.0", "sim")
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    store = open_store(store_url)
    registry = Registry(store)
    registry.add_customer("c-1001")
    broker = (mosquitto.host, mosquitto.port)
    config = make_config("tag-0001", "tag", broker, SALT, org.command_public_key)
    with VirtualBoard(tmp_path / "board", "tag-0001", "tag", broker=broker, config=config,
                      proxy=False) as board:  # fmt: skip
        board.wait_ready()
        registry.add_device("tag-0001", "c-1001", "tag", board_public_key(board.serial_port),
                            "2026-09-01")  # fmt: skip
        registry.add_device("tag-0002", "c-1001", "tag", bytes(32), "2026-09-01")
        # through the command as an installer runs it: exit status 1, the push not finished
        pushed = CliRunner().invoke(cli, [
            "ota", "push", "--store", store_url, "--broker", mosquitto.url, "--pki", str(pki),
            "--image", str(image_path), "--manifest", str(manifest_path),
            "--device", "tag-0001", "--device", "tag-0002", "--canary", "1", "--format", "json",
        ])  # fmt: skip
        assert pushed.exit_code == 1, pushed.output
        results = json.loads(pushed.output)
        assert (results["tag-0001"]["state"], results["tag-0001"]["detail"]) == ("refused", "key")
        assert (results["tag-0002"]["state"], results["tag-0002"]["detail"]) == (
            "skipped",
            "canary failed",
        )
        assert results["tag-0002"]["chunks_sent"] == 0 and results["tag-0002"]["started"] == 0
        refusals = [e["x"] for e in board.events() if e["type"] == "health" and "ota" in e["x"]]
        assert refusals == [{"ota": "refused", "reason": "key", "detail": "no release key in "
                             "config.json"}]  # fmt: skip
    store.close()


def test_a_power_cut_mid_transfer_resumes_where_the_board_got_to(tmp_path, mosquitto):
    pki = tmp_path / "pki"
    org = ensure_org(pki)
    release_public = make_release_key(pki)
    image = sim_image("0.2.0", 200_000, 2)
    image_path = tmp_path / "fw.bin"
    image_path.write_bytes(image)
    _, manifest_path = sign_image(pki, image_path, "0.2.0", "sim")
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    store = open_store(store_url)
    registry = Registry(store)
    registry.add_customer("c-1001")
    broker = (mosquitto.host, mosquitto.port)
    config = make_config("tag-0001", "tag", broker, SALT, org.command_public_key,
                         release_public_key=release_public.hex())  # fmt: skip
    with VirtualBoard(tmp_path / "board", "tag-0001", "tag", broker=broker, config=config,
                      proxy=False) as board:  # fmt: skip
        board.wait_ready()
        registry.add_device("tag-0001", "c-1001", "tag", board_public_key(board.serial_port),
                            "2026-09-01")  # fmt: skip
        collector = Collector(open_store(store_url), mosquitto.url, load_command_key(pki))
        collector.start()
        try:
            collector.wait_ready()
            pusher = Pusher(store, mosquitto.url, load_command_key(pki), image,
                            manifest_path.read_bytes(), release_public, rate=40,
                            resend_s=1.0, offer_s=3.0)  # fmt: skip
            cut_at = []

            def cut() -> None:  # pull the plug once about half the image is on the board
                while True:
                    target = pusher.targets.get("tag-0001")
                    if target is not None and target.wanted >= 50:
                        cut_at.append(target.wanted)
                        board.power_cut()
                        time.sleep(0.5)
                        board.power_restore()
                        return
                    time.sleep(0.01)

            cutter = threading.Thread(target=cut, daemon=True)
            cutter.start()
            results = pusher.push(["tag-0001"])
            cutter.join()
            target = results["tag-0001"]
            assert target.state == "valid", (target, board.log_tail(40))
            assert cut_at and target.offers >= 2  # offered again after the cut
            # resumed from the board's saved place (every 16 chunks), not from chunk 0
            assert target.chunks_sent < pusher.chunks + cut_at[0]
        finally:
            collector.stop()
            collector.store.close()
    store.close()
