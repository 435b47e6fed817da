"""The journal reads segments through a small window (device/evidence/journal.py _records), and keeps
recent signatures in a ring: records longer than the window, damage inside a long body, and the
ring's edges. Run on the unix port over littlefs and under CPython on a directory, with the same
results required (as tests/test_journal.py does).
"""

from __future__ import annotations

import json
import subprocess
import sys

from journal_support import ON_FLASH

from conftest import FIRMWARE

SCENARIO = (
    ON_FLASH
    + r"""
from device.evidence.journal import Journal

def payload(seq, size):
    head = b"%d:" % seq
    body = head
    while len(body) < size:
        body += hashlib.sha256(body).digest()
    return body[:size]

def sig(seq):
    return bytes([seq & 0xFF]) * 64

out = {}
j = Journal(base + "/w", segment_bytes=4096)
# Bodies shorter than, equal to, one past and several times the 256-byte window.
sizes = [1, 255, 256, 257, 600, 1500, j.max_payload]
for index, size in enumerate(sizes):
    j.append(payload(index + 1, size))
j.close()
j = Journal(base + "/w", segment_bytes=4096)
out["reopened"] = [j.next_seq, j.prev_hash == hashlib.sha256(payload(7, sizes[6])).digest()]
out["pending"] = [[seq, data == payload(seq, sizes[seq - 1])] for seq, data in j.pending()]
out["get"] = [j.get(seq) == payload(seq, sizes[seq - 1]) for seq in range(1, 8)]

# Damage inside the 600-byte body of seq 5 (far past the first window): skipped, the rest kept.
names = sorted(n for n in os.listdir(base + "/w") if n.endswith(".seg"))
offsets = {}
for name in names:
    with open(base + "/w/" + name, "rb") as f:
        data = f.read()
    at = 0
    while at + 8 <= len(data):
        seq = int.from_bytes(data[at + 4 : at + 8], "little")
        length = data[at + 2] | (data[at + 3] << 8)
        offsets[seq] = (name, at)
        at += 12 + length
j.close()
name, at = offsets[5]
with open(base + "/w/" + name, "r+b") as f:
    f.seek(at + 8 + 500)
    f.write(b"\x00\x00")
j = Journal(base + "/w", segment_bytes=4096)
out["damaged"] = [j.get(5), [seq for seq, _ in j.pending()], j.get(6) == payload(6, sizes[5])]

# The signature ring: the latest eight answer from RAM, older ones from flash, a re-signed
# event's latest signature wins, and seq 0 (an empty slot) is never answered.
for seq in range(1, 8):
    j.put_signature(seq, sig(seq))
j.put_signature(3, sig(99))  # the eighth put: all eight written with one sync
for seq in range(8, 11):
    j.append(payload(seq, 100))
    j.put_signature(seq, sig(seq))
out["ring"] = [j.signature(seq) == (sig(99) if seq == 3 else sig(seq)) for seq in range(1, 11)]
out["empty_slot"] = j.signature(0)
j = Journal(base + "/w", segment_bytes=4096)  # a cut: seq 10's signature was not yet synced
out["after_cut"] = [j.signature(seq) is not None for seq in range(1, 11)]
out["latest_after_cut"] = j.signature(3) == sig(99)
print(json.dumps(out))
"""
)

EXPECTED = {
    "reopened": [8, True],
    "pending": [[seq, True] for seq in range(1, 8)],
    "get": [True] * 7,
    "damaged": [None, [1, 2, 3, 4, 6, 7], True],
    "ring": [True] * 10,
    "empty_slot": None,
    # 1-7 and 3 again were synced as a batch of eight, 8 and 9 with the next appends.
    "after_cut": [True] * 9 + [False],
    "latest_after_cut": True,
}


def test_window_and_ring_on_littlefs(micropython, tmp_path):
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    out = micropython(script, args=[str(tmp_path / "flash.img")])
    assert json.loads(out.splitlines()[-1]) == EXPECTED


def test_window_and_ring_under_cpython(tmp_path):
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    (tmp_path / "root").mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "root")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(FIRMWARE)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == EXPECTED
