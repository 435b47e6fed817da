"""kvitto.evidence.events beyond the vectors: the stream checker's state, the deterministic re-encoder,
and the limits on free-form fields."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest

from kvitto.evidence.chain import ChainChecker, check_stream, verify_stream
from kvitto.evidence.cose import (
    BootRegression,
    BrokenChain,
    FieldType,
    NonCanonical,
    SequenceGap,
    UnknownField,
    WrongDevice,
    canonical,
    key_id,
    read_messages,
    sign1,
)
from kvitto.evidence.events import decode_payload, verify_event

SECRET = hashlib.sha256(b"kvitto strict test").digest()
EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"


def public() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(SECRET).public_key().public_bytes_raw()


def chain(count: int, dev: str = "tag-0042", start: int = 1, prev: bytes = bytes(32), boot=1):
    events = []
    for seq in range(start, start + count):
        fields = {0: 1, 1: dev, 2: seq, 3: boot, 4: seq * 10, 7: "door_open", 9: prev}
        payload = canonical(fields)
        events.append(verify_event(sign1(SECRET, dev.encode(), payload), public()))
        prev = hashlib.sha256(payload).digest()
    return events


def test_example_bundle_passes_the_stream_check():
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    key = bytes.fromhex("940d1ce7eabbe787882766a24cfe6464ce247965068db77ebc6f393d7562d94b")
    messages = [m for _, m in read_messages(EXAMPLE / "evidence.cbor-seq")]
    assert len(verify_stream(messages, key)) == 6
    assert key_id(messages[0]) == "tag-0042"


def test_checker_resumes_from_stored_state():
    events = chain(6)
    checker = ChainChecker("tag-0042", last_seq=3, last_hash=events[2].hash)
    for event in events[3:]:
        checker.check(event)
    with pytest.raises(BrokenChain):
        ChainChecker("tag-0042", last_seq=3, last_hash=bytes(32)).check(events[3])
    with pytest.raises(SequenceGap):
        ChainChecker("tag-0042", last_seq=2, last_hash=events[1].hash).check(events[3])
    with pytest.raises(WrongDevice):
        ChainChecker("tag-0043").check(events[0])


def test_excerpt_may_start_mid_stream_but_seq_1_needs_zero_prev():
    events = chain(5)
    assert check_stream(events[2:]) == 3
    forged = chain(1, prev=b"\x01" * 32)
    with pytest.raises(BrokenChain):
        check_stream(forged)


def test_boot_counter_and_uptime_never_go_back():
    first = chain(2, boot=2)
    later = chain(1, start=3, prev=first[-1].hash, boot=1)
    with pytest.raises(BootRegression):
        check_stream(first + later)


def test_canonical_sorts_bytewise_unlike_cbor2_canonical():
    mixed = {100: 0, -1: 0, "z": 0}
    assert canonical(mixed).hex() == "a31864002000617a00"
    assert cbor2.dumps(mixed, canonical=True) != canonical(mixed)  # length-first, RFC 7049


@pytest.mark.parametrize(
    "x",
    [
        {"note": "n" * 65},
        {f"k{i}": i for i in range(17)},
        {"deep": {"deeper": {"deepest": 1}}},
        {"ratio": 0.5},
        {1: "int key"},
    ],
)
def test_free_form_health_maps_stay_small(x):
    fields = {0: 1, 1: "tag-0042", 2: 1, 3: 1, 4: 0, 7: "health", 9: bytes(32), 10: x}
    with pytest.raises((FieldType, NonCanonical)):
        decode_payload(canonical(fields) if "ratio" not in x else cbor2.dumps(fields))


def test_messages_name_the_field():
    fields = {0: 1, 1: "tag-0042", 2: 1, 3: 1, 4: 0, 7: "arrive", 8: bytes(3), 9: bytes(32)}
    with pytest.raises(FieldType, match=r"key 8 \(cred\)"):
        decode_payload(canonical(fields))


def test_phone_taps_carry_challenge_and_answer_but_badges_do_not():
    base = {0: 1, 1: "tag-0042", 2: 1, 3: 1, 4: 0, 7: "arrive", 8: bytes(16), 9: bytes(32)}
    phone = {**base, 10: {"via": "phone", "nonce": bytes(16), "sig": bytes(64)}}
    assert decode_payload(canonical(phone)).x["sig"] == bytes(64)
    badge = {**base, 10: {"via": "badge", "sig": bytes(64)}}
    with pytest.raises(UnknownField):
        decode_payload(canonical(badge))


def test_a_lock_journals_a_sun_or_a_phone_answer_but_not_both():
    base = {0: 1, 1: "lock-0201", 2: 1, 3: 1, 4: 0, 8: bytes(16), 9: bytes(32)}
    answer = {"nonce": bytes(16), "sig": bytes(64)}
    for event_type, via in (("unlock", "phone"), ("deny", "ntag424"), ("arrive", "lock")):
        with_answer = {**base, 7: event_type, 10: {"via": via, **answer}}
        with_sun = {**base, 7: event_type, 10: {"via": via, "sun": bytes(24)}}
        if via != "phone":
            assert decode_payload(canonical(with_sun)).x["sun"] == bytes(24)
        assert decode_payload(canonical(with_answer)).x["nonce"] == bytes(16)
        both = {**base, 7: event_type, 10: {"via": via, "sun": bytes(24), **answer}}
        with pytest.raises(UnknownField):
            decode_payload(canonical(both))
    strange = {**base, 7: "unlock", 10: {"via": "badge", "pin": bytes(4)}}
    with pytest.raises(UnknownField, match="'pin' is not a field of unlock"):
        decode_payload(canonical(strange))
