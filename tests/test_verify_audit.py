"""The offline audit's worker processes (issue #21, kvitto.verify.audit):

- chunks whose Events are larger than a pipe holds come back whole and in order on two
  processes (each worker's send of a result and the parent's send of the next chunk must not
  wait on each other), the same Events as one process;
- a caller that stops reading early leaves no worker process behind;
- an error raised while a worker checks a chunk is raised to the caller, as on one process.

The bench's signed bundle (bench/verify.py) is the input; a forged, an unreadable and a repeated
message among the good ones are in tests/test_verify_month.py.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from verify_support import bench_verify

import kvitto.verify.audit
from kvitto.evidence.cose import read_messages
from kvitto.verify.audit import verified_events


def _bundle(tmp_path: Path, events: int) -> tuple[list[bytes], dict[str, bytes]]:
    registry, (path,) = bench_verify().signed_bundle(tmp_path, events)
    keys = {device.id: device.public_key for device in registry.devices.values()}
    return [message for _, message in read_messages(path)], keys


def test_chunks_larger_than_a_pipe_holds_come_back_in_order(tmp_path, monkeypatch):
    messages, keys = _bundle(tmp_path, 3000)
    # 600 messages: ~110 kB sent, ~150 kB of Events back; a pipe holds 64 kB
    monkeypatch.setattr(kvitto.verify.audit, "CHUNK", 600)
    one = list(verified_events(messages, keys, jobs=1))
    two = list(verified_events(messages, keys, jobs=2))
    assert [message for message, _ in two] == messages
    assert all(event is not None for _, event in two)
    assert two == one


def test_a_caller_that_stops_early_leaves_no_worker(tmp_path, monkeypatch):
    messages, keys = _bundle(tmp_path, 500)
    monkeypatch.setattr(kvitto.verify.audit, "CHUNK", 50)
    events = verified_events(messages, keys, jobs=2)
    taken = [next(events) for _ in range(60)]
    assert [message for message, _ in taken] == messages[:60]
    assert multiprocessing.active_children()
    events.close()
    assert not multiprocessing.active_children()


def test_an_error_in_a_worker_is_raised_to_the_caller(tmp_path, monkeypatch):
    messages, keys = _bundle(tmp_path, 500)
    monkeypatch.setattr(kvitto.verify.audit, "CHUNK", 50)
    broken = messages[321]
    real = kvitto.verify.audit.EventVerifier.event

    def event(self, message):  # a fault the fused check does not expect (forked: inherited)
        if message == broken:
            raise ValueError("the checker broke on message 321")
        return real(self, message)

    monkeypatch.setattr(kvitto.verify.audit.EventVerifier, "event", event)
    for jobs in (1, 2):
        taken = []
        with pytest.raises(ValueError, match="message 321"):
            for message, _ in verified_events(messages, keys, jobs=jobs):
                taken.append(message)
        # in order, up to the broken one (jobs=1) or its chunk (jobs=2)
        assert taken == messages[: {1: 321, 2: 300}[jobs]]
    assert not multiprocessing.active_children()
