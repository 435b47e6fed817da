"""The device MQTT client: a strict codec (CPython and the unix port agree), and the asyncio client
against a real Mosquitto and against a fake broker that misbehaves on purpose."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIRMWARE

sys.path.insert(0, str(FIRMWARE))
from device.link import mqtt_codec, mqtt_connect  # noqa: E402  (firmware, CPython)

sys.path.remove(str(FIRMWARE))

# MQTT 3.1.1 §2.2.1: the packet types parse_packet returns (private constants in the firmware)
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13


def decode_remaining_length(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """§2.2.3, the reading side (the device reads the length byte by byte off the socket):
    (length, offset after it), or None if more bytes are needed."""
    value = 0
    for index in range(4):
        if offset + index >= len(data):
            return None
        digit = data[offset + index]
        value |= (digit & 0x7F) << (7 * index)
        if not digit & 0x80:
            return value, offset + index + 1
    raise ValueError("remaining length longer than four bytes (§2.2.3)")


topics = st.text(
    alphabet=st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
).map(str.encode)


@settings(max_examples=300)
@given(
    topic=topics,
    payload=st.binary(max_size=300),
    qos=st.integers(0, 1),
    pid=st.integers(1, 0xFFFF),
    retain=st.booleans(),
    dup=st.booleans(),
)
def test_publish_round_trips(topic, payload, qos, pid, retain, dup):
    packet = mqtt_codec.publish_packet(topic, payload, qos, pid, retain, dup)
    length, start = decode_remaining_length(packet, 1)
    assert start + length == len(packet)
    parsed = mqtt_codec.parse_packet(packet[0], memoryview(packet)[start:])
    assert parsed == (
        PUBLISH,
        topic,
        payload,
        qos,
        pid if qos else 0,
        retain,
        dup and qos == 1,
    )


def test_publish_packet_exact_bytes():
    # §3.3: fixed header, remaining length, topic, packet id (QoS 1 only), payload
    assert mqtt_codec.publish_packet(b"a/b", b"xy", 1, 0x0102) == b"\x32\x09\x00\x03a/b\x01\x02xy"
    assert mqtt_codec.publish_packet("a/b", b"xy", 0, 0, True) == b"\x31\x07\x00\x03a/bxy"
    long = mqtt_codec.publish_packet(b"t", bytes(200), 1, 9, False, True)
    assert long[:8] == b"\x3a\xcd\x01\x00\x01t\x00\x09" and len(long) == 3 + 205


def test_connect_packet_exact_bytes():
    # §3.1: a persistent session (CleanSession 0), a retained QoS 1 will, user name and password
    packet = mqtt_connect.connect_packet("t1", 60, "u", "pw", (b"s", b"off", True, 1))
    flags = 0x80 | 0x40 | 0x20 | 1 << 3 | 0x04  # user, password, will retain, will QoS 1, will
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x3c"
    body += b"\x00\x02t1" + b"\x00\x01s" + b"\x00\x03off" + b"\x00\x01u" + b"\x00\x02pw"
    assert packet == bytes((0x10, len(body))) + body


@settings(max_examples=300)
@given(st.integers(0, 268435455))
def test_remaining_length_round_trips(length):
    encoded = mqtt_codec.encode_remaining_length(length)
    assert 1 <= len(encoded) <= 4
    assert decode_remaining_length(encoded) == (length, len(encoded))
    assert decode_remaining_length(encoded[:-1]) is None  # needs more bytes


@settings(max_examples=2000)
@given(first=st.integers(0, 255), body=st.binary(max_size=64))
def test_parser_raises_only_its_own_error(first, body):
    try:
        parsed = mqtt_codec.parse_packet(first, body)
    except mqtt_codec.MQTTProtocolError:
        return
    assert parsed[0] in (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP)


MALFORMED = [
    ("PUBACK with flags", 0x42, b"\x00\x01"),
    ("PUBACK too long", 0x40, b"\x00\x01\x00"),
    ("PUBACK packet id 0", 0x40, b"\x00\x00"),
    ("QoS 3", 0x36, b"\x00\x01a\x00\x01"),
    ("QoS 2, above the subscription's 1", 0x34, b"\x00\x01a\x00\x01"),
    ("DUP on QoS 0", 0x38, b"\x00\x01a"),
    ("topic past end", 0x32, b"\x00\x09ab"),
    ("wildcard topic", 0x32, b"\x00\x01#\x00\x01"),
    ("empty topic", 0x30, b"\x00\x00x"),
    ("NUL in topic", 0x30, b"\x00\x02a\x00"),
    ("topic not UTF-8", 0x30, b"\x00\x02\xff\xfex"),
    ("CONNACK reserved flag", 0x20, b"\x02\x00"),
    ("CONNACK reserved code", 0x20, b"\x00\x06"),
    ("SUBACK reserved code", 0x90, b"\x00\x01\x03"),
    ("SUBACK without codes", 0x90, b"\x00\x01"),
    ("PINGRESP with body", 0xD0, b"\x00"),
    ("CONNECT to a client", 0x10, b""),
    ("SUBSCRIBE to a client", 0x82, b"\x00\x01"),
    ("reserved type 0", 0x00, b""),
    ("reserved type 15", 0xF0, b""),
]


@pytest.mark.parametrize("name,first,body", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_packets_are_refused(name, first, body):
    with pytest.raises(mqtt_codec.MQTTProtocolError):
        mqtt_codec.parse_packet(first, body)


def test_codec_is_the_same_on_the_unix_port(micropython):
    packets = [
        mqtt_connect.connect_packet(
            "tag-0042",
            60,
            "tag-0042",
            "pw",
            (b"kvitto/v1/tag-0042/state", b"offline", 1, 1),
        ),
        mqtt_codec.publish_packet(b"kvitto/v1/tag-0042/evt", b"\xd2\x84" * 40, 1, 7, False, True),
        mqtt_connect.subscribe_packet(3, [(b"kvitto/v1/tag-0042/cmd", 1)]),
        mqtt_codec.encode_remaining_length(321),
    ]
    outcomes = []
    for _, first, body in MALFORMED:
        try:
            mqtt_codec.parse_packet(first, body)
            outcomes.append("ok")
        except mqtt_codec.MQTTProtocolError:
            outcomes.append("refused")
    script = f"""
from device.link import mqtt_codec, mqtt_connect
packets = [
    mqtt_connect.connect_packet("tag-0042", 60, "tag-0042", "pw",
                        (b"kvitto/v1/tag-0042/state", b"offline", 1, 1)),
    mqtt_codec.publish_packet(b"kvitto/v1/tag-0042/evt", b"\\xd2\\x84" * 40, 1, 7, False, True),
    mqtt_connect.subscribe_packet(3, [(b"kvitto/v1/tag-0042/cmd", 1)]),
    mqtt_codec.encode_remaining_length(321),
]
for p in packets:
    print(p.hex())
outcomes = []
for first, body in {[(f, b) for _, f, b in MALFORMED]!r}:
    try:
        mqtt_codec.parse_packet(first, body)
        outcomes.append("ok")
    except mqtt_codec.MQTTProtocolError:
        outcomes.append("refused")
print(",".join(outcomes))
"""
    lines = micropython(script).split()
    assert lines[:-1] == [p.hex() for p in packets]
    assert lines[-1] == ",".join(outcomes)
    assert set(outcomes) == {"refused"}


# ---- the client, under the unix port ---------------------------------------------------------

CLIENT_SCRIPT = """
import asyncio, sys, time
from device.link.mqtt import MQTTClient
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got = []
async def main():
    c = MQTTClient("tag-0042", host, port, keepalive=2, seed=1,
                   will=(b"kvitto/v1/tag-0042/state", b"offline"),
                   birth=(b"kvitto/v1/tag-0042/state", b"online"),
                   subscriptions=[(b"kvitto/v1/tag-0042/cmd", 1)],
                   on_message=lambda t, p, r: got.append(p))
    asyncio.create_task(c.run())
    await c.up.wait()
    for i in range(count):
        await c.publish(b"kvitto/v1/tag-0042/cmd", b"m%d" % i)   # loops back to us
    deadline = time.ticks_add(time.ticks_ms(), 5000)
    while len(got) < count and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(1200)   # a few keepalive pings
    print(len(got), got == [b"m%d" % i for i in range(count)], c.stats["pings"] >= 2,
          c.stats["connects"], c.stats["malformed"])
asyncio.run(main())
"""


def test_qos1_both_ways_against_mosquitto(micropython, mosquitto):
    out = micropython(CLIENT_SCRIPT, args=[mosquitto.host, str(mosquitto.port), "300"])
    assert out.split() == ["300", "True", "True", "1", "0"]


SIZES_SCRIPT = """
import asyncio, sys
from device.link.mqtt import MQTTClient
host, port = sys.argv[1], int(sys.argv[2])
sizes = [int(size) for size in sys.argv[3].split(",")]
got = []
async def main():
    c = MQTTClient("tag-0042", host, port, seed=1, subscriptions=[(b"kvitto/v1/tag-0042/cmd", 1)],
                   on_message=lambda t, p, r: got.append(p))
    asyncio.create_task(c.run())
    await c.up.wait()
    for size in sizes:
        await c.publish(b"kvitto/v1/tag-0042/cmd", bytes(i % 251 for i in range(size)))
    for _ in range(250):
        if len(got) == len(sizes):
            break
        await asyncio.sleep_ms(20)
    print([len(p) for p in got] == sizes, all(p == bytes(i % 251 for i in range(len(p))) for p in got),
          len(c._rxview), c.stats["connects"], c.stats["malformed"])
asyncio.run(main())
"""


def test_packets_longer_than_the_kept_buffer_arrive_whole(micropython, mosquitto):
    # The client keeps a 256-byte receive buffer; a longer packet (a long allowlist) up to the
    # 4 KiB limit gets a block of its own, and the small buffer serves the ones after it.
    sizes = "100,220,300,600,3500,40"
    out = micropython(SIZES_SCRIPT, args=[mosquitto.host, str(mosquitto.port), sizes])
    assert out.split() == ["True", "True", "256", "1", "0"]


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    first = conn.recv(1)
    if not first:
        raise ConnectionError("closed")
    length = 0
    shift = 0
    while True:
        digit = conn.recv(1)[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return first[0], body


class FakeBroker:
    """Accepts connections; connection i gets `bad[i]` right after its CONNACK (or behaves, when
    i is past the list); the first `reset_first` are reset after their 20th PUBACK; the first
    `silent_first` answer the SUBSCRIBE and then nothing."""

    def __init__(self, bad: list[bytes], silent_first: int = 0, reset_first: int = 0):
        self.bad = bad
        self.silent_first = silent_first
        self.reset_first = reset_first
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.published: list[bytes] = []
        self.dup_flags: list[bool] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._session, args=(conn, index), daemon=True).start()

    def _session(self, conn: socket.socket, index: int) -> None:
        try:
            kind, _ = _read_packet(conn)
            assert kind == 0x10
            conn.sendall(b"\x20\x02\x00\x00")
            if index < len(self.bad):
                conn.sendall(self.bad[index])
            acks = 0
            silent = index < self.silent_first  # swallow everything, answer nothing
            while True:
                kind, body = _read_packet(conn)
                if kind == 0x82:
                    conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                elif silent:
                    continue  # after the handshake: no PUBACK, no PINGRESP, nothing
                elif kind >> 4 == 3:
                    topic_end = 2 + int.from_bytes(body[:2], "big")
                    self.published.append(body[topic_end + 2 :])
                    self.dup_flags.append(bool(kind & 0x08))
                    conn.sendall(b"\x40\x02" + body[topic_end : topic_end + 2])
                    acks += 1
                    if index < self.reset_first and acks == 20:
                        # A PUBACK and then at once a reset, as from a broker killed with -9:
                        # the publisher, woken by the PUBACK, meets the dead socket first.
                        linger = struct.pack("ii", 1, 0)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        return
                elif kind == 0xC0:
                    conn.sendall(b"\xd0\x00")
        except (ConnectionError, OSError, IndexError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.server.close()


ROBUST_SCRIPT = """
import asyncio, sys, time
from device.link.mqtt import MQTTClient
port = int(sys.argv[1])
async def main():
    c = MQTTClient("tag-0042", "127.0.0.1", port, keepalive=1, seed=7, backoff_ms=(20, 200),
                   subscriptions=[(b"kvitto/v1/tag-0042/cmd", 1)])
    asyncio.create_task(c.run())
    await asyncio.wait_for_ms(c.publish(b"kvitto/v1/tag-0042/evt", b"after the storm"), 30000)
    print(c.stats["malformed"], c.stats["connects"], repr(c.last_error))
asyncio.run(main())
"""


def test_malformed_packets_close_the_connection_and_the_loop_goes_on(micropython):
    bad = [
        bytes([first]) + mqtt_codec.encode_remaining_length(len(body)) + body
        for _, first, body in MALFORMED
    ]
    bad.append(b"\x30\xff\xff\xff\xff\x01")  # remaining length of five bytes
    bad.append(b"\x30\xff\xff\x7f")  # 2 MB announced: above the device limit
    broker = FakeBroker(bad)
    try:
        out = micropython(ROBUST_SCRIPT, args=[str(broker.port)], timeout=60)
    finally:
        broker.close()
    malformed, connects = out.split()[:2]
    # Every bad packet ended its connection (the malformed CONNACKs among them before the
    # connection counted as up); the client reconnected each time and then delivered.
    assert int(malformed) == len(bad)
    assert broker.connections == len(bad) + 1
    # One publish, never given up: sent again with DUP on each new connection until a PUBACK.
    assert set(broker.published) == {b"after the storm"}
    assert broker.dup_flags[0] is False and all(broker.dup_flags[1:])
    assert int(connects) >= 1


def test_a_silent_broker_is_dropped_after_four_ping_intervals(micropython):
    broker = FakeBroker([], silent_first=1)
    started = time.monotonic()
    try:
        out = micropython(ROBUST_SCRIPT, args=[str(broker.port)], timeout=60)
    finally:
        broker.close()
    elapsed = time.monotonic() - started
    assert broker.connections == 2
    assert set(broker.published) == {b"after the storm"}
    assert "silent" in out  # last_error names the reason
    assert elapsed < 20


def test_backoff_is_jittered_exponential_and_bounded(micropython):
    out = micropython(
        """
from device.link.mqtt import MQTTClient
c = MQTTClient("tag-0042", "127.0.0.1", 1, backoff_ms=(100, 3000), seed=3)
print([[c._backoff(n) for n in range(1, 9)] for _ in range(20)])
"""
    )
    runs = json.loads(out)
    for run in runs:
        for attempt, delay in enumerate(run, start=1):
            cap = min(3000, 100 << (attempt - 1))
            assert cap // 2 <= delay <= cap
    assert len({tuple(run) for run in runs}) > 1  # jitter: not the same schedule every time


AUTH_SCRIPT = """
import asyncio, sys
from device.link.mqtt import MQTTClient
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
async def main():
    c = MQTTClient(user, "localhost", port, user=user, password=password, keepalive=5, seed=1,
                   backoff_ms=(50, 100))
    asyncio.create_task(c.run())
    try:
        await asyncio.wait_for_ms(c.publish(b"kvitto/v1/tag-0042/evt", b"hi"), 1500)
        print("delivered", c.stats["connects"], c.stats["dns"])
    except asyncio.TimeoutError:
        print("refused", c.stats["dns"], c.stats["connects"])
        print(c.last_error)
asyncio.run(main())
"""


def test_username_password_and_dns_resolved_once(micropython, mosquitto_factory, tmp_path):
    from kvitto.install.broker_config import password_hash

    passwords = tmp_path / "passwords"
    passwords.write_text(f"tag-0042:{password_hash('right-password')}\n")
    broker = mosquitto_factory(f"user root\npassword_file {passwords}\n")
    ok = micropython(AUTH_SCRIPT, args=[str(broker.port), "tag-0042", "right-password"])
    assert ok.split() == ["delivered", "1", "1"]
    # Wrong password: CONNACK 5 (§3.2.2.3) again and again, with backoff, and one DNS lookup.
    bad = micropython(AUTH_SCRIPT, args=[str(broker.port), "tag-0042", "wrong"])
    refused, error = bad.splitlines()
    assert refused.split() == ["refused", "1", "0"]
    assert error == "broker refused the connection: return code 5"


STREAM_SCRIPT = """
import asyncio, sys
from device.link.mqtt import MQTTClient
port = int(sys.argv[1])
async def main():
    c = MQTTClient("tag-0042", "127.0.0.1", port, keepalive=5, seed=7, backoff_ms=(20, 100))
    asyncio.create_task(c.run())
    for i in range(200):
        await asyncio.wait_for_ms(c.publish(b"kvitto/v1/tag-0042/evt", b"%d" % i), 20000)
    print(c.stats["connects"], c.stats["drops"])
asyncio.run(main())
"""


def test_publishing_into_a_reset_connection_waits_for_the_next_one(micropython):
    # Regression: a write that failed with EPIPE left `up` set, and Event.wait() on a set event
    # does not yield, so the publisher retried the dead socket forever at 100% CPU.
    broker = FakeBroker([], reset_first=5)
    try:
        out = micropython(STREAM_SCRIPT, args=[str(broker.port)], timeout=60)
    finally:
        broker.close()
    connects, drops = map(int, out.split())
    assert connects == 6 and drops == 5
    # In order, each at least once (a repeat is a DUP resend after a reset), none skipped.
    assert [int(p) for p in dict.fromkeys(broker.published)] == list(range(200))


OUT_OF_MEMORY_SCRIPT = """
import asyncio, sys
from device.link import mqtt, mqtt_connect
host, port = sys.argv[1], int(sys.argv[2])
real = mqtt_connect.connect_packet
failures = [1]
def connect_packet(*args):
    if failures[0]:  # the heap runs out while the first CONNECT is built
        failures[0] -= 1
        raise MemoryError("memory allocation failed, allocating 752 bytes")
    return real(*args)
mqtt_connect.connect_packet = connect_packet
async def main():
    c = mqtt.MQTTClient("tag-0042", host, port, seed=3, backoff_ms=(20, 200))
    task = asyncio.create_task(c.run())
    await asyncio.wait_for_ms(c.publish(b"kvitto/v1/tag-0042/evt", b"still here"), 20000)
    print(task.done(), c.stats["connects"], type(c.last_error).__name__)
    task.cancel()
asyncio.run(main())
"""


def test_running_out_of_memory_while_connecting_is_one_failed_attempt(micropython, mosquitto):
    # A MemoryError mid-connect (asyncio loading a submodule, a TLS buffer) used to end the
    # client's task: the link then waited for a connection that nobody made any more.
    out = micropython(OUT_OF_MEMORY_SCRIPT, args=[mosquitto.host, str(mosquitto.port)])
    assert out.split() == ["False", "1", "MemoryError"]
