"""Mutation test of the host verifier: mutate valid events and commands, count what is accepted.

    .venv/bin/python bench/mutants.py                 # 100,000 mutants, prints mutants=N accepted=0
    .venv/bin/python bench/mutants.py 1000000 7       # count and seed

Operators: bit flips, byte changes, truncations, extensions, insertions, deletions, header swaps
(protected header, kid, alg, unprotected, tag), payload and signature swaps, S + L malleability,
and key swaps (the right message under another device's key). A mutant identical to a valid
message is not a mutant and is drawn again. tests/test_mutants.py runs 5,000 with a fixed seed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

from kvitto.evidence.commands import verify_command  # noqa: E402
from kvitto.evidence.cose import EvidenceError  # noqa: E402
from kvitto.evidence.events import verify_event  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
L = 2**252 + 27742317777372353535851937790883648493


@dataclass(frozen=True)
class Original:
    kind: str  # "event" or "command"
    message: bytes
    public: bytes
    target: str = ""
    now: int = 0


def originals() -> list[Original]:
    """The valid events and obeyed commands of tests/vectors/."""
    index = json.loads((VECTORS / "index.json").read_text())
    keys = {label: bytes.fromhex(pair["public"]) for label, pair in index["keys"].items()}
    out = []
    for vector in index["vectors"]:
        if vector["kind"] == "event" and vector["expect"] == "valid":
            message = (VECTORS / vector["file"]).read_bytes()
            out.append(Original("event", message, keys[vector["key"]]))
        elif vector["kind"] == "command" and vector["device"] == "obey":
            message = (VECTORS / vector["file"]).read_bytes()
            out.append(Original("command", message, keys["org"], vector["target"], vector["now"]))
    return out


def _parts(message: bytes) -> list:
    return list(cbor2.loads(message).value)


def _tagged(parts: list, tag: int = 18) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, parts))


Mutation = Callable[[random.Random, Original, list[Original]], tuple[bytes, bytes]]


def flip_bits(rng, original, _):
    data = bytearray(original.message)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data), original.public


def set_byte(rng, original, _):
    data = bytearray(original.message)
    data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data), original.public


def truncate(rng, original, _):
    return original.message[: rng.randrange(len(original.message))], original.public


def extend(rng, original, _):
    return original.message + rng.randbytes(rng.randrange(1, 9)), original.public


def insert_byte(rng, original, _):
    at = rng.randrange(len(original.message) + 1)
    return original.message[:at] + bytes([rng.randrange(256)]) + original.message[
        at:
    ], original.public


def delete_byte(rng, original, _):
    at = rng.randrange(len(original.message))
    return original.message[:at] + original.message[at + 1 :], original.public


def swap_protected(rng, original, others):
    parts = _parts(original.message)
    parts[0] = _parts(rng.choice(others).message)[0]
    return _tagged(parts), original.public


def change_kid(rng, original, _):
    parts = _parts(original.message)
    kid = rng.choice([b"org", b"tag-0042", b"lock-0007", b"tag-0043", b"", rng.randbytes(8)])
    parts[0] = cbor2.dumps({1: -8, 4: kid}, canonical=True)
    return _tagged(parts), original.public


def change_alg(rng, original, _):
    parts = _parts(original.message)
    kid = cbor2.loads(parts[0])[4]
    parts[0] = cbor2.dumps({1: rng.choice([-7, -35, -36, -37, -257, 0, 8, -9]), 4: kid})
    return _tagged(parts), original.public


def fill_unprotected(rng, original, _):
    parts = _parts(original.message)
    parts[1] = rng.choice([{1: -8}, {4: b"tag-0042"}, {"x": 1}, {33: b""}])
    return _tagged(parts), original.public


def change_tag(rng, original, _):
    return _tagged(
        _parts(original.message), rng.choice([17, 19, 96, 98, 61, 0x12F])
    ), original.public


def swap_payload(rng, original, others):
    parts = _parts(original.message)
    parts[2] = _parts(rng.choice(others).message)[2]
    return _tagged(parts), original.public


def swap_signature(rng, original, others):
    parts = _parts(original.message)
    parts[3] = _parts(rng.choice(others).message)[3]
    return _tagged(parts), original.public


def malleate_s(rng, original, _):
    # RFC 8032 §5.1.7: S must be below L; S + k·L is the same scalar mod L.
    parts = _parts(original.message)
    s = int.from_bytes(parts[3][32:], "little") + L * rng.choice((1, 2, 3))
    if s >= 2**256:
        s -= L
    parts[3] = parts[3][:32] + s.to_bytes(32, "little")
    return _tagged(parts), original.public


def swap_key(rng, original, others):
    keys = [other.public for other in others if other.public != original.public]
    return original.message, rng.choice(keys)


OPERATORS: dict[str, Mutation] = {
    "flip_bits": flip_bits, "set_byte": set_byte, "truncate": truncate, "extend": extend,
    "insert_byte": insert_byte, "delete_byte": delete_byte, "swap_protected": swap_protected,
    "change_kid": change_kid, "change_alg": change_alg, "fill_unprotected": fill_unprotected,
    "change_tag": change_tag, "swap_payload": swap_payload, "swap_signature": swap_signature,
    "malleate_s": malleate_s, "swap_key": swap_key,
}  # fmt: skip


def mutants(count: int, seed: int) -> Iterator[tuple[str, Original, bytes, bytes]]:
    """(operator, original, mutant message, public key) — count of them, deterministic."""
    rng = random.Random(seed)
    pool = originals()
    valid = {(o.message, o.public) for o in pool}
    names = sorted(OPERATORS)
    made = 0
    while made < count:
        original = rng.choice(pool)
        name = rng.choice(names)
        message, public = OPERATORS[name](rng, original, pool)
        if (message, public) in valid:
            continue  # a no-op (e.g. the same protected header): not a mutant
        made += 1
        yield name, original, message, public


def run(count: int, seed: int) -> tuple[int, int, Counter[str], Counter[str]]:
    """(mutants, accepted, mutants per operator, rejections per error class)."""
    per_operator: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    total = taken = 0
    for name, original, message, public in mutants(count, seed):
        total += 1
        per_operator[name] += 1
        try:
            if original.kind == "event":
                verify_event(message, public)
            else:
                verify_command(message, public, original.target, original.now)
            taken += 1
        except EvidenceError as error:
            errors[type(error).__name__] += 1
    return total, taken, per_operator, errors


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 20261001
    started = time.perf_counter()
    total, taken, per_operator, errors = run(count, seed)
    elapsed = time.perf_counter() - started
    print(f"mutants={total} accepted={taken}")
    print(f"seed={seed} seconds={elapsed:.1f} operators={len(per_operator)}")
    print("rejected as: " + ", ".join(f"{name}={n}" for name, n in errors.most_common()))


if __name__ == "__main__":
    main()
