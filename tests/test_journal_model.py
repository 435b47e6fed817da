"""The journal as a state machine (issue 4): hypothesis builds command scripts (append, cache a
signature, ack, reboot with or without a clean close, power cut part-way through an append) and
runs them on the unix port over littlefs on the simulated NOR flash; a model checks the state
after every command. Scripts without cuts also run under CPython on a plain directory, and both
interpreters must report exactly the same states."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SEGMENT_BYTES = 1024
MAX_SEGMENTS = 2

# Runs under both interpreters. argv: root-or-image, ops.json, segment_bytes, max_segments. One JSON line per command:
# [next_seq, boot, acked, lost, prev_hash, [[seq, digest, sig?]...], result].
RUNNER = r"""
import sys, json, hashlib
from binascii import hexlify
from device.evidence.journal import Journal

micro = sys.implementation.name == "micropython"
if micro:
    from sim.flash import mount, unmount

place = sys.argv[1]
segment_bytes = int(sys.argv[3])
max_segments = int(sys.argv[4])
with open(sys.argv[2]) as f:
    ops = json.loads(f.read())
bdev = None

def start():
    global bdev
    if micro:
        bdev = mount(place, "/flash", block_count=48)
        return Journal("/flash/j", segment_bytes=segment_bytes, max_segments=max_segments)
    return Journal(place, segment_bytes=segment_bytes, max_segments=max_segments)

def stop():
    if micro:
        unmount("/flash")

def payload(seq, size):
    head = b"%d:" % seq
    return (head + hashlib.sha256(head).digest() * 10)[:size]

def sig(seq):
    return hashlib.sha256(b"s%d" % seq).digest() * 2

def short(data):
    return hexlify(hashlib.sha256(data).digest()[:6]).decode()

journal = start()
for op in ops:
    kind = op[0]
    result = None
    if kind == "append":
        result = journal.append(payload(journal.next_seq, op[1]))
    elif kind == "sig":
        seq = journal.next_seq - 1 - op[1]
        if seq >= 1:
            journal.put_signature(seq, sig(seq))
    elif kind == "ack":
        journal.ack(journal.next_seq - 1 - op[1])
    elif kind == "reboot":
        if op[1]:
            journal.close()
        elif micro:
            bdev.power_off()  # unclean: nothing of the old mount may reach the flash
            journal.close()  # only frees the dead handles (EIO), so no finalizer runs later
        stop()
        journal = start()
    elif kind == "cut":
        bdev.tear_after(op[1], op[2])
        try:
            result = journal.append(payload(journal.next_seq, op[3]))
            bdev.tear_after(-1)
        except Exception as error:
            # The tearing write raises PowerLoss; a `with` closing a file on the way out may
            # turn it into OSError(EIO) from the dead flash. Either way the power is gone.
            if not (micro and bdev.dead):
                raise
            result = "cut"
            journal.close()  # the device is dead: this only frees the handles
            stop()
            journal = start()
    pending = []
    for seq, data in journal.pending():
        cached = journal.signature(seq)
        pending.append([seq, short(data), None if cached is None else short(cached)])
    print(json.dumps([journal.next_seq, journal.boot, journal.acked, journal.lost,
                      hexlify(journal.prev_hash).decode(), pending, result]))
"""


def payload(seq: int, size: int) -> bytes:
    head = b"%d:" % seq
    return (head + hashlib.sha256(head).digest() * 10)[:size]


def short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def sig_digest(seq: int) -> str:
    return short(hashlib.sha256(b"s%d" % seq).digest() * 2)


class Model:
    """What the journal must report; the one free choice (a cut append: kept or not, a lost
    event: only when full) is taken from the journal's answer and then checked for ever after."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.boot = 1
        self.acked = 0
        self.lost = 0
        self.prev = b"\0" * 32
        self.stored: dict[int, bytes] = {}
        self.sigs: set[int] = set()

    def unacked(self) -> list[int]:
        return sorted(s for s in self.stored if s > self.acked)

    def check(self, op: list, state: list) -> None:
        next_seq, boot, acked, lost, prev_hex, pending, result = state
        kind = op[0]
        if kind in ("append", "cut"):
            size = op[1] if kind == "append" else op[3]
            seq, data = self.next_seq, payload(self.next_seq, size)
            if result == "cut":
                self.boot += 1
                assert next_seq in (seq, seq + 1), (op, state)
                kept = next_seq == seq + 1
            else:
                assert result == seq, f"append returned {result}, expected {seq}"
                kept = True
            if kept:
                self.next_seq = seq + 1
                self.prev = hashlib.sha256(data).digest()
                if lost > self.lost:
                    assert lost == self.lost + 1
                    # Lost only when every segment holds unacknowledged events.
                    assert len(self.unacked()) >= MAX_SEGMENTS - 1, (op, state)
                    self.lost = lost
                else:
                    self.stored[seq] = data
        elif kind == "sig":
            seq = self.next_seq - 1 - op[1]
            if seq >= 1:
                self.sigs.add(seq)
        elif kind == "ack":
            self.acked = max(self.acked, min(self.next_seq - 1 - op[1], self.next_seq - 1))
        elif kind == "reboot":
            self.boot += 1
        expected = [[s, short(self.stored[s])] for s in self.unacked()]
        assert [p[:2] for p in pending] == expected, (op, state)
        for seq, _, cached in pending:
            # A cached signature is the right one; it may be gone after a cut (re-sign).
            assert cached is None or (seq in self.sigs and cached == sig_digest(seq)), (op, seq)
        assert [next_seq, boot, acked, lost, prev_hex] == [
            self.next_seq,
            self.boot,
            self.acked,
            self.lost,
            self.prev.hex(),
        ], (op, state)


def run_script(interpreter: list[str], place: Path, ops: list, workdir: Path) -> list[list]:
    runner = workdir / "runner.py"
    runner.write_text(RUNNER)
    script = workdir / "ops.json"
    script.write_text(json.dumps(ops))
    env = dict(os.environ)
    env["MICROPYPATH"] = f".frozen:{FIRMWARE}"
    env["PYTHONPATH"] = str(FIRMWARE / "device") + os.pathsep + str(FIRMWARE)
    result = subprocess.run(
        [
            *interpreter,
            str(runner),
            str(place),
            str(script),
            str(SEGMENT_BYTES),
            str(MAX_SEGMENTS),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    states = []
    for line in result.stdout.splitlines():
        try:
            states.append(json.loads(line))
        except ValueError:
            raise AssertionError(
                f"{interpreter[0]} printed {line!r}:\n{result.stdout[-3000:]}"
            ) from None
    return states


def make_machine(micropython_binary: str, workdir: Path, cuts: bool = True):
    counter = [0]
    seen = {"lost": 0, "cpython": 0, "cut": 0}

    class JournalMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[list] = []

        @rule(size=st.integers(1, 300))
        def append(self, size):
            self.ops.append(["append", size])

        @rule(back=st.integers(0, 3))
        def cache_signature(self, back):
            self.ops.append(["sig", back])

        @rule(backlog=st.integers(0, 12))
        def ack(self, backlog):
            self.ops.append(["ack", backlog])

        @rule(clean=st.booleans())
        def reboot(self, clean):
            self.ops.append(["reboot", clean])

        @rule(after=st.integers(0, 12000), garble=st.booleans(), size=st.integers(1, 300))
        def power_cut_during_append(self, after, garble, size):
            self.ops.append(["cut", after, garble, size] if cuts else ["append", size])

        def teardown(self) -> None:
            if not self.ops:
                return
            counter[0] += 1
            here = workdir / str(counter[0])
            here.mkdir()
            states = run_script([micropython_binary], here / "flash.img", self.ops, here)
            assert len(states) == len(self.ops)
            model = Model()
            for op, state in zip(self.ops, states):
                model.check(op, state)
            seen["lost"] += model.lost
            seen["cut"] += sum(state[-1] == "cut" for state in states)
            if not any(op[0] == "cut" for op in self.ops):
                # Same module, plain directory, CPython: the very same states.
                cpython = run_script([sys.executable], here / "dir", self.ops, here)
                assert cpython == states
                seen["cpython"] += 1

    return JournalMachine, seen


def test_journal_state_machine_with_power_cuts_on_littlefs(micropython, tmp_path):
    machine, seen = make_machine(micropython.binary, tmp_path)
    machine.TestCase.settings = settings(
        max_examples=40, stateful_step_count=50, deadline=None, derandomize=True
    )
    machine.TestCase().runTest()
    # The interesting paths ran: cuts that tore an append, and a full journal losing events.
    assert seen["cut"] > 20 and seen["lost"] > 0


def test_journal_state_machine_same_on_cpython_and_unix_port(micropython, tmp_path):
    machine, seen = make_machine(micropython.binary, tmp_path, cuts=False)
    machine.TestCase.settings = settings(
        max_examples=40, stateful_step_count=50, deadline=None, derandomize=True
    )
    machine.TestCase().runTest()
    assert seen["cpython"] >= 20 and seen["lost"] > 0


def test_model_catches_a_journal_that_forgets(tmp_path):
    # The checker is not vacuous: a state that lost an acknowledged-later event fails it.
    model = Model()
    state = [2, 1, 0, 0, hashlib.sha256(payload(1, 10)).hexdigest(), [], 1]
    try:
        model.check(["append", 10], state)
    except AssertionError:
        return
    raise AssertionError("the model accepted a journal that dropped seq 1")
