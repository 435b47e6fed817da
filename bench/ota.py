"""Firmware updates over MQTT (issue #22): a 1.5 MB signed image to 1 and to 20 virtual boards
through a local Mosquitto, against a raw MQTT transfer of the same bytes, side by side; carers
tap at every board meanwhile, and every visit event the boards journaled must reach the store.

    .venv/bin/python bench/ota.py                       # 1 and 20 boards, 1.5 MB
    .venv/bin/python bench/ota.py --boards 1,4 --size 300000 --rate 400

Per fleet size it prints the transfer time (the offer until the last board has the image
written and its hash checked), the raw time (the same chunks published at QoS 1 by one paho
client to one paho subscriber per board topic, until the last arrives) and their ratio; the
time until every board runs the new image, confirmed (restarted, self-tested, its first event
acknowledged); the visit events stored, and `events=<stored>/<journaled> lost=<n>`. The boards are the
real firmware on the unix port (kvitto.sim.board.VirtualBoard) with simulated partitions
(sim.partition); chunks are 2 KiB, acknowledged one by one, at most `--window` in flight per
board and `--rate` a second in all (kvitto.fleet.ota).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from board_support import board_public_key  # type: ignore[import-not-found]  # noqa: E402
from collector import Broker  # noqa: E402
from ota_support import sim_image  # type: ignore[import-not-found]  # noqa: E402

from kvitto.collect.collector import Collector  # noqa: E402
from kvitto.fleet.ota import CHUNK, MAGIC, Pusher  # noqa: E402
from kvitto.fleet.release import make_release_key, sign_image  # noqa: E402
from kvitto.install.pki import ensure_org  # noqa: E402
from kvitto.sim.board import VirtualBoard, make_config  # noqa: E402
from kvitto.store.db import open_store  # noqa: E402
from kvitto.store.keys import load_command_key  # noqa: E402
from kvitto.store.registry import Registry  # noqa: E402

SALT = bytes(range(16, 32))


def raw_transfer(port: int, devices: list[str], image: bytes, window: int) -> float:
    """The same chunks, QoS 1, one publisher, one subscriber per board topic, `window` chunks
    in flight per topic as the update has: seconds until the last chunk arrives."""
    chunks = [MAGIC + i.to_bytes(4, "big") + image[i * CHUNK : (i + 1) * CHUNK]
              for i in range((len(image) + CHUNK - 1) // CHUNK)]  # fmt: skip
    received = {device: 0 for device in devices}
    done = threading.Event()
    lock = threading.Lock()
    subscribers = []
    for device in devices:
        ready = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{device}")

        def on_message(client, userdata, message, device=device):
            with lock:
                received[device] += 1
                if all(count == len(chunks) for count in received.values()):
                    done.set()

        client.on_message = on_message
        client.on_subscribe = lambda *args, ready=ready: ready.set()

        def on_connect(client, userdata, flags, reason_code, properties, device=device):
            client.subscribe(f"raw/{device}/cmd", 1)

        client.on_connect = on_connect
        client.connect("127.0.0.1", port)
        client.loop_start()
        ready.wait(10)
        subscribers.append(client)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-publisher")
    publisher.max_inflight_messages_set(window * len(devices))
    publisher.max_queued_messages_set(0)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    started = time.perf_counter()
    for chunk in chunks:
        for device in devices:
            publisher.publish(f"raw/{device}/cmd", chunk, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - started
    for client in [publisher, *subscribers]:
        client.disconnect()
        client.loop_stop()
    return elapsed


def update(workdir: Path, broker: Broker, count: int, size: int, rate: float,
           window: int) -> dict[str, float | int | str]:  # fmt: skip
    pki = workdir / "pki"
    org = ensure_org(pki)
    release_public = make_release_key(pki)
    image_path = workdir / "fw.bin"
    image = sim_image("0.2.0", size, 2)
    image_path.write_bytes(image)
    _, manifest_path = sign_image(pki, image_path, "0.2.0", "sim")
    store_url = f"sqlite:///{workdir / 'kvitto.db'}"
    store = open_store(store_url)
    registry = Registry(store)
    registry.add_customer("c-1001")
    devices = [f"tag-{n:04d}" for n in range(1, count + 1)]
    boards = []
    for device in devices:
        config = make_config(device, "tag", ("127.0.0.1", broker.port), SALT,
                             org.command_public_key, release_public_key=release_public.hex())  # fmt: skip
        board = VirtualBoard(workdir / device, device, "tag", broker=("127.0.0.1", broker.port),
                             config=config, proxy=False)  # fmt: skip
        board.start()
        boards.append(board)
    for board in boards:
        board.wait_ready(120)
        registry.add_device(board.device, "c-1001", "tag", board_public_key(board.serial_port),
                            "2026-09-01")  # fmt: skip
    collector = Collector(open_store(store_url), broker.url, load_command_key(pki))
    collector.start()
    collector.wait_ready()
    stop = threading.Event()

    def visits() -> None:
        while not stop.is_set():
            for board in boards:
                try:
                    board.tap("badge", "04a1b2c3")
                except Exception:
                    pass  # restarting into the new image
            stop.wait(3.3)

    tapper = threading.Thread(target=visits, daemon=True)
    try:
        pusher = Pusher(store, broker.url, load_command_key(pki), image,
                        manifest_path.read_bytes(), release_public, window=window, rate=rate,
                        confirm_s=600)  # fmt: skip
        tapper.start()
        started = time.perf_counter()
        results = pusher.push(devices)
        elapsed = time.perf_counter() - started
        transfer = max(t.installed - t.started for t in results.values() if t.installed)
        stop.set()
        tapper.join()
        states = sorted({target.state for target in results.values()})
        journaled = stored = 0
        deadline = time.monotonic() + 120
        for board in boards:
            while time.monotonic() < deadline:
                status = board.wait_ready(60)
                if status["acked"] == status["next_seq"] - 1:
                    break
                time.sleep(0.5)
            status = board.wait_ready(60)
            journaled += status["next_seq"] - 1
            stored += store.event_count(board.device)
        visit_events = sum(
            1 for device in devices for row in store.events(device)
            if row[2] in ("arrive", "depart")
        )  # fmt: skip
        return {"seconds": elapsed, "transfer": transfer, "states": ",".join(states), "journaled": journaled,
                "stored": stored, "visits": visit_events}  # fmt: skip
    finally:
        stop.set()
        collector.stop()
        collector.store.close()
        for board in boards:
            board.stop()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boards", default="1,20")
    parser.add_argument("--size", type=int, default=1_500_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="chunks a second in all")
    parser.add_argument("--window", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvitto-ota-") as temporary:
        for count in [int(n) for n in args.boards.split(",")]:
            workdir = Path(temporary) / f"fleet-{count}"
            workdir.mkdir()
            broker = Broker(workdir, 1000)
            try:
                devices = [f"tag-{n:04d}" for n in range(1, count + 1)]
                raw = raw_transfer(broker.port, devices, sim_image("0.2.0", args.size, 2),
                                   args.window)  # fmt: skip
                result = update(workdir, broker, count, args.size, args.rate, args.window)
            finally:
                broker.stop()
            lost = int(result["journaled"]) - int(result["stored"])
            print(
                f"boards={count} image={args.size} transfer={result['transfer']:.1f}s "
                f"raw={raw:.2f}s ratio={float(result['transfer']) / raw:.1f} "
                f"confirmed={result['seconds']:.1f}s "
                f"outcome={result['states']} visits={result['visits']} "
                f"events={result['stored']}/{result['journaled']} lost={lost}",
                flush=True,
            )


if __name__ == "__main__":
    main()
