"""device/evidence/sha512.py equals hashlib's SHA-512, under CPython and on the unix port."""

from __future__ import annotations

import hashlib
import random

from signing_support import device_module

sha512 = device_module("evidence.sha512").sha512

# Lengths around the block (128) and padding (112) boundaries, then random ones.
BOUNDARIES = [0, 1, 55, 56, 63, 64, 110, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257]


def random_inputs(count: int = 1000, seed: int = 512) -> list[bytes]:
    rng = random.Random(seed)
    sizes = BOUNDARIES + [rng.randrange(0, 600) for _ in range(count - len(BOUNDARIES))]
    return [rng.randbytes(size) for size in sizes]


def test_fips_180_examples():
    assert sha512(b"abc").digest() == hashlib.sha512(b"abc").digest()
    two_blocks = (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
    )
    assert sha512(two_blocks).digest() == hashlib.sha512(two_blocks).digest()


def test_thousand_random_inputs_on_cpython():
    for data in random_inputs():
        assert sha512(data).digest() == hashlib.sha512(data).digest(), len(data)


def test_incremental_updates_and_digest_midway():
    rng = random.Random(7)
    for _ in range(100):
        data = rng.randbytes(rng.randrange(0, 700))
        h = sha512()
        cut = 0
        while cut < len(data):
            step = rng.randrange(1, 200)
            h.update(data[cut : cut + step])
            cut += step
        assert h.digest() == hashlib.sha512(data).digest()
        assert h.digest() == h.digest()  # digest() leaves the object usable
        h.update(b"more")
        assert h.digest() == hashlib.sha512(data + b"more").digest()


def test_steps_yield_five_times_per_block():
    data = bytes(range(256)) * 3  # 768 bytes = 6 blocks: 2 schedule + 4 x 20 rounds each
    h = sha512()
    assert sum(1 for _ in h.update_steps(data)) == 36
    steps = h.digest_steps()
    slices = 0
    while True:
        try:
            next(steps)
            slices += 1
        except StopIteration as done:
            assert done.value == hashlib.sha512(data).digest()
            break
    assert slices == 6  # the padding block
    assert h.digest() == hashlib.sha512(data).digest()


def test_thousand_random_inputs_on_the_unix_port(micropython, tmp_path):
    inputs = random_inputs()
    (tmp_path / "inputs.txt").write_text("\n".join(data.hex() for data in inputs) + "\n")
    out = micropython(
        """
        from device.evidence.sha512 import sha512
        with open("inputs.txt") as lines:
            for line in lines:
                print(sha512(bytes.fromhex(line.strip())).digest().hex())
        """,
        cwd=tmp_path,
    )
    assert out.split() == [hashlib.sha512(data).hexdigest() for data in inputs]
