"""A forced low-memory run of the real firmware on the unix port (issue #26): the tag role under a
small `-X heapsize` is squeezed further mid-run, down to a few KiB free, while badges are tapped.
It sheds tag mode (with a `health` event when one still fits), its reader task fails with
MemoryError and is started again, taps keep being journaled, and once memory is back it takes
tag mode up again. Afterwards the flash is opened by a fresh process: every event the squeezed
run was told was journaled is there, in one unbroken hash chain. Fixed taps, no timing asserted."""

from __future__ import annotations

import hashlib
import json

import cbor2
import pytest

from conftest import ROOT

RUN = r"""
import asyncio, gc, sys
from device.board import boards, config
from device.evidence import identity
from device.app import App
FLASH, LOG, TAPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
SQUEEZE, RELEASE, LEFT = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
board = boards.load(sys.argv[4])
sim = boards.open_hal(board, flash=FLASH, seed=b"lowmem")
SALT = bytes(range(16))
settings = config.validate({"device": "tag-0042", "role": "tag", "board": "sim",
    "broker": {"host": "127.0.0.1", "port": 1}, "salt": SALT.hex(),
    "org_public_key": "11" * 32, "tag_mode": True, "ntp": []})
identity.load_or_create(sim.urandom, sim.fs_root)
app = App(settings, board, sim, link=False)
journal = app.journal
append = journal.append
# the sequence numbers go into memory taken before the squeeze: logging them must not allocate,
# or a squeezed run would lose its own record of what it journaled (not the journal's fault)
import array
SEEN = array.array("i", [0] * 256)
MARKS = array.array("i", [0, 0, 0])  # entries so far, entries at the squeeze, at the release
def logged(payload):
    seq = append(payload)
    SEEN[MARKS[0]] = seq
    MARKS[0] += 1
    return seq
journal.append = logged
UIDS = [bytes((4, i, 0x42, 0x99)) for i in range(8)]
async def script():
    asyncio.create_task(app.run())
    await asyncio.sleep_ms(300)
    ballast = None
    for i in range(TAPS):
        if i == SQUEEZE:  # leave LEFT bytes of heap: the app must shed and survive
            gc.collect()
            ballast = None  # a chain of pairs: a list would need one ever larger block
            size = 1024
            while size >= 8 and gc.mem_free() > LEFT:
                try:
                    ballast = (ballast, bytearray(size))
                except MemoryError:
                    size //= 4
            MARKS[1] = MARKS[0]
            print("squeezed to", gc.mem_free())
        if i == RELEASE:
            MARKS[2] = MARKS[0]
            print("shed while squeezed", app.shedding)
            ballast = None
            gc.collect()
        try:
            sim.tap("badge", UIDS[i % len(UIDS)], hold_ms=500)
        except Exception:
            pass
        await asyncio.sleep_ms(600)
        app.visits._last.clear()
    await asyncio.sleep_ms(700)
    with open(LOG, "w") as log:
        for at in range(MARKS[0] + 1):
            if at == MARKS[1]:
                log.write("squeeze\n")
            if at == MARKS[2]:
                log.write("release\n")
            if at < MARKS[0]:
                log.write("%d\n" % SEEN[at])
    print("shedding", app.shedding, "restarts", app.restarts, "next", app.journal.next_seq)
asyncio.run(script())
"""

READ_BACK = """
import json, sys
from device.board import boards
from device.evidence.journal import Journal
board = boards.load(sys.argv[2])
sim = boards.open_hal(board, flash=sys.argv[1], seed=b"lowmem")
journal = Journal(sim.fs_root + "/journal")
print(json.dumps({"next": journal.next_seq, "lost": journal.lost,
                  "events": [[seq, (journal.get(seq) or b"").hex()]
                             for seq in range(1, journal.next_seq)]}))
"""
BOARD = str(ROOT / "boards" / "sim.json")
TAPS, SQUEEZE, RELEASE = 12, 3, 9


# with 6000 bytes left the tag still answers taps while squeezed; with 2000 whether a tap's event
# can be built at all depends on how fragmented the heap is at that moment (seen both ways in CI):
# there the promise is the issue's own, no journaled event lost and taps answered again after
@pytest.mark.parametrize(("left", "answers_while_short"), [(6000, True), (2000, False)])
def test_low_memory_sheds_work_and_loses_no_journaled_event(
    micropython, tmp_path, left, answers_while_short
):
    flash, log = tmp_path / "flash.img", tmp_path / "journaled.txt"
    out = micropython(
        RUN, heap="512K",
        args=[str(flash), str(log), str(TAPS), BOARD, str(SQUEEZE), str(RELEASE), str(left)],
    )  # fmt: skip
    assert "squeezed to" in out
    lines = log.read_text().split()
    journaled = [int(line) for line in lines if line.isdigit()]
    # the sequence numbers journaled while the heap was squeezed, and after it
    short = [int(x) for x in lines[lines.index("squeeze") + 1 : lines.index("release")]]
    after = [int(x) for x in lines[lines.index("release") + 1 :]]
    assert "shed while squeezed True" in out
    back = json.loads(micropython(READ_BACK, args=[str(flash), BOARD]).strip().splitlines()[-1])
    events = {seq: bytes.fromhex(payload) for seq, payload in back["events"]}
    assert back["lost"] == 0
    # every event the squeezed run journaled is on flash, and the chain has no gap
    assert journaled and all(events.get(seq) for seq in journaled)
    assert sorted(events) == list(range(1, back["next"]))
    decoded = {seq: cbor2.loads(payload) for seq, payload in events.items()}
    for seq in sorted(decoded)[1:]:
        assert decoded[seq][2] == seq
        assert decoded[seq][9] == hashlib.sha256(events[seq - 1]).digest(), f"chain at {seq}"
    kinds = {seq: (fields[7], fields.get(10, {})) for seq, fields in decoded.items()}
    taps = [seq for seq, (kind, _) in kinds.items() if kind in ("arrive", "depart")]
    # taps were answered while memory was short, and after it came back with tag mode
    assert set(taps) & set(after)
    if answers_while_short:
        assert set(taps) & set(short)
    assert any(x.get("mem") == "ok" for seq, (_, x) in kinds.items() if seq in after)
    assert "shedding False" in out  # tag mode and logging back on at the end


TORN = r"""
import sys
from device.board import boards
from device.evidence.journal import Journal
board = boards.load(sys.argv[2])
sim = boards.open_hal(board, flash=sys.argv[1], seed=b"torn")
journal = Journal(sim.fs_root + "/journal")
seqs = [journal.append(b"a" * 40) for _ in range(3)]
write_record = journal._write_record
torn = []
def out_of_memory_mid_write(kind, seq, body):
    if not torn:  # half a header reaches the flash, then the heap runs out
        torn.append(seq)
        journal._active.write(b"\xa5\x45\x28")
        raise MemoryError("mid-write")
    return write_record(kind, seq, body)
journal._write_record = out_of_memory_mid_write
for _ in range(4):
    try:
        seqs.append(journal.append(b"b" * 40))
    except MemoryError:
        print("raised")
print("returned", seqs, "torn", torn)
again = Journal(sim.fs_root + "/journal")
print("readable", [seq for seq in seqs if again.get(seq) is not None], "next", again.next_seq)
"""


def test_a_memory_error_in_the_middle_of_a_record_loses_no_journaled_event(micropython, tmp_path):
    """Out of memory half-way through writing a record: the journal treats it as a torn write
    (a fresh segment, the event written there), so every sequence number append returned is
    readable after a restart, those written after the torn record included."""
    out = micropython(TORN, args=[str(tmp_path / "flash.img"), BOARD])
    assert "raised" not in out
    returned = out.split("returned ")[1].split(" torn")[0]
    assert returned == "[1, 2, 3, 4, 5, 6, 7]"
    assert "readable [1, 2, 3, 4, 5, 6, 7] next 8" in out


HASH_FAILS = r"""
import hashlib, sys
from device.board import boards
from device.evidence import journal as journal_mod
from device.evidence.journal import Journal
board = boards.load(sys.argv[2])
sim = boards.open_hal(board, flash=sys.argv[1], seed=b"hash")
journal = Journal(sim.fs_root + "/journal")
journal.append(b"a" * 40)
class OutOfMemoryOnce:
    def sha256(self, data):
        journal_mod.hashlib = hashlib
        raise MemoryError("hashing")
journal_mod.hashlib = OutOfMemoryOnce()
try:
    journal.append(b"b" * 40)
except MemoryError:
    pass
last = journal.next_seq - 1
print("linked", journal.prev_hash == hashlib.sha256(journal.get(last)).digest(), "next", journal.next_seq)
"""


def test_a_memory_error_while_hashing_never_breaks_the_chain(micropython, tmp_path):
    """The heap runs out while the journal hashes an event for the chain: whatever append did,
    the next event's predecessor hash is the hash of the last event journaled (found as a
    broken chain under the squeezed run above, when the hash came after the write)."""
    out = micropython(HASH_FAILS, args=[str(tmp_path / "flash.img"), BOARD])
    assert "linked True" in out
