"""Data heap each firmware module takes when imported, with its code in ROMFS (bench/device.py's
"rom" placement): function objects, classes, module globals, long-int and str constants and the
qstr pool entries an import adds, not bytecode.

    .venv/bin/python bench/imports.py                       # the modules a tag loads, in order
    .venv/bin/python bench/imports.py device.drivers.pn532 device.roles.reader --firmware ../a/firmware

Each figure is gc.mem_alloc() after gc.collect() around one import, in the order given, so a
module's figure leaves out what the ones before it imported. The qstr pool grows by doubling:
the module whose import crosses a boundary is charged the new pool, a few KiB, so compare totals
(or the same order on two firmwares) rather than single modules. 64-bit unix port: objects are
up to twice an ESP32's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import device as device_bench  # noqa: E402  (bench/device.py: the same compile and ROMFS steps)

# The tag role's modules, in the order the app and its link load them (the simulator first,
# as bench/device.py does, so its share is not charged to a device module).
TAG_MODULES = (
    "device device.board device.board.errors device.board.boards device.board.config "
    "device.board.hal device.evidence device.evidence.identity device.link device.link.clock "
    "device.evidence.journal device.roles device.roles.visits device.app device.drivers "
    "device.drivers.pn532 device.drivers.pn532_bus device.drivers.pn532_i2c device.roles.reader "
    "device.drivers.tag_mode device.evidence.cbor device.evidence.sha512 "
    "device.evidence.ed25519_table device.evidence.ed25519 device.evidence.cose "
    "device.evidence.event device.link.mqtt device.link.collector"
).split()

SCRIPT = r"""
import gc, sys, vfs
with open(sys.argv[1], "rb") as f:
    rom = f.read()
vfs.mount(vfs.VfsRom(rom), "/rom")
sys.path.insert(0, "/rom")
import asyncio, hashlib, json, struct, binascii
import sim.hal_sim, sim.pn532sim, sim.buses, sim.flash, sim.control
for name in sys.argv[2:]:
    gc.collect()
    before = gc.mem_alloc()
    try:
        __import__(name)
    except ImportError:
        print(name, -1)
        continue
    gc.collect()
    print(name, gc.mem_alloc() - before)
"""


def measure(firmware: Path, modules: list[str]) -> list[tuple[str, int]]:
    with tempfile.TemporaryDirectory(prefix="kvitto-bench-imports-") as tmp:
        work = Path(tmp)
        device_bench.compile_firmware(work / "mpy", firmware)
        device_bench.build_romfs(work / "mpy", work / "firmware.romfs")
        script = work / "imports.py"
        script.write_text(SCRIPT)
        result = subprocess.run(
            [str(device_bench.BIN / "micropython"), str(script), str(work / "firmware.romfs")]
            + modules,
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, MICROPYPATH=".frozen"),
        )
    rows = []
    for line in result.stdout.splitlines():
        name, _, size = line.partition(" ")
        rows.append((name, int(size)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Data heap per firmware module import (ROMFS)")
    parser.add_argument("modules", nargs="*", default=list(TAG_MODULES))
    parser.add_argument("--firmware", type=Path, default=device_bench.FIRMWARE)
    args = parser.parse_args()
    rows = measure(args.firmware.resolve(), args.modules)
    total = 0
    for name, size in rows:
        if size < 0:
            print(f"{name:24} {'(none)':>8}")
            continue
        total += size
        print(f"{name:24} {size:>8}")
    print(f"{'total':24} {total:>8}  bytes of data heap, 64-bit unix port")


if __name__ == "__main__":
    main()
