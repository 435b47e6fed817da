"""The collector against a real Mosquitto: verify, store once, ack, resend, quarantine."""

from __future__ import annotations

import random

import pytest
from collect_support import ORG_SEED, FakeDevice, wait_for

from kvitto.collect.collector import Collector, _puback
from kvitto.store.db import open_store
from kvitto.store.registry import Registry


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    yield store
    store.close()


@pytest.fixture
def registry(store):
    registry = Registry(store)
    registry.add_customer("c-1001")
    return registry


@pytest.fixture
def devices(registry, mosquitto):
    made: list[FakeDevice] = []

    def make(device_id: str = "tag-0042", register: bool = True) -> FakeDevice:
        device = FakeDevice(device_id)
        if register:
            registry.add_device(device_id, "c-1001", "tag", device.public_key, "2026-09-01")
        made.append(device.connect(mosquitto.host, mosquitto.port))
        return device

    yield make
    for device in made:
        device.disconnect()


@pytest.fixture
def collector_factory(store, mosquitto):
    running: list[Collector] = []

    def start(**options) -> Collector:
        options.setdefault("gap_grace", 0.3)
        options.setdefault("resend_interval", 1.0)
        collector = Collector(open_store(store.url), mosquitto.url, ORG_SEED, **options)
        collector.start()
        collector.wait_ready()
        running.append(collector)
        return collector

    yield start
    for collector in running:
        collector.stop()
        collector.store.close()


def stored_seqs(store, device="tag-0042"):
    return [row[1] for row in store.events(device)]


def chains(store, device="tag-0042"):
    return [row[5] for row in store.events(device)]


def test_events_are_verified_stored_chained_and_acknowledged(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    device.events(20)
    device.publish_seqs(range(1, 21))
    wait_for(lambda: device.acked_upto == 20, what="ack upto 20")
    assert stored_seqs(store) == list(range(1, 21))
    assert chains(store) == [1] * 20
    assert collector.stats().stored == 20 and collector.stats().rejected == 0
    assert store.quarantined() == []
    received = store.events("tag-0042")[0][4]
    assert received > 1_700_000_000_000  # receive time kept per event, in ms (RULES.md I5)


def test_duplicates_are_stored_once_and_re_acknowledged(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    device.events(10)
    device.publish_seqs(range(1, 11))
    wait_for(lambda: device.acked_upto == 10, what="first ack")
    acks_before = len(device.command_seqs)
    device.publish_seqs([3, 3, 7, 1, 10])  # a device that missed our ack resends
    wait_for(lambda: collector.stats().duplicates == 5, what="duplicates counted")
    assert stored_seqs(store) == list(range(1, 11))
    wait_for(lambda: len(device.command_seqs) > acks_before, what="ack repeated")
    assert device.acked_upto == 10


def test_out_of_order_delivery_completes_the_chain(store, devices, collector_factory):
    device = devices()
    collector_factory(gap_grace=30)  # no resend: the stragglers come by themselves
    device.events(30)
    order = list(range(1, 31))
    random.Random(9).shuffle(order)
    device.publish_seqs(order)
    wait_for(lambda: device.acked_upto == 30, what="ack upto 30")
    assert stored_seqs(store) == list(range(1, 31))
    assert chains(store) == [1] * 30  # each link checked whichever side arrived first
    assert device.resends == []


def test_a_gap_is_closed_by_a_resend(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    device.events(20)
    device.publish_seqs([s for s in range(1, 21) if s not in (5, 6, 7, 15)])
    wait_for(lambda: device.acked_upto == 20, what="ack after resends")
    assert (5, 7) in device.resends and (15, 15) in device.resends
    assert stored_seqs(store) == list(range(1, 21))
    assert chains(store) == [1] * 20
    assert collector.stats().gaps_open == 0
    assert collector.stats().resends_sent >= 2


def test_an_unanswered_gap_stays_open_and_the_ack_stops_below_it(
    store, devices, collector_factory
):
    device = devices()
    device.answer_resends = False
    collector = collector_factory()
    device.events(6)
    device.publish_seqs([1, 2, 4, 5, 6])
    wait_for(lambda: len(device.resends) >= 2, what="resend asked again")
    assert set(device.resends) == {(3, 3)}
    assert device.acked_upto == 2  # the journal keeps seq 3 onwards
    assert collector.stats().gaps_open == 1


def test_bad_signatures_are_quarantined_not_stored(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    good = device.events(3)
    broken = bytearray(good[1])
    broken[-1] ^= 1
    device.publish(good[0])
    device.publish(bytes(broken))
    device.publish(b"\xa1not cbor at all", wait=True)
    wait_for(lambda: collector.stats().rejected == 2, what="rejects counted")
    device.publish(good[1])
    device.publish(good[2], wait=True)
    wait_for(lambda: device.acked_upto == 3, what="ack 3")
    reasons = [(source, reason.split(":")[0], message) for source, _, _, reason, message in
               store.quarantined()]  # fmt: skip
    assert reasons == [
        ("kvitto/v1/tag-0042/evt", "bad-signature", bytes(broken)),
        ("kvitto/v1/tag-0042/evt", "malformed", b"\xa1not cbor at all"),
    ]
    assert stored_seqs(store) == [1, 2, 3]
    assert collector.stats().reasons == {"bad-signature": 1, "malformed": 1}


def test_unknown_devices_and_foreign_topics_are_quarantined(
    store, devices, collector_factory, mosquitto
):
    known = devices("tag-0042")
    stranger = devices("tag-0666", register=False)
    collector = collector_factory()
    stranger.publish(stranger.next_event(), wait=True)
    # A registered device's event on another device's topic is not that device's evidence.
    assert known.client is not None
    known.client.publish("kvitto/v1/tag-0666/evt", known.next_event(), qos=1).wait_for_publish()
    wait_for(lambda: collector.stats().rejected == 2, what="two rejects")
    reasons = sorted(reason.split(":")[0] for _, _, _, reason, _ in store.quarantined())
    assert reasons == ["topic-mismatch", "unknown-device"]
    assert store.event_count() == 0
    assert stranger.command_seqs == []  # nobody acknowledges an unknown device


def test_a_revoked_device_counts_only_before_its_revocation(
    store, registry, devices, collector_factory
):
    device = devices()
    collector = collector_factory()
    device.events(8)
    device.publish_seqs(range(1, 5))
    wait_for(lambda: collector.stats().stored == 4, what="the events before the revocation")
    # Device times 1790000000 + seq: revoked at 1790000005, so seq 5 onwards is refused (and
    # is beyond #4, the last the device had reached when it was revoked).
    registry.revoke_device("tag-0042", "2026-09-21T14:13:25+00:00")
    collector.intake.reload_keys()
    device.publish_seqs(range(1, 9))
    wait_for(lambda: collector.stats().received == 12, what="all received")
    assert stored_seqs(store) == [1, 2, 3, 4]
    rejected = [(seq, reason.split(":")[0]) for _, _, seq, reason, _ in store.quarantined()]
    assert rejected == [(5, "revoked"), (6, "revoked"), (7, "revoked"), (8, "revoked")]


def test_a_conflicting_event_with_a_used_seq_is_quarantined(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    first = device.next_event("arrive")
    device.publish(first, wait=True)
    wait_for(lambda: collector.stats().stored == 1, what="first stored")
    device.seq, device.prev = 0, bytes(32)  # a cloned or reset device reuses seq 1
    other = device.next_event("depart")
    device.publish(other, wait=True)
    wait_for(lambda: collector.stats().rejected == 1, what="conflict quarantined")
    assert [row[6] for row in store.events()] == [first]
    assert store.quarantined()[0][3].startswith("conflict:")
    assert store.quarantined()[0][4] == other


def test_a_broken_chain_is_stored_and_flagged(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    device.events(2)
    device.prev = bytes(32)  # the device "forgot" event 2
    device.events(1)
    device.publish_seqs([1, 2, 3])
    wait_for(lambda: device.acked_upto == 3, what="ack 3")
    assert chains(store) == [1, 1, 0]
    assert collector.stats().chain_broken == 1


def test_device_state_follows_the_state_topic(store, devices, collector_factory):
    device = devices()
    collector = collector_factory()
    wait_for(lambda: store.device_states().get("tag-0042") == "online", what="online")
    assert collector.stats().devices_online == 1
    assert device.client is not None
    device.client.publish("kvitto/v1/tag-0042/state", b"offline", qos=1, retain=True)
    wait_for(lambda: store.device_states().get("tag-0042") == "offline", what="offline")
    assert collector.stats().devices_online == 0


def test_verification_in_worker_processes_gives_the_same_result(store, devices, collector_factory):
    device = devices()
    collector = collector_factory(workers=2, inline_below=1)  # every batch to the workers
    messages = device.events(300)
    broken = bytearray(messages[99])
    broken[-1] ^= 1
    assert device.client is not None
    device.client.publish("kvitto/v1/tag-0042/evt", bytes(broken), qos=1)
    device.publish_seqs([*range(1, 301), *range(1, 51)])
    wait_for(lambda: device.acked_upto == 300, what="ack 300")
    wait_for(lambda: collector.stats().duplicates == 50, what="duplicates")
    assert stored_seqs(store) == list(range(1, 301))
    assert chains(store) == [1] * 300
    assert [reason.split(":")[0] for _, _, _, reason, _ in store.quarantined()] == [
        "bad-signature"
    ]


def test_the_pubacks_of_a_batch_are_queued_as_one_write_or_one_by_one():
    class Paho:
        def __init__(self):
            self.queued: list[bytes] = []

        def _packet_queue(self, command, packet, mid, qos):
            self.queued.append(packet)

    paho = Paho()
    _puback(paho, [1, 2, 0x1234])
    assert paho.queued == [bytes.fromhex("400200014002000240021234")]

    class Other:
        def __init__(self):
            self.acked: list[tuple[int, int]] = []

        def ack(self, mid, qos):
            self.acked.append((mid, qos))

    other = Other()
    _puback(other, [7, 8])
    assert other.acked == [(7, 1), (8, 1)]
