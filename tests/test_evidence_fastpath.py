"""The C-speed canonical check agrees with the pure-Python one where it is trusted, and defers
to it where length-first (RFC 7049) and bytewise (RFC 8949 §4.2.1) key orders differ."""

from __future__ import annotations

import cbor2
import pytest

from kvitto.evidence import NonCanonical, _decode, canonical


def test_mixed_key_types_use_bytewise_order():
    value = {1000: 1, "a": 2}  # 0x19 03e8 sorts before 0x61 61 bytewise; after it length-first
    bytewise = canonical(value)
    length_first = cbor2.dumps(value, canonical=True)
    assert bytewise != length_first
    assert _decode(bytewise, "map") == value
    with pytest.raises(NonCanonical):
        _decode(length_first, "map")


@pytest.mark.parametrize(
    "value",
    [
        {0: 1, 1: "tag-0042", 10: {"via": "badge", "sun": b"\x01" * 8}},
        {"nonce": b"\x00" * 16, "sig": b"\x01" * 64},
        [1, -1, 2**64 - 1, -(2**64), b"", ""],
    ],
)
def test_fast_and_slow_agree_on_plain_values(value):
    data = canonical(value)
    assert data == cbor2.dumps(value, canonical=True)
    assert _decode(data, "value") == value


def test_bignum_and_floats_are_refused_even_when_cbor2_would_round_trip_them():
    for value in (2**64, 1.5):
        with pytest.raises(NonCanonical):
            _decode(cbor2.dumps(value, canonical=True), "value")
