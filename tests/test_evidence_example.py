"""The independent encoder's bundle (shared/examples) verifies with the host evidence module."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kvitto.evidence.cose import BadSignature, read_messages
from kvitto.evidence.events import verify_event

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"
PUBLIC_KEY = bytes.fromhex("940d1ce7eabbe787882766a24cfe6464ce247965068db77ebc6f393d7562d94b")


@pytest.fixture
def example() -> Path:
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    return EXAMPLE


def test_example_events_verify_and_chain(example):
    events = [verify_event(m, PUBLIC_KEY) for _, m in read_messages(example / "evidence.cbor-seq")]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.type for e in events][:2] == ["boot", "clock_sync"]
    assert events[0].prev == bytes(32)
    for before, after in zip(events, events[1:]):
        assert after.prev == hashlib.sha256(before.payload).digest()


def test_example_rejects_a_flipped_bit(example):
    _, message = next(read_messages(example / "evidence.cbor-seq"))
    broken = bytearray(message)
    broken[-1] ^= 1
    with pytest.raises(BadSignature):
        verify_event(bytes(broken), PUBLIC_KEY)
