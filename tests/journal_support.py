"""The journal power-cut harness, shared by tests/test_journal_powercut.py and bench/powercut.py.

A unix-port child mounts a littlefs image on `sim.flash.FileBlockDevice`, opens the journal,
reports everything it holds, then appends events (and caches signatures, and acknowledges) until
it is SIGKILLed at a random moment or its flash tears a write part-way. The parent knows, from the
lines the child printed, which appends returned, and checks after every cut that the image mounts,
every returned event that is not acknowledged is there byte-for-byte, no record is corrupt and no
sequence number is handed out twice.

    stats = run_cuts(micropython_binary(), cuts=300, seed=4, workdir=tmp_path)
    assert stats.lost == stats.corrupt == stats.reused == 0
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

# Runs under the unix port. argv: image, seed, tear_bytes (-1: none), garble, max_segments,
# ops. Lines: O boot next acked lost | P seq digest | T seq digest | A seq lost | K acked |
# BAD what seq | R (ready) | CUT | DONE. Payloads embed seq, boot and the chain hash, so the
# parent can tell any record returned from the one that was appended.
CHILD = r"""
import sys, hashlib
from binascii import hexlify
from sim.flash import mount
from device.evidence.journal import Journal

image = sys.argv[1]
rng = int(sys.argv[2]) or 1
tear = int(sys.argv[3])
garble = sys.argv[4] == "1"
max_segments = int(sys.argv[5])
ops = int(sys.argv[6])
ack_percent = int(sys.argv[7])

def rand(n):
    global rng
    rng ^= (rng << 13) & 0xFFFFFFFF
    rng ^= rng >> 17
    rng ^= (rng << 5) & 0xFFFFFFFF
    return rng % n

def digest(data):
    return hexlify(hashlib.sha256(data).digest()[:8]).decode()

def payload(seq, boot, prev, length):
    head = b"seq=%d;boot=%d;prev=%s;" % (seq, boot, hexlify(prev))
    body = bytearray(head)
    filler = hashlib.sha256(head).digest()
    while len(body) < length:
        body.extend(filler)
    return bytes(body[:max(length, len(head))])

def signature(data):
    return hashlib.sha256(b"sig" + data).digest() * 2

def out(*parts):
    print(*parts)

bdev = mount(image, "/flash", block_size=4096, block_count=64)
journal = Journal("/flash/journal", segment_bytes=1024, max_segments=max_segments)
out("O", journal.boot, journal.next_seq, journal.acked, journal.lost)
previous = None
for seq, data in journal.pending():
    out("P", seq, digest(data))
    if previous is not None and previous[0] == seq - 1:
        if (b";prev=%s;" % hexlify(hashlib.sha256(previous[1]).digest())) not in data:
            out("BAD chain", seq)
    sig = journal.signature(seq)
    if sig is not None and sig != signature(data):
        out("BAD sig", seq)
    if journal.get(seq) != data:
        out("BAD get", seq)
    previous = (seq, data)
if previous is not None and previous[0] == journal.next_seq - 1:
    if journal.prev_hash != hashlib.sha256(previous[1]).digest():
        out("BAD head", previous[0])
if tear >= 0:
    bdev.tear_after(tear, garble)
out("R")
try:
    for _ in range(ops):
        choice = rand(100)
        if choice >= ack_percent:
            seq = journal.next_seq
            data = payload(seq, journal.boot, journal.prev_hash, 150 + rand(101))
            out("T", seq, digest(data))
            lost = journal.lost
            got = journal.append(data)
            if journal.lost > lost and (
                len(journal._numbers) < journal.max_segments or journal._highs[0] <= journal.acked
            ):
                out("BAD dropped", got)  # counted lost although space could have been freed
            out("A", got, journal.lost)
            if rand(2):
                journal.put_signature(got, signature(data))
        else:
            backlog = rand(3) * rand(12)
            journal.ack(journal.next_seq - 1 - backlog)
            out("K", journal.acked)
    journal.close()
    out("DONE")
except Exception:
    # The tearing write raises PowerLoss; a `with` closing a file on the way out may turn it
    # into OSError(EIO) from the dead flash. Anything else is a real failure.
    if not bdev.dead:
        raise
    out("CUT")
"""

# The start of a journal scenario that runs on both interpreters: argv[1] is a littlefs image
# (unix port: mounted at /flash, `base`) or a directory (CPython: `base` itself).
ON_FLASH = r"""
import sys, os, json, hashlib
micro = sys.implementation.name == "micropython"
place = sys.argv[1]
if micro:
    from sim.flash import mount, unmount
    mount(place, "/flash", block_count=64)
    base = "/flash"
else:
    base = place
"""


@dataclass
class CutStats:
    cuts: int = 0
    kills: int = 0
    tears: int = 0
    runs: int = 0
    appends: int = 0
    lost: int = 0  # returned, unacknowledged, stored events missing after a cut
    corrupt: int = 0  # records that differ from what was appended, bad chain/sig, no mount
    reused: int = 0  # sequence numbers (or boot counts) handed out twice
    journal_lost: int = 0  # events the journal itself counted as lost (full, by policy)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"cuts={self.cuts} lost={self.lost} corrupt={self.corrupt} reused={self.reused}"


class _Model:
    """What the parent knows from the children's output."""

    def __init__(self) -> None:
        self.attempted: dict[int, set[str]] = {}
        self.confirmed: dict[int, str] = {}  # seq -> digest, stored (not counted lost)
        self.max_returned = 0
        self.acked = 0
        self.lost = 0
        self.boot = 0


def _check_run(lines: list[str], model: _Model, stats: CutStats) -> None:
    def problem(kind: str, text: str) -> None:
        setattr(stats, kind, getattr(stats, kind) + 1)
        if len(stats.problems) < 20:
            stats.problems.append(f"run {stats.runs}: {text}")

    opened = False
    seen: set[int] = set()
    pending_attempt: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "O":
            opened = True
            boot, next_seq, acked, lost = (int(p) for p in parts[1:5])
            if boot <= model.boot:
                problem("reused", f"boot {boot} after boot {model.boot}")
            if next_seq <= model.max_returned:
                problem("reused", f"next_seq {next_seq} <= returned {model.max_returned}")
            if acked < model.acked or lost < model.lost:
                problem("corrupt", f"counters went back: acked {acked} lost {lost}")
            model.boot, model.acked, model.lost = boot, max(acked, model.acked), lost
        elif tag == "P":
            seq, digest = int(parts[1]), parts[2]
            seen.add(seq)
            if seq <= model.acked:
                problem("corrupt", f"acknowledged seq {seq} returned as pending")
            if digest not in model.attempted.get(seq, set()):
                problem("corrupt", f"seq {seq} returned bytes that were never appended")
            elif seq in model.confirmed and model.confirmed[seq] != digest:
                problem("corrupt", f"seq {seq} differs from what append returned")
        elif tag == "BAD":
            problem("corrupt", line)
        elif tag == "R":
            for seq in model.confirmed:
                if seq > model.acked and seq not in seen:
                    problem("lost", f"returned seq {seq} missing")
        elif tag == "T":
            seq, digest = int(parts[1]), parts[2]
            if seq <= model.max_returned:
                problem("reused", f"seq {seq} handed out again")
            model.attempted.setdefault(seq, set()).add(digest)
            pending_attempt = (seq, digest)
        elif tag == "A":
            seq, lost = int(parts[1]), int(parts[2])
            stats.appends += 1
            if pending_attempt is None or pending_attempt[0] != seq:
                problem("reused", f"append returned {seq}, expected {pending_attempt}")
            elif lost > model.lost:
                stats.journal_lost += lost - model.lost
            else:
                model.confirmed[seq] = pending_attempt[1]
            model.lost = lost
            model.max_returned = max(model.max_returned, seq)
            pending_attempt = None
        elif tag == "K":
            model.acked = max(model.acked, int(parts[1]))
    if not opened:
        if any("Traceback" in line or "Error" in line for line in lines):
            problem("corrupt", "child failed before opening: " + " | ".join(lines[-3:]))
    # Forget what can no longer come back, to keep the model small.
    for seq in [s for s in model.confirmed if s <= model.acked]:
        del model.confirmed[seq]
    for seq in [s for s in model.attempted if s <= model.acked]:
        del model.attempted[seq]


def micropython_binary() -> str | None:
    """The unix port: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else shutil.which("micropython")


def _spawn(binary: str, script: Path, args: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["MICROPYPATH"] = f".frozen:{FIRMWARE}"
    return subprocess.Popen(
        [binary, "-X", "heapsize=2M", str(script), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def run_cuts(
    binary: str,
    cuts: int,
    seed: int,
    workdir: Path,
    *,
    max_segments: int = 8,
    progress=None,
) -> CutStats:
    """Cut power `cuts` times (about half SIGKILL, half torn writes), then check once more."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "journal_child.py"
    script.write_text(CHILD)
    image = workdir / "journal.img"
    if image.exists():
        image.unlink()
    rng = random.Random(seed)
    stats = CutStats()
    model = _Model()
    final = False
    while True:
        final = stats.cuts >= cuts
        tear = -1
        if not final and rng.random() < 0.5:
            tear = rng.randrange(0, 40000)
        args = [
            str(image),
            str(rng.randrange(1, 2**31)),
            str(tear),
            "1" if rng.random() < 0.7 else "0",
            str(max_segments),
            "0" if final else "400",
            str(
                rng.choice((25, 25, 25, 2))
            ),  # now and then the collector is away: the journal fills
        ]
        child = _spawn(binary, script, args)
        killed = False
        if tear < 0 and not final:
            try:
                child.wait(timeout=rng.uniform(0.005, 0.25))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                killed = True
        assert child.stdout is not None
        output = child.stdout.read().decode(errors="replace")
        child.wait()
        complete = output.split("\n")[:-1]  # a line cut off by the kill never counts
        stats.runs += 1
        _check_run(complete, model, stats)
        if final:
            if "R" not in complete:
                stats.corrupt += 1
                stats.problems.append("final check did not complete: " + output[-300:])
            return stats
        if killed:
            stats.kills += 1
            stats.cuts += 1
        elif "CUT" in complete:
            stats.tears += 1
            stats.cuts += 1
        if progress is not None and stats.runs % 100 == 0:
            progress(stats)
        time.sleep(0)
