"""device/evidence/ed25519.py: RFC 8032 §7.1 on the unix port and CPython, agreement with cryptography,
the checked-in comb table, and stepwise signing."""

from __future__ import annotations

import hashlib
import json
import random

import evidence_support as reference
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from signing_support import FIRMWARE, VECTORS, device_module

ed25519 = device_module("evidence.ed25519")
RFC8032 = json.loads((VECTORS / "rfc8032.json").read_text())["vectors"]
L = 2**252 + 27742317777372353535851937790883648493


def raw_public(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


@pytest.mark.parametrize("vector", RFC8032, ids=lambda v: v["name"])
def test_rfc8032_section_7_1_on_cpython(vector):
    secret, public = bytes.fromhex(vector["secret"]), bytes.fromhex(vector["public"])
    message, signature = bytes.fromhex(vector["message"]), bytes.fromhex(vector["signature"])
    assert ed25519.public_key(secret) == public
    assert ed25519.sign(secret, message) == signature
    assert ed25519.verify(public, message, signature)
    assert not ed25519.verify(public, message + b"\x00", signature)


def test_rfc8032_section_7_1_on_the_unix_port(micropython):
    out = micropython(
        """
        import json
        from device.evidence import ed25519
        for v in json.load(open({!r}))["vectors"]:
            secret, public = bytes.fromhex(v["secret"]), bytes.fromhex(v["public"])
            message, signature = bytes.fromhex(v["message"]), bytes.fromhex(v["signature"])
            print(v["name"].replace(" ", "_"), ed25519.public_key(secret) == public,
                  ed25519.sign(secret, message) == signature,
                  ed25519.verify(public, message, signature),
                  ed25519.verify(public, message + b"x", signature))
        """.format(str(VECTORS / "rfc8032.json"))
    )
    rows = [line.split() for line in out.strip().splitlines()]
    assert [row[0] for row in rows] == [v["name"].replace(" ", "_") for v in RFC8032]
    assert all(row[1:] == ["True", "True", "True", "False"] for row in rows), out


def test_agrees_with_cryptography_on_random_keys():
    rng = random.Random(25519)
    for _ in range(40):
        secret, message = rng.randbytes(32), rng.randbytes(rng.randrange(0, 300))
        key = Ed25519PrivateKey.from_private_bytes(secret)
        assert ed25519.public_key(secret) == raw_public(secret)
        signature = ed25519.sign(secret, message)
        assert signature == key.sign(message)
        assert ed25519.verify(raw_public(secret), message, signature)


def test_unix_port_agrees_with_cryptography(micropython):
    rng = random.Random(8032)
    cases = [(rng.randbytes(32), rng.randbytes(rng.randrange(0, 300))) for _ in range(12)]
    out = micropython(
        "from device.evidence import ed25519\n"
        + "".join(
            f"print(ed25519.public_key({s!r}).hex(), ed25519.sign({s!r}, {m!r}).hex())\n"
            for s, m in cases
        )
    )
    expected = [
        f"{raw_public(s).hex()} {Ed25519PrivateKey.from_private_bytes(s).sign(m).hex()}"
        for s, m in cases
    ]
    assert out.strip().splitlines() == expected


def test_verify_refuses_forgeries():
    secret = bytes(range(32))
    public, message = raw_public(secret), b"arrive tag-0042"
    signature = ed25519.sign(secret, message)
    assert ed25519.verify(public, message, signature)
    for position in (0, 17, 31, 32, 50, 63):
        broken = bytearray(signature)
        broken[position] ^= 0x04
        assert not ed25519.verify(public, message, bytes(broken))
    # RFC 8032 §5.1.7: S must be below L; S + L is the classic malleability forgery.
    s = int.from_bytes(signature[32:], "little")
    assert not ed25519.verify(public, message, signature[:32] + (s + L).to_bytes(32, "little"))
    other = raw_public(bytes(32))
    assert not ed25519.verify(other, message, signature)
    assert not ed25519.verify(public, message, signature[:63])
    assert not ed25519.verify(public[:31], message, signature)
    # y = 2 is not on the curve: decoding the key fails, verify says no.
    assert not ed25519.verify((2).to_bytes(32, "little"), message, signature)
    # y >= p is a non-canonical encoding.
    assert not ed25519.verify((2**255 - 1).to_bytes(32, "little"), message, signature)


def test_verify_key_cache_follows_the_key():
    first, second = bytes(range(32)), bytes(range(1, 33))
    message = b"resend 3..9"
    sig_first, sig_second = ed25519.sign(first, message), ed25519.sign(second, message)
    for _ in range(2):  # switching keys rebuilds the cached comb each time
        assert ed25519.verify(raw_public(first), message, sig_first)
        assert not ed25519.verify(raw_public(first), message, sig_second)
        assert ed25519.verify(raw_public(second), message, sig_second)
        assert not ed25519.verify(raw_public(second), message, sig_first)


def test_prepare_builds_the_key_table_verify_then_uses():
    secret = bytes(range(7, 39))
    public, message = raw_public(secret), b"ack upto 5"
    signature = ed25519.sign(secret, message)
    table = ed25519.prepare(public)
    assert table is not None and len(table) == 7 * 128
    assert ed25519.prepare(public) is table  # kept: built once per key
    assert ed25519.verify(public, message, signature)
    assert ed25519.prepare((2**255 - 1).to_bytes(32, "little")) is None  # not a point
    assert not ed25519.verify((2**255 - 1).to_bytes(32, "little"), message, signature)
    assert ed25519.verify(public, message, signature)


def test_bad_secret_size_raises_its_own_error():
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519.sign(b"short", b"message")


def test_checked_in_comb_table_matches_the_reference_arithmetic():
    reference.use_sha512(lambda data: hashlib.sha512(data).digest())
    table = device_module("evidence.ed25519_table").TABLE
    assert len(table) == 255 * 64 <= 16 * 1024
    assert table == reference.comb_table()


def test_naive_reference_agrees_so_the_bench_compares_like_with_like():
    reference.use_sha512(lambda data: hashlib.sha512(data).digest())
    vector = RFC8032[2]
    secret, message = bytes.fromhex(vector["secret"]), bytes.fromhex(vector["message"])
    assert reference.sign(secret, message).hex() == vector["signature"]
    assert reference.verify(
        bytes.fromhex(vector["public"]), message, reference.sign(secret, message)
    )


def test_signer_steps_yield_often_and_give_the_same_signature():
    secret = bytes(range(32))
    signer = ed25519.Signer(secret)
    assert signer.public == raw_public(secret)
    message = bytes(300)
    steps = signer.sign_steps(message)
    slices = 0
    while True:
        try:
            next(steps)
            slices += 1
        except StopIteration as done:
            signature = done.value
            break
    # 3 + 4 SHA-512 blocks, 8 comb slices, one for the point encoding.
    assert slices >= 15
    assert (
        signature == signer.signature == Ed25519PrivateKey.from_private_bytes(secret).sign(message)
    )


def test_two_signatures_interleaved_step_by_step_on_one_signer_are_both_right():
    # The reader signs a tag URL while the link signs an event, with the one cached Signer:
    # each signature has its own SHA-512 scratch space.
    secret = bytes(range(32))
    signer = ed25519.Signer(secret)
    key = Ed25519PrivateKey.from_private_bytes(secret)
    messages = [b"tag url" * 20, b"event" * 60]
    steps = [signer.sign_steps(message) for message in messages]
    results: list = [None, None]
    while None in results:
        for index, generator in enumerate(steps):
            if results[index] is None:
                try:
                    next(generator)
                except StopIteration as done:
                    results[index] = done.value
    assert results == [key.sign(message) for message in messages]


def test_a_signer_reuses_its_schedule_and_survives_a_signature_dropped_half_way():
    # The SHA-512 schedule window is the Signer's, not a new block per signature;
    # a generator abandoned mid-way (a cancelled task) costs a new one, never a wrong signature.
    secret = bytes(range(32))
    signer = ed25519.signer(secret)  # the cached one, which ed25519.sign(secret, …) uses
    key = Ed25519PrivateKey.from_private_bytes(secret)
    schedule = signer._schedule
    assert ed25519.sign(secret, b"first") == key.sign(b"first")
    assert signer._schedule is schedule and not any(schedule)  # nothing kept between signatures
    dropped = signer.sign_steps(b"dropped")
    next(dropped)
    del dropped
    assert ed25519.sign(secret, b"after") == key.sign(b"after")
    assert signer._schedule is not None and ed25519.sign(secret, b"again") == key.sign(b"again")


def test_stepwise_signing_under_asyncio_on_the_unix_port(micropython):
    out = micropython(
        """
        import asyncio
        from device.evidence import ed25519
        ticks = []
        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep_ms(0)
        async def main():
            task = asyncio.create_task(ticker())
            signer = ed25519.Signer(bytes(range(32)))
            for _ in signer.sign_steps(b"x" * 300):
                await asyncio.sleep_ms(0)
            task.cancel()
            print(signer.signature.hex(), len(ticks))
        asyncio.run(main())
        """
    )
    signature, ticks = out.split()
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert signature == key.sign(b"x" * 300).hex()
    assert int(ticks) >= 15  # the other task ran between the slices


def test_firmware_table_module_is_only_data():
    source = (FIRMWARE / "device" / "evidence" / "ed25519_table.py").read_text()
    assert "import" not in source.split('"""', 2)[2]
