"""Device application figures on the unix port: the least Python heap each role runs in, with
its code on the heap and without, and tap-to-feedback time on the software path (reader's tap
-> credential id -> journal append -> LED).

    .venv/bin/python bench/device.py                          # every role, both placements
    .venv/bin/python bench/device.py --roles tag --taps 6     # quicker
    .venv/bin/python bench/device.py --breakdown              # where the tag's stock heap goes

The heap figure is the smallest `-X heapsize` (1 KiB steps) in which a scripted scenario ends as
it does with 4 MiB: every tap answered, every event journaled, and (with a Mosquitto installed)
every event signed, published to it and acknowledged: a stand-in for the collector (start_acker)
answers each with a signed `ack` command, which the device verifies (an Ed25519 verification per
event, as in the field) before it releases the event. No MemoryError anywhere. The peak depends
on how taps, signatures and acks interleave, which the machine's load changes (an ESP32 is slower
than any of it): the heap found is run CONFIRMATIONS times more, and grows a KiB at a time until
every run passes. Without a broker the link only retries and signing is left out of the figures:
the output says so.

The same compiled firmware (mpy-cross .mpy of device/ and sim/) runs from two places:

  fs   .mpy files on the filesystem, as `kvitto image` ships them today: an import copies the
       bytecode into the heap, as on a stock ESP32 MicroPython build. `code+data`.
  rom  the same .mpy files in a ROMFS image (mpremote's builder) mounted with vfs.VfsRom: the
       bytecode, strings and bytes constants (the Ed25519 comb table) are used in place, as on a
       board whose firmware has them frozen in or a ROMFS partition. The unix port has no ROM,
       so the image is read into one block at the bottom of the heap first and its size is
       taken off: `data` is what the role needs besides its code. Frozen modules keep a little
       more in flash (function and qstr tables), so `data` is an upper bound for a frozen build.

The unix port is a 64-bit build: pointers, object headers and GC blocks (32 bytes, against 16)
are twice the ESP32's, so an object takes up to twice the room there; every figure here is an
upper bound for the board. The min heap counts the simulator's modules and objects (simulated
PN532, flash, pins) too, though a board has none of them; a role's figure ("role", and every
32-bit line) leaves them out, and the base: the interpreter and this script's code, in use
before anything is imported. Provisioning's pre-flight compares a role's figure with the
board's gc.mem_free(), which leaves out the board's own base in the same way. asyncio's module
objects and device.board.hal (a board runs it; the simulator imports it) count as the role's.
A last line gives the interned names (qstr pools) at the end
of each run: ROMFS modules intern their identifiers on the heap, frozen ones do not, and the
pool grows by doubling, so a few names more can move the figure by a whole new pool.

How much of that is the 64-bit build is measured, not guessed, on MicroPython's webassembly
port (bench/heap32.mjs, Node.js; npm package @micropython/micropython-webassembly-pyscript of the
same 1.29 release, installed once into ~/.cache/kvitto-bench): a 32-bit build with the ESP32's
object sizes and 16-byte GC blocks, running the same ROMFS image. There the tag role runs the
same scripted taps without a link (that port has no sockets; nor littlefs, so the simulated flash
is a folder of its in-memory filesystem, nor threads for the simulated watchdog), and the
firmware modules of the tag role with and without its link are imported alone on both ports,
and the link's objects (signer, Link, its MQTT client, the organisation key's comb table, the
coroutines of its loops) are built alone on both (OBJECTS; not connected).
That port grows its heap rather than collect inside a call, so no least heap can be found on it:
the last lines give bounds, the 64-bit least heap less the savings measured on 32 bits, the GC's
slack and the signatures and commands in flight counted at their 64-bit size. They need
`--roles` to hold tag and tag-nolink, and run for each place; `--no-32bit` skips them. The lock
and alarm roles get the same kind of bound (their own extra modules imported alone on both
ports), and one line sums up the stock-firmware figure per role (.mpy files on the filesystem,
32-bit): what provisioning's pre-flight (kvitto.install.preflight.ROLE_HEAP_KIB) asks of a board;
another the same for code in ROMFS (a firmware with a ROMFS partition, which no stock ESP32 build
has). Where the stock figure goes: the tag role's firmware modules in the order its run imports
them, each imported alone from .mpy files on both ports (`--breakdown` prints only that, in
seconds).
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
GOAL_STOCK_TAG_KIB = 96  # issue #26: the tag role on stock MicroPython, .mpy files, 32-bit
FULL_HEAP_KIB = 4096
CONFIRMATIONS = 2  # runs more that the least heap found must pass (Runner.smallest_heap)

# Tap-to-feedback timing: each tap the reader hands the app, and the LED's first answer to it.
TIMED = r"""
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
"""

SCRIPT = (
    r"""
import gc
gc.collect()
base = gc.mem_alloc()  # the interpreter and this script's code: a board has its own (see BASE)
import asyncio, json, sys, time, vfs
gc.collect()
asyncio_data = gc.mem_alloc() - base  # frozen on both ports: its module objects, not its code
ORDER = []  # "order" runs only: the firmware modules as their imports finish, dependencies first
if sys.argv[9:] == ["order"]:
    import builtins
    plain_import = builtins.__import__
    def ordered_import(name, *rest):
        module = plain_import(name, *rest)
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # a package before its modules
            done = ".".join(parts[:end])
            if parts[0] == "device" and done in sys.modules and done not in ORDER:
                ORDER.append(done)
        return module
    builtins.__import__ = ordered_import
PLACE = sys.argv[7]
image_bytes = 0
if PLACE == "rom":
    # first, so the image is one block at the bottom of the heap and fragments nothing
    with open(sys.argv[8], "rb") as f:
        rom = f.read()
    image_bytes = len(rom)
    vfs.mount(vfs.VfsRom(rom), "/rom")
    sys.path.insert(0, "/rom")
import device.board.hal  # the simulator imports it, a board runs it: counted as the role's
gc.collect()
before_sim = gc.mem_alloc()
import sim.hal_sim, sim.pn532sim, sim.buses, sim.flash, sim.control  # never on a real board
gc.collect()
sim_code = gc.mem_alloc() - before_sim
from device.board import boards, config, hal
from device.evidence import identity
from device.app import App
from device.roles.reader import credential_id
ROLE = sys.argv[1]
TAPS = int(sys.argv[2])
PORT = int(sys.argv[3])
board = boards.load(sys.argv[4])
gc.collect()
before_sim = gc.mem_alloc()
sim = boards.open_hal(board, flash=sys.argv[5], seed=b"bench")
gc.collect()
sim_objects = gc.mem_alloc() - before_sim  # simulated PN532, pins, file-backed flash
SALT = bytes(range(16))
settings = config.validate({
    "device": ROLE + "-0001", "role": ROLE, "board": "sim",
    "broker": {"host": "127.0.0.1", "port": PORT}, "salt": SALT.hex(),
    "org_public_key": ORG_PUBLIC_HEX})
identity.load_or_create(sim.urandom, sim.fs_root)
UIDS = [bytes((4, i, 0x42, 0x99)) for i in range(8)]
if ROLE == "lock":
    from device.roles.lock import Allowlist
    Allowlist(sim.fs_root + "/allow.bin").allow([credential_id(SALT, u) for u in UIDS])
app = App(settings, board, sim, link=sys.argv[6] == "link")
del boards, config  # as device.app.start() does once the app is built: loaders leave the heap
import device, device.app
for name in device.app.BOOT_ONLY:
    device.forget(name)
gc.collect()
code = gc.mem_alloc()  # modules loaded and the app built, before any tap
"""
    + TIMED
    + r"""async def script():
    asyncio.create_task(app.run())
    await asyncio.sleep_ms(300)
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
    for _ in range(100):  # let the link sign and publish everything, and the acks come back
        if app.link is None or app.journal.acked >= app.journal.next_seq - 1:
            break
        await asyncio.sleep_ms(100)
    gc.collect()
    import micropython
    micropython.qstr_info()  # printed, not allocated: the interned names' share of the heap
    delays = sorted(time.ticks_diff(s, t) for t, s in zip(tap_us, show_us))
    print(json.dumps({
        "role": ROLE, "taps": len(tap_us), "feedback": len(show_us),
        "events": app.journal.next_seq - 1,
        "published": app.link.stats["published"] if app.link is not None else 0,
        "acked": app.journal.acked,
        "image": image_bytes, "base": base, "asyncio": asyncio_data, "code": code, "sim": sim_code + sim_objects, "after": gc.mem_alloc(),
        "median_us": delays[len(delays) // 2] if delays else None,
        "max_us": delays[-1] if delays else None,
        "modules": sorted(sys.modules) if sys.argv[9:] == ["modules"] else ORDER,
        "dropped": [m for m in ORDER if m not in sys.modules]}))
asyncio.run(script())
"""
)

# The same measure as bench/heap32.mjs, on the unix port: the heap each firmware import adds.
IMPORTS = r"""
import gc, json, micropython, sys, vfs
if sys.argv[1] != "-":  # a ROMFS image; "-": .mpy files on MICROPYPATH
    with open(sys.argv[1], "rb") as f:
        vfs.mount(vfs.VfsRom(f.read()), "/rom")  # onto the heap first: only deltas are taken
    sys.path.insert(0, "/rom")
import asyncio  # before the measure: each port has its own
def collected():
    gc.collect()
    return gc.mem_alloc()
def qstr_bytes():
    print("qstr-marker")
    micropython.qstr_info()
modules = {}
qstr_bytes()
start = collected()
with open(sys.argv[2]) as f:
    names = f.read().split(",")
for name in names:
    before = collected()
    __import__(name)
    modules[name] = collected() - before
total = collected() - start
qstr_bytes()
print(json.dumps({"port": "unix", "modules": modules, "total": total}))
"""
# The link's own objects, built as device.app builds them, on both ports (bench/heap32.mjs
# "objects"): the signer, the Link with its MQTT client (not connected: the webassembly port has
# no sockets), the organisation key's comb table, and the coroutines of its loops, which a
# running link holds all its life. The first part (imports, a journal) is not counted.
OBJECTS = r"""
import asyncio, os
from device.evidence import cose, ed25519, event, sha512  # what the second part imports
from device.evidence.journal import Journal
from device.link import mqtt
from device.link.collector import Link, journal_signer
asyncio.Event, asyncio.Lock  # asyncio loads these on first use: their code is not counted
try:
    os.mkdir(FOLDER)
except OSError:
    pass
journal = Journal(FOLDER + "/journal")
# ---
sign = journal_signer(journal, bytes(range(32)), "tag-0001")
link = Link("tag-0001", journal, sign, org_public=bytes.fromhex(ORG_PUBLIC_HEX),
            host="127.0.0.1", state_path=FOLDER + "/link.state")
loops = (link._publish_loop(), link._command_loop(), link._tick(), link.client.run(),
         link.client._read_loop(), link.client._keepalive([]))
"""


def link_objects(package: Path, code: Path, workdir: Path) -> tuple[int, int]:
    """The heap the link's objects (OBJECTS) keep on the unix port and on the 32-bit one."""
    setup, build = OBJECTS.replace("ORG_PUBLIC_HEX", repr(org_public_hex())).split("# ---\n")
    wasm_script = workdir / "bench_objects32.py"
    wasm_script.write_text((setup + "# ---\n" + build).replace("FOLDER", repr("/tmp/objects")))
    narrow, _ = on_wasm(package, code, "objects", str(wasm_script))
    folder = workdir / "objects"
    folder.mkdir(exist_ok=True)
    unix_script = workdir / "bench_objects.py"
    unix_script.write_text(
        "import gc\n"
        + setup.replace("FOLDER", repr(str(folder)))
        + "gc.collect()\nbefore = gc.mem_alloc()\n"
        + build.replace("FOLDER", repr(str(folder)))
        + "gc.collect()\nprint(gc.mem_alloc() - before)\n"
    )
    path = f".frozen:{code}" if code.is_dir() else ".frozen"
    if not code.is_dir():  # the ROMFS image mounted first, as IMPORTS does
        mount = (
            f"import sys, vfs\nwith open({str(code)!r}, 'rb') as f:\n"
            "    vfs.mount(vfs.VfsRom(f.read()), '/rom')\nsys.path.insert(0, '/rom')\n"
        )
        unix_script.write_text(mount + unix_script.read_text())
    result = subprocess.run(
        [str(BIN / "micropython"), "-X", "heapsize=4M", str(unix_script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=dict(os.environ, MICROPYPATH=path),
    )
    return int(result.stdout.split()[-1]), narrow["link"]


# The SCRIPT's run with no link, for the webassembly port (bench/heap32.mjs "scenario"): the
# same simulator and firmware from the same ROMFS image, in parts that heap32.mjs measures apart.
SCRIPT32 = (
    r"""
import device.board.hal  # the simulator imports it, a board runs it: counted as the role's
# ---
import sim.hal_sim, sim.pn532sim, sim.buses, sim.flash, sim.control  # never on a real board
# ---
import os, vfs
from device.board import boards, config, hal
from device.evidence import identity
from device.app import App
from device.roles.reader import credential_id
def mount_folder(path, board, mountpoint="/flash"):
    # no littlefs on this port: the simulated flash is a folder of its in-memory filesystem
    try:
        os.mkdir(path)
    except OSError:
        pass
    vfs.mount(vfs.VfsPosix(path), mountpoint)
    return mountpoint
sim.hal_sim.mount_flash = mount_folder
board = boards.load("/tmp/board.json")
# ---
# no os.getenv on this port, where the sim reads a reset cause the host may set
sim = boards.open_hal(board, flash="/tmp/flash", seed=b"bench", reset_cause="power")
# ---
import time
SALT = bytes(range(16))
settings = config.validate({
    "device": ROLE + "-0001", "role": ROLE, "board": "sim",
    "broker": {"host": "127.0.0.1", "port": 1883}, "salt": SALT.hex(),
    "org_public_key": "11" * 32})
identity.load_or_create(sim.urandom, sim.fs_root)
UIDS = [bytes((4, i, 0x42, 0x99)) for i in range(8)]
app = App(settings, board, sim, link=False)
del boards, config  # as device.app.start() does once the app is built: loaders leave the heap
import device, device.app
for name in device.app.BOOT_ONLY:
    device.forget(name)
"""
    + TIMED
    + r"""# ---
import json
asyncio.create_task(app.run())
await asyncio.sleep_ms(300)
for i in range(TAPS):
    sim.tap("badge", UIDS[i % len(UIDS)], hold_ms=500)
    await asyncio.sleep_ms(600)
    app.visits._last.clear()
print(json.dumps({"taps": len(tap_us), "feedback": len(show_us),
                  "events": app.journal.next_seq - 1}))
"""
)
WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_VERSION = "1.29.0-6"  # the unix port here is 1.29.0-preview: the same object layouts
WASM_CACHE = Path.home() / ".cache" / "kvitto-bench" / f"micropython-webassembly-{WASM_VERSION}"


def compile_firmware(out: Path, firmware: Path = FIRMWARE) -> None:
    """Every firmware module as bytecode .mpy, the way the image builder ships them (the same
    options, kvitto.install.image.mpy_cross_options), with the constant tables it writes as files
    beside them (kvitto.install.image.data_files)."""
    from kvitto.install.image import mpy_cross_options

    if (firmware / "device" / "evidence" / "ed25519_table.py").exists():
        from kvitto.install.image import data_files

        try:
            tables = data_files(firmware)
        except Exception:  # an older checkout's firmware, compared with --firmware: none
            tables = {}
        for name, data in tables.items():
            if (firmware / name).with_suffix(".py").exists():
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes(data)
    for source in sorted(firmware.rglob("*.py")):
        relative = source.relative_to(firmware)
        if relative.parts[0] not in ("device", "sim") or "__pycache__" in relative.parts:
            continue
        target = out / relative.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [BIN / "mpy-cross", *mpy_cross_options(relative.as_posix()), "-o", target, source],
            check=True,
            cwd=firmware,
        )


def build_romfs(compiled: Path, out: Path) -> int:
    """The compiled tree as a ROMFS image (mpremote's own builder, as `mpremote romfs build`)."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it lists every file it adds
        image = make_romfs(str(compiled), mpy_cross=False)
    out.write_bytes(image)
    return len(image)


def qstr_delta(output: str) -> int:
    """Interned names' bytes added between the two `qstr_info()` reports in `output`."""
    pools = [line for line in output.splitlines() if line.startswith("qstr pool:")]
    first, last = (int(line.split("n_total_bytes=")[1]) for line in (pools[0], pools[-1]))
    return last - first


def module_list(code: Path, modules: list[str]) -> Path:
    """The names in a file: a long argv crashes this unix build (FATAL: uncaught NLR)."""
    listing = code.with_name("bench_imports.txt")
    listing.write_text(",".join(modules))
    return listing


def imports_unix(code: Path, modules: list[str]) -> dict:
    """The heap each of `modules` adds once imported from `code` (a ROMFS image, or a folder of
    .mpy files), on the unix port."""
    script = code.with_name("bench_imports.py")
    script.write_text(IMPORTS)
    listing = module_list(code, modules)
    path = f".frozen:{code}" if code.is_dir() else ".frozen"
    result = subprocess.run(
        [
            str(BIN / "micropython"),
            "-X",
            "heapsize=4M",
            str(script),
            "-" if code.is_dir() else str(code),
            str(listing),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=dict(os.environ, MICROPYPATH=path),
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["qstr_bytes"] = qstr_delta(result.stdout)
    return figures


def wasm_package() -> Path | str:
    """MicroPython's webassembly port, installed once into WASM_CACHE; or why it is not here."""
    npm = shutil.which("npm")
    package = WASM_CACHE / "node_modules" / WASM_PACKAGE
    if shutil.which("node") is None or npm is None:
        return "no node/npm on this machine"
    if not (package / "micropython.mjs").exists():
        WASM_CACHE.mkdir(parents=True, exist_ok=True)
        install = subprocess.run(
            [npm, "install", "--no-save", "--prefix", str(WASM_CACHE),
             f"{WASM_PACKAGE}@{WASM_VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        if install.returncode != 0:
            return f"npm install {WASM_PACKAGE}@{WASM_VERSION} failed: {install.stderr[-200:]}"
    return package


def on_wasm(package: Path, code: Path, *args: str) -> tuple[dict, list[str]]:
    """bench/heap32.mjs on the webassembly port (32-bit), with `code` a ROMFS image or a folder
    of .mpy files: its figures, and what the script printed after them."""
    result = subprocess.run(
        ["node", str(ROOT / "bench" / "heap32.mjs"), str(package), str(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"the webassembly port failed: {result.stderr[-600:]}")
    figures, *printed = result.stdout.strip().splitlines()
    return json.loads(figures), printed


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


ORG_SECRET = bytes(range(100, 132))  # the bench's organisation command key: it acknowledges


def start_acker(port: int):
    """The collector's side of the link, as far as a device sees it: every event published is
    answered with a signed `ack` command (FORMATS.md §2) up to its sequence number, so the
    device verifies an Ed25519 signature per event and releases what was acknowledged, as it
    does with the real collector. A paho client in this process, on the bench's broker."""
    import cbor2
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from kvitto.evidence.commands import sign_command
    from kvitto.evidence.cose import split_sign1

    sequence = {}  # device: the last command sequence sent (a fresh process starts at 0)

    def on_message(client, userdata, message):
        device = message.topic.split("/")[2]
        try:
            seq = cbor2.loads(split_sign1(message.payload)[2])[2]
        except Exception:  # noqa: BLE001 - a torn message is the device's test, not ours
            return
        sequence[device] = sequence.get(device, 0) + 1
        ack = sign_command(ORG_SECRET, device, sequence[device], 2**32 - 1, "ack", {"upto": seq})
        client.publish(f"kvitto/v1/{device}/cmd", ack, qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kvitto-bench-collector")
    client.on_message = on_message

    def on_connect(client, userdata, flags, reason, properties) -> None:
        client.subscribe("kvitto/v1/+/evt", qos=1)

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def org_public_hex() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(ORG_SECRET).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


class Runner:
    """Runs the scripted scenario for one role, placement and heap size."""

    def __init__(self, workdir: Path, compiled: Path, romfs: Path, port: int, taps: int):
        self.workdir = workdir
        self.compiled = compiled
        self.romfs = romfs
        self.port = port
        self.taps = taps
        self.script = workdir / "bench_app.py"
        self.script.write_text(SCRIPT.replace("ORG_PUBLIC_HEX", repr(org_public_hex())))

    def run(
        self, role: str, place: str, heap_kib: int, link: bool, modules: str = ""
    ) -> dict | None:
        """One scripted run; None when it did not complete cleanly in `heap_kib` of heap.
        `modules`: "modules", the figures name every module loaded by the end; "order", the
        firmware's modules in the order their imports finish (an import hook: that run's heap
        figures are not the role's)."""
        image = self.workdir / f"{role}-{place}-{heap_kib}.img"
        image.unlink(missing_ok=True)
        path = ".frozen" if place == "rom" else f".frozen:{self.compiled}"
        result = subprocess.run(
            [
                str(BIN / "micropython"),
                "-X",
                f"heapsize={heap_kib}K",
                str(self.script),
                role,
                str(self.taps),
                str(self.port),
                str(ROOT / "boards" / "sim.json"),
                str(image),
                "link" if link else "nolink",
                place,
                str(self.romfs),
                *([modules] if modules else []),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, MICROPYPATH=path),
        )
        image.unlink(missing_ok=True)
        if result.returncode != 0 or "MemoryError" in result.stderr + result.stdout:
            return None
        lines = result.stdout.strip().splitlines()
        figures = json.loads(lines[-1])
        for line in lines:
            if line.startswith("qstr pool:"):  # n_pool=6, n_qstr=1220, ..., n_total_bytes=25786
                fields = dict(part.strip().split("=") for part in line[10:].split(","))
                figures["qstrs"] = int(fields["n_qstr"])
                figures["qstr_bytes"] = int(fields["n_total_bytes"])
        return figures

    def smallest_heap(self, role: str, place: str, full: dict, link: bool) -> int | None:
        """The least heap (1 KiB steps) in which the role does the same work as with 4 MiB."""

        def same(result: dict | None) -> bool:
            # no MemoryError anywhere (run), every tap answered, every event published; a tap
            # more or less is timing on a busy machine, not memory
            return (
                result is not None
                and result["taps"] >= full["taps"] - 1
                and result["feedback"] == result["taps"]
                and result["published"] == (result["events"] if full["published"] else 0)
                and result["acked"] == (result["events"] if full["acked"] else 0)
            )

        low, high = 8, 1024  # KiB: fails at low (assumed), works at high (checked)
        if not same(self.run(role, place, high, link)):
            return None
        while high - low > 1:
            middle = (low + high) // 2
            if same(self.run(role, place, middle, link)):
                high = middle
            else:
                low = middle
        # The peak depends on how taps, signatures and acknowledgements interleave, which the
        # machine's load changes: the size found must pass CONFIRMATIONS runs more, or it grows
        # a KiB at a time until it does.
        passed = 0
        while passed < CONFIRMATIONS and high < 1024:
            if same(self.run(role, place, high, link)):
                passed += 1
            else:
                high, passed = high + 1, 0
        return high


def compare_ports(
    package: Path, code: Path, runs: dict[str, dict], tag_kib: float, nolink_kib: float, taps: int
) -> tuple[float, float]:
    """The tag role on the 64-bit unix port and on a 32-bit build of the same MicroPython, side
    by side (returned: the heap the 32-bit port saved in the no-link run, and the tag role's
    bound there), its code from `code` (a ROMFS image or a folder of .mpy files): the no-link run's
    heap, and the firmware modules of both runs imported alone; what that says of the tag
    role's least heap (`tag_kib`, `nolink_kib` here, without the image and the simulator) on a
    32-bit port such as the ESP32's."""
    where = "code on the heap (.mpy files)" if code.is_dir() else "code in ROMFS"
    script = code.with_name("bench_app32.py")
    script.write_text(SCRIPT32)
    board = str(ROOT / "boards" / "sim.json")
    run32, printed = on_wasm(package, code, "scenario", str(script), board, "tag", str(taps))
    done = json.loads(printed[-1])
    nolink = runs["tag-nolink"]
    # asyncio is left out on both sides (each port has its own): here, the part of it imported
    # before the run (the base), and the submodules it loads on first use, imported alone
    lazy = [m for m in nolink["modules"] if m.startswith("asyncio.") and m != "asyncio.core"]
    lazy64 = sum(imports_unix(code, lazy)["modules"].values()) if lazy else 0
    off = nolink["base"] + nolink["asyncio"] + nolink["image"] + nolink["sim"]
    after64 = (nolink["after"] - off - lazy64) / 1024
    start64 = (nolink["code"] - off) / 1024
    after32, start32 = run32["after"] / 1024, run32["start"] / 1024
    print(
        f"tag role, no link, {where}, on a 32-bit port ({run32['port']}, webassembly): "
        f"{done['taps']} "
        f"taps, {done['events']} events journaled; heap in use without the simulator's share, "
        f"once built {start32:.1f} KiB (64-bit unix {start64:.1f}), after the taps "
        f"{after32:.1f} KiB (64-bit unix {after64:.1f}): ratio {after32 / after64:.2f}."
    )
    # the link's modules: those the tag role has and the no-link run has not, imported last
    firmware = [m for m in runs["tag"]["modules"] if m.split(".")[0] == "device"]
    base = [m for m in firmware if m in nolink["modules"]]
    order = base + [m for m in firmware if m not in base]
    wide = imports_unix(code, order)
    narrow, _ = on_wasm(package, code, "imports", str(module_list(code, order)))
    link64 = sum(wide["modules"][m] for m in order[len(base) :]) / 1024
    link32 = sum(narrow["modules"][m] for m in order[len(base) :]) / 1024
    a, b = wide["total"] / 1024, narrow["total"] / 1024
    qa, qb = wide["qstr_bytes"] / 1024, narrow["qstr_bytes"] / 1024
    print(
        f"the tag role's {len(order)} firmware modules imported alone (asyncio before them: "
        f"each port has its own): 64-bit {a:.1f} KiB, 32-bit {b:.1f} KiB, ratio {b / a:.2f}; "
        f"their interned names {qa:.1f} vs {qb:.1f} KiB; the {len(order) - len(base)} the link "
        f"adds {link64:.1f} vs {link32:.1f} KiB."
    )
    objects64, objects32 = (size / 1024 for size in link_objects(package, code, code.parent))
    print(
        f"the link's objects (signer, Link and its MQTT client, the organisation key's comb "
        f"table, its loops' coroutines), built alone: 64-bit {objects64:.1f} KiB, 32-bit "
        f"{objects32:.1f} KiB."
    )
    # least heap on 32 bits <= 64-bit least heap less what the 32-bit port was measured to save:
    # the GC's slack and the objects in flight (signing) are counted at their 64-bit size
    nolink32 = nolink_kib - (after64 - after32)
    tag32 = tag_kib - (after64 - after32) - (link64 - link32) - (objects64 - objects32)
    if code.is_dir():
        what = f"at most {tag32:.0f} KiB of heap, code included (no link {nolink32:.0f})"
    else:
        what = (
            f"at most {tag32:.0f} KiB of data heap (no link {nolink32:.0f}); frozen, its names "
            f"in flash: at most {tag32 - qb:.0f} KiB; goal {GOAL_TAG_KIB} KiB"
        )
    print(
        f"so on a 32-bit port, {where}: tag role {what}. Bounds: the 64-bit least heap less the "
        "savings measured here; signatures and commands in flight and the GC's slack are "
        "counted at their 64-bit size."
    )
    return after64 - after32 + objects64 - objects32, tag32


def other_roles_32(
    package: Path, code: Path, runs: dict[str, dict], needs: dict[str, float], saving: float
) -> dict[str, float]:
    """The lock and alarm roles on a 32-bit port, bounded as the tag's is: their 64-bit least
    heap (`needs`, without the image and the simulator) less what the tag's no-link run and its
    link's objects saved on 32 bits (`saving`) and less what their own modules beyond it save,
    imported alone on both ports (the webassembly port runs no lock or alarm scenario)."""
    bounds = {}
    base = [m for m in runs["tag-nolink"]["modules"] if m.split(".")[0] == "device"]
    for label, need in needs.items():
        extra = [
            m for m in runs[label]["modules"] if m.split(".")[0] == "device" and m not in base
        ]
        order = base + extra
        wide = imports_unix(code, order)
        narrow, _ = on_wasm(package, code, "imports", str(module_list(code, order)))
        extra64 = sum(wide["modules"][m] for m in extra) / 1024
        extra32 = sum(narrow["modules"][m] for m in extra) / 1024
        bounds[label] = need - saving - (extra64 - extra32)
    return bounds


def breakdown(package: Path, runner: Runner, compiled: Path, role: str = "tag") -> None:
    """Where a role's stock-firmware heap goes: its firmware modules imported one at a time from
    .mpy files, in the order the role's run imports them (each after its dependencies, so each
    figure is the module's own: bytecode, functions, classes, constants and the names it
    interns), on the 32-bit port and the 64-bit one; the heap in use after each; the ten
    largest. A module whose names start a new qstr pool is charged that whole pool."""
    run = runner.run(role, "fs", FULL_HEAP_KIB, True, modules="order")
    if run is None:
        raise SystemExit(f"{role} fs: the import-order run failed with 4 MiB")
    order = [name for name in run["modules"] if name not in run["dropped"]]
    wide = imports_unix(compiled, order)
    narrow, _ = on_wasm(package, compiled, "imports", str(module_list(compiled, order)))
    print(
        f"{role} role, stock firmware (.mpy files), its {len(order)} firmware modules in import "
        "order (asyncio before them), heap each adds / heap in use after it, KiB:"
    )
    print(f"  {'module':30} {'32-bit':>7} {'after':>7} {'64-bit':>7} {'after':>7}")
    after32 = after64 = 0
    for name in order:
        after32 += narrow["modules"][name]
        after64 += wide["modules"][name]
        print(
            f"  {name:30} {narrow['modules'][name] / 1024:>7.1f} {after32 / 1024:>7.1f} "
            f"{wide['modules'][name] / 1024:>7.1f} {after64 / 1024:>7.1f}"
        )
    top = sorted(order, key=lambda name: -narrow["modules"][name])[:10]
    print(
        f"  all together {narrow['total'] / 1024:.1f} KiB on 32 bits ({wide['total'] / 1024:.1f} "
        f"on 64), interned names {narrow['qstr_bytes'] / 1024:.1f} KiB of it; the ten largest "
        "on 32 bits: "
        + ", ".join(f"{name} {narrow['modules'][name] / 1024:.1f}" for name in top)
        + (
            "; loaded for a moment at boot and dropped (device.forget), not counted: "
            + ", ".join(run["dropped"])
            if run["dropped"]
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Least heap per role, tap-to-feedback time")
    parser.add_argument("--taps", type=int, default=12)
    parser.add_argument("--roles", default="tag,tag-nolink,lock,alarm")
    parser.add_argument("--places", default="fs,rom")
    parser.add_argument(
        "--firmware", type=Path, default=FIRMWARE, help="another checkout's firmware/, to compare"
    )
    parser.add_argument(
        "--no-32bit",
        dest="wasm",
        action="store_false",
        help="skip the tag role on the 32-bit webassembly port (Node.js, npm); it runs for each "
        "place when the roles include tag and tag-nolink",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only the tag role's per-module breakdown on stock firmware (quick; needs node)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kvitto-bench-device-"))
    compiled = workdir / "mpy"
    compile_firmware(compiled, args.firmware)
    romfs = workdir / "firmware.romfs"
    image_kib = build_romfs(compiled, romfs) / 1024
    broker, port = start_broker(workdir)
    acker = start_acker(port) if broker is not None else None
    runner = Runner(workdir, compiled, romfs, port, args.taps)
    try:
        if args.breakdown:
            package = wasm_package()
            if isinstance(package, str):
                raise SystemExit(f"32-bit port: not available ({package})")
            breakdown(package, runner, compiled)
            return
        print(
            f"broker: {'mosquitto on ' + str(port) if broker else 'none: nothing is signed'}; "
            f"ROMFS image {image_kib:.0f} KiB; 64-bit unix port (objects up to 2x the ESP32's)"
        )
        print(
            f"{'role':12} {'place':5} {'taps':>4} {'events':>6} {'published':>9} "
            f"{'min heap KiB':>12} {'data KiB':>8} {'sim KiB':>7} {'base KiB':>8} {'role KiB':>8} "
            f"{'start KiB':>9} {'live KiB':>8} {'tap->LED median us':>18} {'max us':>8}"
        )
        needs = {}
        qstr_rows = []
        full_runs: dict[str, dict[str, dict]] = {"fs": {}, "rom": {}}  # place: label: 4 MiB run
        for label in args.roles.split(","):
            role, _, nolink = label.partition("-")
            link = not nolink
            for place in args.places.split(","):
                r = runner.run(role, place, FULL_HEAP_KIB, link, modules="modules")
                if r is None:
                    raise SystemExit(f"{label} {place}: the scripted run failed with 4 MiB")
                need = runner.smallest_heap(role, place, r, link)
                # what a board does not hold: the simulator's share, and the interpreter's and
                # this script's base (a board's own is left out of the gc.mem_free() that
                # provisioning's pre-flight compares with the role's figure)
                off_board = (r["sim"] + r["base"]) / 1024
                needs[label, place] = need, off_board
                full_runs[place][label] = r
                data = board = "-"
                if need is not None:
                    data = f"{need - image_kib:.0f}" if place == "rom" else "-"
                    board = f"{need - (image_kib if place == 'rom' else 0) - off_board:.0f}"
                print(
                    f"{label:12} {place:5} {r['taps']:>4} {r['events']:>6} {r['published']:>9} "
                    f"{need!s:>12} {data:>8} {r['sim'] / 1024:>7.0f} {r['base'] / 1024:>8.0f} "
                    f"{board:>8} "
                    f"{r['code'] / 1024:>9.0f} {(r['after'] - r['code']) / 1024:>8.0f} "
                    f"{r['median_us']!s:>18} {r['max_us']!s:>8}"
                )
                if "qstrs" in r:
                    qstr_rows.append(
                        f"{label} {place}: {r['qstrs']} names, {r['qstr_bytes'] / 1024:.0f} KiB"
                    )
        if qstr_rows:
            print(
                "interned names (qstr pools and their text, of the sim and bench script too): "
                + "; ".join(qstr_rows)
                + ". The pool grows by doubling (here six pools hold 1260 names, the seventh "
                "1280 more): a few names more can cost a new pool of twice the last one, and "
                "the block for it. A frozen build keeps its modules' names in flash."
            )
        tag_fs, _ = needs.get(("tag", "fs"), (None, 0))
        tag_rom, tag_sim = needs.get(("tag", "rom"), (None, 0))
        if tag_rom is not None:
            data = tag_rom - image_kib
            verdict = "meets" if data - tag_sim <= GOAL_TAG_KIB else "misses"
            print(
                f"tag role, code in ROM (ROMFS; frozen a little less): {data:.0f} KiB of data "
                f"heap on the 64-bit port, {data - tag_sim:.0f} KiB without the simulator's "
                f"share and the base: {verdict} the {GOAL_TAG_KIB} KiB goal on this 64-bit port (a 32-bit port "
                "such as the ESP32's: the lines below)."
            )
        if tag_fs is not None:
            print(
                f"tag role, .mpy on the filesystem (today's `kvitto image`): {tag_fs} KiB of heap "
                "for code and data together."
            )
        package = wasm_package() if args.wasm else None
        if isinstance(package, str):
            print(f"32-bit port: not measured ({package})")
        stock32: dict[str, float] = {}  # role: 32-bit bound, .mpy files on the filesystem
        romfs32: dict[str, float] = {}  # role: 32-bit bound, code in ROMFS (names on the heap)
        places = args.places.split(",")
        for place, code, image in (("rom", romfs, image_kib), ("fs", compiled, 0)):
            tag, sim = needs.get(("tag", place), (None, 0))
            nolink, nolink_sim = needs.get(("tag-nolink", place), (None, 0))
            if isinstance(package, Path) and tag is not None and nolink is not None:
                runs = full_runs[place]
                tag_kib, nolink_kib = tag - image - sim, nolink - image - nolink_sim
                saving, tag32 = compare_ports(package, code, runs, tag_kib, nolink_kib, args.taps)
                others = {
                    label: needs[label, place][0] - image - needs[label, place][1]
                    for label in ("lock", "alarm")
                    if needs.get((label, place), (None, 0))[0] is not None
                }
                bounds = other_roles_32(package, code, runs, others, saving)
                where = "code on the heap (.mpy files)" if place == "fs" else "code in ROMFS"
                for label, bound in bounds.items():
                    print(f"{label} role on a 32-bit port, {where}: at most {bound:.0f} KiB")
                if place == "fs":
                    stock32 = {"tag": tag32, **bounds}
                else:
                    romfs32 = {"tag": tag32, **bounds}
        if isinstance(package, Path) and "tag" in args.roles.split(",") and "fs" in places:
            breakdown(package, runner, compiled)
        if stock32:
            verdict = "meets" if stock32["tag"] <= GOAL_STOCK_TAG_KIB else "misses"
            print(
                "stock firmware (.mpy files on the filesystem), 32-bit port, heap per role at "
                "most: "
                + ", ".join(f"{label} {kib:.0f} KiB" for label, kib in stock32.items())
                + f"; the tag role {verdict} the {GOAL_STOCK_TAG_KIB} KiB goal "
                "(kvitto.install.preflight.ROLE_HEAP_KIB keeps these figures)."
            )
        if romfs32:
            print(
                "ROMFS (code in flash), 32-bit port, heap per role at most: "
                + ", ".join(f"{label} {kib:.0f} KiB" for label, kib in romfs32.items())
                + "; measured with the image mounted by vfs.VfsRom and its size taken off. No "
                "stock ESP32 build has a ROMFS partition (docs/decisions.md, issue #26): this is "
                "the figure for a firmware built with one, not for stock firmware."
            )
        print(
            "min heap = least -X heapsize that ran the scenario; data = min heap - ROMFS image "
            "(rom only); sim = the simulator's modules and objects (never on a board); base = "
            "the interpreter and this script's code, in use before the role imports anything "
            "(a board's own base is not in the gc.mem_free() its pre-flight reads); role = min "
            "heap - image - sim - base, what the role needs (asyncio's module objects and "
            "device.board.hal included, as on a board); start = "
            "heap in use once the modules are imported and the app is built, before any tap "
            "(fs: bytecode included; rom: the image included); live = heap in use after the "
            "taps, garbage collected, minus start."
        )
    finally:
        if acker is not None:
            acker.loop_stop()
        if broker is not None:
            broker.terminate()
            broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
