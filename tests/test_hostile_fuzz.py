"""Fuzz (fixed seed, bounded): the collector's message handler under validly signed events whose
fields take extreme values — integers at and beyond 2^63 and 2^64, negative ones, huge strings,
deep maps and lists, wrong types, odd state messages. The handler never raises; every message is
stored, a duplicate or quarantined; a genuine event in the same batch is stored (issue #25)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cbor2
from collect_support import FakeDevice
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from kvitto.collect.collector import Collector
from kvitto.collect.intake import Inbound, verify_batch
from kvitto.store.db import open_store
from kvitto.store.registry import Registry

ATTACKER = FakeDevice("tag-0666")  # registered: its signatures verify
GENUINE = FakeDevice("tag-0042")
GENUINE_EVENTS = GENUINE.events(3)
TOPIC = "kvitto/v1/tag-0666/evt"

EXTREME_INTS = [
    0, 1, -1, 23, 24, 2**31, 2**32, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    2**80, -(2**63), -(2**63) - 1, -(2**64), -(2**64) - 1, -(2**90),
]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(EXTREME_INTS),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(["x" * 5000, b"\x00" * 5000, "arrive", "tag-0666", "tag-0042", bytes(32)]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-2, 12)), inner, max_size=4)
    ),
    max_leaves=12,
)
DEEP = b"\x81" * 3000 + b"\x00"  # a list nested 3000 deep
PLACEHOLDER = "\u2603deep\u2603"


def valid_fields(seq: int) -> dict[Any, Any]:
    return {0: 1, 1: "tag-0666", 2: seq, 3: 1, 4: 5, 5: 1790000000, 6: 30, 7: "door_open",
            9: bytes(32)}  # fmt: skip


@st.composite
def hostile_payloads(draw) -> bytes:
    fields = valid_fields(draw(st.sampled_from([1, 2, 9, 2**63 - 1])))
    for key in draw(st.lists(st.integers(0, 12), max_size=4, unique=True)):
        fields[key] = draw(values)
    if draw(st.booleans()):
        fields[draw(values.filter(lambda v: isinstance(v, (int, str, bytes))))] = draw(values)
    deep = draw(st.booleans()) and draw(st.integers(0, 3)) == 0
    if deep:
        fields[10] = PLACEHOLDER
    try:
        payload = cbor2.dumps(fields, canonical=draw(st.booleans()))
    except Exception:  # a key cbor2 cannot order or encode: send the valid form instead
        payload = cbor2.dumps(valid_fields(3), canonical=True)
    if deep:
        payload = payload.replace(cbor2.dumps(PLACEHOLDER), DEEP)
    if draw(st.integers(0, 9)) == 0:
        payload = draw(st.sampled_from([DEEP, b"\xa1" * 2000 + b"\x00", b"", b"\xff", b"\x1b"]))
    return payload


def state_messages() -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from([b"online", b"offline"]), st.binary(max_size=300))


@seed(25)
@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    payloads=st.lists(hostile_payloads(), min_size=1, max_size=5),
    states=st.lists(state_messages(), max_size=2),
)
def test_the_handler_never_raises_on_validly_signed_extremes(payloads, states):
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{Path(folder)}/kvitto.db")
        registry = Registry(store)
        registry.add_customer("c-1001")
        for device in (ATTACKER, GENUINE):
            registry.add_device(device.device_id, "c-1001", "tag", device.public_key)
        collector = Collector(store, "mqtt://unused", None)
        hostile = [Inbound(ATTACKER.sign(p), TOPIC, "tag-0666", 1) for p in payloads]
        genuine = [Inbound(m, "kvitto/v1/tag-0042/evt", "tag-0042", 1) for m in GENUINE_EVENTS]
        odd = [Inbound(s, "kvitto/v1/tag-0666/state", "tag-0666", 1) for s in states]
        for batch in (hostile + genuine + odd, hostile):  # and once more: repeats
            events = [i for i in batch if i.source.endswith("/evt")]
            keys = collector.intake.keys(["tag-0666", "tag-0042"])
            results = verify_batch([(i.message, i.topic_device) for i in events], keys)
            collector._store(batch, results)
        stats = collector.stats()
        assert stats.received == 2 * len(hostile) + len(genuine)
        assert [row[1] for row in store.events("tag-0042")] == [1, 2, 3]
        # Each hostile message once: stored, a duplicate, or quarantined whole.
        stored = store.event_count("tag-0666")
        quarantined = [r for r in store.quarantined() if r[0] == TOPIC]
        assert stats.stored == stored + len(genuine)
        assert stored + stats.duplicates + len(quarantined) == 2 * len(hostile)
        assert {r[4] for r in quarantined} <= {i.message for i in hostile}
        store.close()
