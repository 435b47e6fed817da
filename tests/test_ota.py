"""Firmware updates on the device (issue #22), the real firmware code under the unix port on the
simulated esp32.Partition: a tampered image, the wrong key, an older version, a truncated
transfer, a replayed chunk are each refused with a journaled `health` event (a skipped chunk
is refused and answered only) and leave the running firmware untouched; an update that never confirms itself is rolled back by the
bootloader at the next reset, and one whose self-test passes is kept."""

from __future__ import annotations

import json
from pathlib import Path

from ota_support import RELEASE_PUBLIC, RELEASE_SEED, sim_image

from kvitto.evidence.release import sign_release

SIZE = 20_000
OLD = sim_image("0.1.0", SIZE, 1)
NEW = sim_image("0.2.0", SIZE, 2)

PRELUDE = """
import json, os, vfs, device
from sim import partition
from sim.flash import FileBlockDevice
from device.evidence.journal import Journal
from device.evidence import cbor, event
from device.link import ota

WORK = {work!r}
TABLE = [
    {{"name": "otadata", "type": "data", "subtype": "ota", "offset": 0, "size": 8192}},
    {{"name": "ota_0", "type": "app", "subtype": "ota_0", "offset": 8192, "size": 32768}},
    {{"name": "ota_1", "type": "app", "subtype": "ota_1", "offset": 40960, "size": 32768}},
]
PUBLIC = bytes.fromhex({public!r})
OLD = {old!r}
STATE = WORK + "/ota.state"
partition.attach(FileBlockDevice(WORK + "/parts.img", 4096, 18), TABLE)
Partition = partition.Partition
for block in range(0, len(OLD), 4096):
    Partition("ota_0").writeblocks(block // 4096, OLD[block:block + 4096])
journal = Journal(WORK + "/journal")
def record(kind, cred=None, x=None):
    payload = event.build_payload("tag-0001", journal.next_seq, journal.boot, 0, kind,
                                  journal.prev_hash, x=x)
    return journal.append(payload)
def events(first=1):
    out = []
    for seq in range(first, journal.next_seq):
        fields = cbor.decode(journal.get(seq))
        out.append([fields[7], fields.get(10)])
    return out
def boot():
    partition.boot()
    device.VERSION = partition.running_version()
    return Partition(Partition.RUNNING).info()[4], device.VERSION
def untouched():
    running = Partition(Partition.RUNNING)
    return (running.info()[4] == "ota_0" and ota.sha256_of(running, len(OLD)) ==
            ota.sha256_of(Partition("ota_0"), len(OLD)) and partition._entries() == [])
print("boot", boot())
def update(manifest, image, chunks=None):
    up = ota.Update(Partition, PUBLIC, "esp32", STATE, record)
    try:
        up.offer(manifest)
        for index in (chunks if chunks is not None else range(up.chunks)):
            up.chunk(index, image[index * ota.CHUNK:(index + 1) * ota.CHUNK])
        up.finish()
        return "installed"
    except ota.Refused as error:
        return "refused " + error.reason
"""


def run(micropython, tmp_path, body: str) -> list[str]:
    work = tmp_path / "dev"
    work.mkdir()
    code = PRELUDE.format(work=str(work), public=RELEASE_PUBLIC.hex(), old=OLD) + body
    return micropython(code).splitlines()


def test_each_bad_update_is_refused_with_an_event_and_the_firmware_untouched(
    micropython, tmp_path
):
    good = sign_release(RELEASE_SEED, NEW, "0.2.0", "esp32")
    tampered = NEW[:5000] + bytes([NEW[5000] ^ 1]) + NEW[5001:]
    cases = {
        "tampered": (good, tampered, None),
        "wrong key": (sign_release(bytes(32), NEW, "0.2.0", "esp32"), NEW, None),
        "older": (sign_release(RELEASE_SEED, OLD, "0.0.9", "esp32"), OLD, None),
        "truncated": (good, NEW, [0, 1, 2, 3]),
        "replay": (good, NEW, [0, 1, 1]),
        "gap": (good, NEW, [0, 2]),
    }
    body = ""
    for name, (manifest, image, chunks) in cases.items():
        body += (
            f"first = journal.next_seq\n"
            f"print({name!r} + '|' + update({manifest!r}, {image!r}, {chunks!r}) + '|' + "
            f"json.dumps(events(first)) + '|' + str(untouched()))\n"
            f"os.remove(STATE) if 'ota.state' in os.listdir(WORK) else None\n"
        )
    lines = run(micropython, tmp_path, body)
    assert lines[0] == "boot ('ota_0', '0.1.0')"
    results = {line.split("|")[0]: line.split("|")[1:] for line in lines[1:]}
    expected = {"tampered": "hash", "wrong key": "signature", "older": "version",
                "truncated": "truncated", "replay": "replay", "gap": "gap"}  # fmt: skip
    for name, reason in expected.items():
        outcome, journaled, untouched = results[name]
        assert outcome == f"refused {reason}", name
        assert untouched == "True", name  # running slot, its bytes and otadata as they were
        if reason == "gap":  # answered only (the sender goes back): a resync writes no events
            assert json.loads(journaled) == []
            continue
        [[kind, x]] = json.loads(journaled)  # exactly one event: the refusal
        assert kind == "health" and x["ota"] == "refused" and x["reason"] == reason, name


def test_an_update_that_never_confirms_is_rolled_back_and_one_that_does_is_kept(
    micropython, tmp_path
):
    manifest = sign_release(RELEASE_SEED, NEW, "0.2.0", "esp32")
    body = f"""
print("install", update({manifest!r}, {NEW!r}))
print("trial", boot(), partition.states[-1])
trial = ota.Trial.at_boot(Partition, STATE, record)
print("on trial", trial is not None and not trial.done)
# the self-test never passes (no ack from the collector): the watchdog or the trial limit resets
print("reset", boot(), partition.states[-1])
trial = ota.Trial.at_boot(Partition, STATE, record)
print("after", trial.done)
print(json.dumps(events(journal.next_seq - 1)))
print("again", update({manifest!r}, {NEW!r}))
print("trial", boot())
trial = ota.Trial.at_boot(Partition, STATE, record)
trial.confirm()
print("kept", boot(), partition.states[-1])
print(json.dumps(events(journal.next_seq - 1)))
print("floor", ota.floor(STATE))
"""
    lines = run(micropython, tmp_path, body)
    assert json.loads(lines[6]) == [
        ["health", {"fw": "0.1.0", "ota": "rolled-back", "refused": "0.2.0"}]
    ]
    assert json.loads(lines[10]) == [["health", {"fw": "0.2.0", "ota": "valid"}]]
    assert lines[1:6] + lines[7:10] + lines[11:] == [
        "install installed",
        "trial ('ota_1', '0.2.0') ota_1 pending",
        "on trial True",
        "reset ('ota_0', '0.1.0') ota_0 rollback",  # the bootloader found it still pending
        "after True",
        "again installed",
        "trial ('ota_1', '0.2.0')",
        "kept ('ota_1', '0.2.0') ota_1",  # confirmed: no rollback at this reset
        "floor 0.2.0",
    ]


def test_the_trial_keeps_an_update_only_once_the_collector_acknowledged_its_first_event(
    micropython, tmp_path
):
    """Trial.judge, the supervisor's check while on trial: reader running and link up are not
    enough; the image is kept only once this boot's first event is acknowledged. Without that
    ack within the trial limit it resets the board, and the bootloader rolls back."""
    manifest = sign_release(RELEASE_SEED, NEW, "0.2.0", "esp32")
    body = f"""
class Face:  # what judge() reads of the app: reader, link, journal, clock, hal (reset)
    def __init__(self, boot_seq):
        self.stale_ms = {{"reader": 0}}
        self.reader = self
        self.ready = True
        self.link = self
        self.client = self
        self.connected = True
        self.journal = journal
        self._boot_seq = boot_seq
        self.now = 0
        self.clock = self
        self._trial_since = 0
        self.hal = self
        self.resets = 0
        self.trial = None
    def ticks(self):
        return self.now
    def reset(self):
        self.resets += 1
    def log(self, text):
        pass
def judge_for(first_event_acked, minutes):
    print("install", update({manifest!r}, {NEW!r}))
    print("trial", boot(), partition.states[-1])
    trial = ota.Trial.at_boot(Partition, STATE, record)
    app = Face(record("boot", None, {{"fw": device.VERSION}}))
    app.trial = trial
    if first_event_acked:
        journal.ack(app._boot_seq)
    for minute in range(minutes + 1):
        app.now = minute * 60000 + 1
        trial.judge(app)
    print("judged", trial.done, app.resets, partition.states[-1])
    print("then", boot(), partition.states[-1])
    ota.Trial.at_boot(Partition, STATE, record)
judge_for(False, 10)   # link up, reader fine, but the collector never acknowledged
judge_for(True, 0)
print(json.dumps(events(journal.next_seq - 1)))
"""
    lines = run(micropython, tmp_path, body)
    assert lines[1:] == [
        "install installed",
        "trial ('ota_1', '0.2.0') ota_1 pending",
        "judged False 1 ota_1 pending",  # never confirmed; after 10 minutes: a reset
        "then ('ota_0', '0.1.0') ota_0 rollback",  # the bootloader rolled back
        "install installed",
        "trial ('ota_1', '0.2.0') ota_1 pending",
        "judged True 0 ota_1 pending",
        "then ('ota_1', '0.2.0') ota_1",  # kept
        '[["health", {"fw": "0.2.0", "ota": "valid"}]]',
    ], lines


def test_a_board_without_a_second_app_slot_refuses_the_offer(micropython, tmp_path):
    """A plain ESP32 board keeps MicroPython's stock table (one app, no OTA slots):
    esp32.Partition.get_next_update raises OSError(ENOENT) there, as MicroPython does when
    ESP-IDF finds no next slot. The offer is refused (`slot`, journaled) instead of the error
    escaping into the link; the running firmware is untouched."""
    manifest = sign_release(RELEASE_SEED, NEW, "0.2.0", "esp32")
    body = f"""
class StockTable(Partition):  # the factory app alone: no slot to write an update into
    def get_next_update(self):
        raise OSError(2)
StockTable.RUNNING = Partition.RUNNING
up = ota.Update(StockTable, PUBLIC, "esp32", STATE, record)
first = journal.next_seq
try:
    up.offer({manifest!r})
    print("accepted")
except ota.Refused as error:
    print("refused", error.reason)
print(json.dumps(events(first)), untouched())
"""
    lines = run(micropython, tmp_path, body)
    assert lines[1] == "refused slot"
    [[kind, x]] = json.loads(lines[2].rsplit(" ", 1)[0])
    assert kind == "health" and (x["ota"], x["reason"]) == ("refused", "slot")
    assert lines[2].endswith("True")


def test_a_virtual_board_with_the_plain_boards_table_takes_an_update(micropython, tmp_path):
    """A virtual board standing for esp32-lock (its flash layout and partition table: two
    1.5 MiB slots, the 960 KiB filesystem): the simulated esp32.Partition takes the board
    file's table, an image larger than a slot is refused (`size`) before a byte is written, and
    an update that fits is installed, booted on trial and kept; the journal sizes itself to the
    smaller filesystem."""
    repo = Path(__file__).resolve().parent.parent
    lock = json.loads((repo / "boards" / "esp32-lock.json").read_text())
    board = json.loads((repo / "boards" / "sim.json").read_text())
    board.update(flash=lock["flash"], partitions=lock["partitions"])
    board_file = tmp_path / "plain-sim.json"
    board_file.write_text(json.dumps(board))
    work = tmp_path / "dev"
    work.mkdir()
    slot = 0x180000
    too_big = sign_release(RELEASE_SEED, b"\xe9" + bytes(slot), "0.2.0", "esp32")
    manifest = sign_release(RELEASE_SEED, NEW, "0.2.0", "esp32")
    code = f"""
import os, json
os.putenv("KVITTO_BOARD", {str(board_file)!r})
import device
from device.board import boards
from device.evidence.journal import Journal
from device.evidence import cbor, event
from device.link import ota
from sim import partition
WORK = {str(work)!r}
hal = boards.open_hal(boards.load({str(board_file)!r}), flash=WORK + "/flash.img")
Partition = hal.partitions()
print("slots", [Partition(name).info()[3] for name in ("ota_0", "ota_1")])
print("ota file", os.stat(WORK + "/flash.img.ota")[6], "fs", os.stat(WORK + "/flash.img")[6])
OLD = {OLD!r}
for block in range(0, len(OLD), 4096):
    Partition("ota_0").writeblocks(block // 4096, OLD[block:block + 4096])
partition.boot()
device.VERSION = partition.running_version()
journal = Journal(hal.fs_root + "/journal")
print("segments", journal.max_segments)
STATE = hal.fs_root + "/ota.state"
def record(kind, cred=None, x=None):
    payload = event.build_payload("lock-0001", journal.next_seq, journal.boot, 0, kind,
                                  journal.prev_hash, x=x)
    return journal.append(payload)
def update(manifest, image):
    up = ota.Update(Partition, bytes.fromhex({RELEASE_PUBLIC.hex()!r}), "esp32", STATE, record)
    try:
        up.offer(manifest)
        for index in range(up.chunks):
            up.chunk(index, image[index * ota.CHUNK:(index + 1) * ota.CHUNK])
        up.finish()
        return "installed"
    except ota.Refused as error:
        return "refused " + error.reason
print(update({too_big!r}, b""))
print(json.dumps(cbor.decode(journal.get(journal.next_seq - 1))[10]))
print(update({manifest!r}, {NEW!r}))
partition.boot()
print("trial", Partition(Partition.RUNNING).info()[4], partition.running_version())
ota.Trial.at_boot(Partition, STATE, record).confirm()
partition.boot()
print("kept", Partition(Partition.RUNNING).info()[4], partition.states[-1])
"""
    lines = micropython(code).splitlines()
    assert lines[0] == f"slots [{slot}, {slot}]"
    # otadata to the end of ota_1 (0xD000..0x310000) beside the 960 KiB filesystem image
    assert lines[1] == f"ota file {0x310000 - 0xD000} fs {0xF0000}"
    segments = int(lines[2].split()[1])
    assert 200 <= segments < 240  # 4 KiB segments on 240 blocks, less littlefs's reserve
    assert lines[3] == "refused size"
    assert json.loads(lines[4]) == {
        "ota": "refused",
        "reason": "size",
        "detail": f"{slot + 1} bytes, the slot holds {slot}",
    }
    assert lines[5:] == ["installed", "trial ota_1 0.2.0", "kept ota_1 ota_1"]
