"""device/evidence/cbor.py: deterministic encoding (RFC 8949 §4.2.1) that cbor2 agrees with, and a strict
decoder that accepts exactly the deterministic encodings of the supported subset."""

from __future__ import annotations

import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from signing_support import device_module

cbor = device_module("evidence.cbor")

uints = st.integers(min_value=0, max_value=2**64 - 1)
ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
scalars = st.one_of(ints, st.binary(max_size=40), st.text(max_size=30), st.booleans(), st.none())


def containers(children):
    # One key kind per map: for uint keys and for text keys shorter than 24 bytes, cbor2's
    # length-first canonical order equals RFC 8949's bytewise order, so cbor2 is an oracle.
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(uints, children, max_size=5),
        st.dictionaries(st.text(max_size=7), children, max_size=5),
    )


values = st.recursive(scalars, containers, max_leaves=20)


@settings(max_examples=400)
@given(values)
def test_encoding_matches_cbor2_canonical_and_round_trips(value):
    encoded = cbor.encode(value)
    assert encoded == cbor2.dumps(value, canonical=True)
    assert cbor.decode(encoded) == value


def test_mixed_keys_sort_bytewise_as_rfc_8949_says():
    # RFC 8949 §4.2.1's example order: 10, 100, -1, "z", "aa", false (bytewise, so 100 before
    # -1 and false last; RFC 7049's length-first order would put -1 and false first).
    encoded = cbor.encode({"aa": 0, 100: 0, False: 0, "z": 0, -1: 0, 10: 0})
    assert encoded.hex() == "a60a001864002000617a0062616100f400"
    assert cbor.decode(encoded) == {10: 0, -1: 0, False: 0, 100: 0, "z": 0, "aa": 0}


def test_tag_round_trip():
    tagged = cbor.Tag(18, [b"\xa1\x01\x27", {}, b"payload", bytes(64)])
    encoded = cbor.encode(tagged)
    assert encoded == cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, b"payload", bytes(64)]))
    decoded = cbor.decode(encoded)
    assert isinstance(decoded, cbor.Tag) and (decoded.tag, decoded.value) == (18, tagged.value)


REFUSED = {
    "non-shortest uint": "1801",
    "non-shortest length": "5800",
    "non-shortest 2-byte": "190017",
    "indefinite bytes": "5f41004100ff",
    "indefinite array": "9f01ff",
    "indefinite map": "bf0102ff",
    "keys out of order": "a2020001 00".replace(" ", ""),
    "duplicate keys": "a201000100",
    "half float": "f90000",
    "double": "fb3ff0000000000000",
    "undefined": "f7",
    "simple value": "f0",
    "reserved info": "1c",
    "trailing byte": "0102",
    "truncated bytes": "4501",
    "truncated array": "9a ffffffff".replace(" ", ""),
    "truncated map": "a201",
    "empty input": "",
    "bad utf-8": "62fffe",
    "array key": "a1800102",
    "too deep": "81" * 12 + "00",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_strict_decoder_refuses(name):
    with pytest.raises(cbor.CBORError):
        cbor.decode(bytes.fromhex(REFUSED[name]))


@settings(max_examples=2000)
@given(st.binary(max_size=40))
def test_whatever_decodes_is_canonical(data):
    try:
        value = cbor.decode(data)
    except cbor.CBORError:
        return
    assert cbor.encode(value) == data


@settings(max_examples=300)
@given(values)
def test_any_single_byte_change_is_refused_or_decodes_differently(value):
    encoded = bytearray(cbor.encode(value))
    for position in range(len(encoded)):
        mutated = bytearray(encoded)
        mutated[position] ^= 0x01
        try:
            decoded = cbor.decode(bytes(mutated))
        except cbor.CBORError:
            continue
        assert cbor.encode(decoded) == bytes(mutated)


def test_encoder_refuses_what_the_format_lacks():
    for bad in (1.5, {1, 2}, object(), 2**64, -(2**64) - 1):
        with pytest.raises(cbor.CBORError):
            cbor.encode(bad)


SAMPLES = [
    0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -(2**64),
    b"", b"\x00" * 24, "", "kvitto", "\u00e5\u00e4\u00f6", [1, [2, [3]]], {}, True, False, None,
    {"via": "badge", "sun": b"\x01" * 32}, {0: 1, 1: "tag-0042", 10: {"offset_ms": -250}},
]  # fmt: skip


def test_unix_port_encodes_and_decodes_like_cpython(micropython, tmp_path):
    (tmp_path / "samples.json").write_text(
        json.dumps([cbor.encode(sample).hex() for sample in SAMPLES])
    )
    out = micropython(
        f"""
        import json
        from device.evidence.cbor import encode, decode, CBORError
        for encoded in json.load(open("samples.json")):
            print(encode(decode(bytes.fromhex(encoded))).hex())
        for bad in {sorted(REFUSED.values())!r}:
            try:
                decode(bytes.fromhex(bad))
                print("accepted", bad)
            except CBORError:
                print("refused")
        """,
        cwd=tmp_path,
    )
    lines = out.split()
    assert lines[: len(SAMPLES)] == [cbor.encode(sample).hex() for sample in SAMPLES]
    assert lines[len(SAMPLES) :] == ["refused"] * len(REFUSED)
