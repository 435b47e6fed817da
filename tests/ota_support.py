"""Power cuts during a firmware update (issue #22), shared by tests/test_ota_powercut.py (200
cuts) and bench/ota_powercut.py (2,000): the real firmware code (device.link.ota, the journal,
device.evidence.release) on the unix port, the simulated esp32.Partition (sim.partition) on one
simulated NOR flash and the journal's littlefs on another, both fed by one power supply that
fails after a chosen number of programmed bytes.

One unix-port process plays every cut: from the same starting flash (ota_0 holding the signed
0.1.0 image, a journal with unsent visits) it runs an update to 0.2.0 that visits keep being
journaled through, cuts the power at cut point k, reboots and carries on until the device runs
0.2.0, confirmed. At every boot it checks that the slot the bootloader chose holds a signed
image (0.1.0's or 0.2.0's bytes exactly) and that every event the journal returned as durable
and the collector has not acknowledged is still there, byte for byte.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import micropython_env
from kvitto.evidence.release import sign_release

ROOT = Path(__file__).resolve().parent.parent
RELEASE_SEED = bytes(range(7, 39))
RELEASE_PUBLIC = Ed25519PrivateKey.from_private_bytes(RELEASE_SEED).public_key().public_bytes_raw()


def sim_image(version: str, size: int, seed: int = 1) -> bytes:
    """A simulated app image: ESP-IDF's magic byte, the version line, deterministic filler."""
    head = b"\xe9KVSIM " + version.encode() + b"\n"
    filler = b""
    counter = 0
    while len(head) + len(filler) < size:
        filler += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return (head + filler)[:size]


SCRIPT = r"""
import sys, os, json, hashlib, vfs
import device
from sim import partition
from sim.flash import FileBlockDevice, PowerLoss
from device.evidence.journal import Journal
from device.evidence import event
from device.link import ota

WORK, CUTS, IMAGE_SIZE, SLOT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
OLD = open(WORK + "/old.bin", "rb").read()
NEW = open(WORK + "/new.bin", "rb").read()
MANIFEST = open(WORK + "/new.release", "rb").read()
PUBLIC = bytes.fromhex(open(WORK + "/release.pub").read())
SIGNED = {hashlib.sha256(OLD).digest(): "0.1.0", hashlib.sha256(NEW).digest(): "0.2.0"}
TABLE = [
    {"name": "otadata", "type": "data", "subtype": "ota", "offset": 0, "size": 8192},
    {"name": "ota_0", "type": "app", "subtype": "ota_0", "offset": 8192, "size": SLOT},
    {"name": "ota_1", "type": "app", "subtype": "ota_1", "offset": 8192 + SLOT, "size": SLOT},
]
PART_BLOCKS = (8192 + 2 * SLOT) // 4096
FS_BLOCKS = 64
FS, PARTS = WORK + "/fs.img", WORK + "/parts.img"
STATE = "/flash/ota.state"


class Supply:
    budget = -1
    dead = False


class Supplied:
    # Both flashes draw on one supply: a cut stops them together.
    def __init__(self, bdev):
        self.bdev = bdev

    def readblocks(self, block, buf, offset=0):
        if Supply.dead:
            return -5
        return self.bdev.readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        if Supply.dead:
            return -5
        if Supply.budget >= 0:
            if len(buf) > Supply.budget:
                self.bdev.tear_after(Supply.budget)
                Supply.dead = True
            else:
                Supply.budget -= len(buf)
        Supply.programmed += len(buf)
        return self.bdev.writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        if Supply.dead and op in (3, 6):
            return -5
        return self.bdev.ioctl(op, arg)


Supply.programmed = 0


def copy(source, target):
    with open(source, "rb") as f, open(target, "wb") as g:
        while True:
            data = f.read(4096)
            if not data:
                break
            g.write(data)


def power_on():
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    Supply.dead = False
    fs = Supplied(FileBlockDevice(FS, 4096, FS_BLOCKS))
    vfs.mount(vfs.VfsLfs2(fs), "/flash")
    partition.attach(Supplied(FileBlockDevice(PARTS, 4096, PART_BLOCKS)), TABLE)


def running_image():
    part = partition.Partition(partition.Partition.RUNNING)
    return SIGNED.get(ota.sha256_of(part, len(OLD))) or SIGNED.get(ota.sha256_of(part, len(NEW)))


class Device:
    def __init__(self):
        self.expected = {}  # seq -> payload: durable, not acknowledged

    def record(self, kind, cred=None, x=None):
        j = self.journal
        payload = event.build_payload("tag-0001", j.next_seq, j.boot, 0, kind, j.prev_hash, x=x)
        seq = j.append(payload)
        self.expected[seq] = payload
        return seq

    def ack_all(self):
        # the collector stored them before it acknowledged: from here they may leave the journal
        upto = self.journal.next_seq - 1
        for seq in [s for s in self.expected if s <= upto]:
            del self.expected[seq]
        self.journal.ack(upto)

    def boot(self, problems):
        # power on, the bootloader, the checks, then the app: returns "done", "reset"
        power_on()
        partition.boot()
        version = running_image()
        if version is None:
            problems.append("bricked")
        device.VERSION = version or "0.0.0"
        self.journal = Journal("/flash/journal", max_segments=32)
        for seq, payload in self.expected.items():
            if self.journal.get(seq) != payload:
                problems.append("lost %d" % seq)
        self.record("boot", None, {"fw": device.VERSION})
        trial = ota.Trial.at_boot(partition.Partition, STATE, self.record)
        if trial is not None and not trial.done:
            self.ack_all()  # the collector acknowledged this boot's first event
            trial.confirm()
            return "reset"
        if version == "0.2.0":
            return "done"
        update = ota.Update(partition.Partition, PUBLIC, "esp32", STATE, self.record)
        start = update.offer(MANIFEST)
        for index in range(start, update.chunks):
            update.chunk(index, NEW[index * ota.CHUNK:(index + 1) * ota.CHUNK])
            if index % 3 == 0:
                self.record("arrive", None, {"via": "badge"})  # visits go on meanwhile
        update.finish()
        return "reset"


def run(cut):
    copy(WORK + "/fs0.img", FS)
    copy(WORK + "/parts0.img", PARTS)
    dev = Device()
    problems = []
    Supply.budget = cut
    Supply.programmed = 0
    cuts = 0
    for attempt in range(8):
        try:
            outcome = dev.boot(problems)
        except (PowerLoss, OSError) as error:
            if not Supply.dead:
                problems.append("error %r" % (error,))
                break
            cuts += 1
            Supply.budget = -1
            continue
        if outcome == "done":
            break
    else:
        problems.append("never finished")
    return cuts, problems


def prepare():
    # the starting flash: ota_0 = the signed 0.1.0 image, a journal with unsent visits
    for path in (FS, PARTS):
        try:
            os.remove(path)
        except OSError:
            pass
    FileBlockDevice(FS, 4096, FS_BLOCKS).close()
    bdev = FileBlockDevice(FS, 4096, FS_BLOCKS)
    vfs.VfsLfs2.mkfs(bdev)
    bdev.close()
    power_on()
    part = partition.Partition("ota_0")
    for block in range(0, len(OLD), 4096):
        data = OLD[block:block + 4096]
        part.writeblocks(block // 4096, data + b"\xff" * (4096 - len(data)))
    dev = Device()
    dev.journal = Journal("/flash/journal", max_segments=32)
    for _ in range(5):
        dev.record("arrive", None, {"via": "badge"})
    vfs.umount("/flash")
    copy(FS, WORK + "/fs0.img")
    copy(PARTS, WORK + "/parts0.img")
    return dev


prepare()
# a clean run first: how many bytes an update programs, so the cuts spread over all of it
clean_cuts, clean_problems = run(-1)
total = Supply.programmed
print("clean %d %s" % (total, json.dumps(clean_problems)))
bricked = lost = unfinished = cut_count = 0
for number in range(CUTS):
    point = (number * total) // CUTS + number % 7
    cuts, problems = run(point)
    cut_count += cuts
    bricked += sum(1 for p in problems if p == "bricked")
    lost += sum(1 for p in problems if p.startswith("lost"))
    unfinished += sum(1 for p in problems if not p.startswith("lost") and p != "bricked")
    if problems:
        print("problem at %d: %s" % (point, json.dumps(problems[:4])))
print("cuts=%d bricked=%d lost=%d unfinished=%d" % (cut_count, bricked, lost, unfinished))
"""


@dataclass
class CutResult:
    clean_bytes: int
    line: str
    problems: list[str]


def run_ota_cuts(binary: str, cuts: int, workdir: Path, image_size: int = 40_000,
                 slot: int = 65_536, timeout: float = 1200) -> CutResult:  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    old, new = sim_image("0.1.0", image_size, 1), sim_image("0.2.0", image_size, 2)
    (workdir / "old.bin").write_bytes(old)
    (workdir / "new.bin").write_bytes(new)
    (workdir / "new.release").write_bytes(sign_release(RELEASE_SEED, new, "0.2.0", "esp32"))
    (workdir / "release.pub").write_text(RELEASE_PUBLIC.hex())
    script = workdir / "cuts.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [binary, "-X", "heapsize=8M", str(script), str(workdir), str(cuts), str(image_size),
         str(slot)],
        capture_output=True, text=True, timeout=timeout, env=micropython_env(),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"cut run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    lines = result.stdout.splitlines()
    clean = int(lines[0].split()[1])
    return CutResult(clean, lines[-1], [line for line in lines if line.startswith("problem")])
