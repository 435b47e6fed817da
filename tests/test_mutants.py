"""Mutation test: 5,000 mutants of valid events and commands (fixed seed), none accepted by the
host; command mutants refused by the device on the unix port. bench/mutants.py runs 100,000."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# Loaded by path, not by putting bench/ on sys.path: bench/device.py would shadow the firmware's
# `device` package for every later test.
_spec = importlib.util.spec_from_file_location(
    "kvitto_bench_mutants", Path(__file__).resolve().parent.parent / "bench" / "mutants.py"
)
assert _spec is not None and _spec.loader is not None
mutation = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mutation  # dataclasses look their module up while the class is made
_spec.loader.exec_module(mutation)

SEED = 20261001


def test_host_accepts_none_of_5000_mutants():
    total, accepted, per_operator, errors = mutation.run(5000, SEED)
    assert total == 5000
    assert accepted == 0
    assert set(per_operator) == set(mutation.OPERATORS)  # every operator was exercised
    assert min(per_operator.values()) > 100
    assert {"BadSignature", "NotCBOR", "Truncated", "NotCoseSign1", "UnknownAlgorithm",
            "BadHeader"} <= set(errors)  # fmt: skip


def test_the_originals_themselves_verify():
    # Otherwise "0 accepted" would prove nothing.
    originals = mutation.originals()
    assert {o.kind for o in originals} == {"event", "command"}
    for original in originals:
        if original.kind == "event":
            mutation.verify_event(original.message, original.public)
        else:
            mutation.verify_command(
                original.message, original.public, original.target, original.now
            )


def test_device_refuses_command_mutants(micropython, tmp_path):
    rows = [
        (name, message.hex(), public.hex(), original.target, original.now)
        for name, original, message, public in mutation.mutants(3000, SEED)
        if original.kind == "command"
    ][:400]
    assert len(rows) == 400
    (tmp_path / "mutants.txt").write_text("\n".join(" ".join(map(str, row)) for row in rows))
    out = micropython(
        """
        from device.evidence import event
        obeyed = refused = 0
        for line in open("mutants.txt"):
            name, hexed, public, target, now = line.split()
            try:
                event.parse_command(bytes.fromhex(hexed), bytes.fromhex(public), target, 0, int(now))
                obeyed += 1
                print("OBEYED", name, hexed)
            except event.CommandRefused:
                refused += 1
        print("refused", refused, "obeyed", obeyed)
        """,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.strip().splitlines()[-1] == "refused 400 obeyed 0", out
