"""MQTT 3.1.1's packets as this device sends and receives them: pure functions, no sockets (the
client is device.link.mqtt, the connect path device.link.mqtt_connect). Runs under CPython too.
Every packet from the broker goes through `parse_packet`, which raises `MQTTProtocolError` for
anything MQTT 3.1.1 does not allow, citing the clause.
"""

try:
    from micropython import const  # type: ignore
except ImportError:  # CPython runs the pure codec in tests

    def const(value):
        return value


# MQTT 3.1.1 §2.2.1: control packet types (parse_packet returns the number)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_PINGRESP = const(13)

_MAX_REMAINING = const(268435455)  # §2.2.3: four bytes of 7 bits


class MQTTError(Exception):
    """Anything that ends a connection: the client drops it and reconnects."""


class MQTTProtocolError(MQTTError):
    """A packet from the broker that MQTT 3.1.1 does not allow (cites the clause)."""


# ---- codec (pure) --------------------------------------------------------------------------


def encode_remaining_length(length):
    """§2.2.3: 7 bits per byte, least significant group first, top bit = more follows."""
    if length < 0 or length > _MAX_REMAINING:
        raise MQTTError("remaining length out of range (§2.2.3)")
    out = bytearray()
    while True:
        digit = length & 0x7F
        length >>= 7
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def string_field(value):
    if isinstance(value, str):
        value = value.encode()
    if len(value) > 0xFFFF:
        raise MQTTError("string longer than 65535 bytes (§1.5.3)")
    return len(value).to_bytes(2, "big") + value


def packet(first_byte, body):
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def publish_packet(topic, payload, qos=1, pid=0, retain=False, dup=False):
    """§3.3: DUP only with QoS > 0 (§3.3.1.1); a packet id only with QoS > 0 (§3.3.2.2)."""
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup and qos else 0)
    topic = string_field(topic)
    if qos and not 0 < pid <= 0xFFFF:
        raise MQTTError("packet id out of range (§2.3.1)")
    length = len(topic) + (2 if qos else 0) + len(payload)
    head = encode_remaining_length(length)
    # Built in place, in one block: concatenating would hold two more payload-sized copies at
    # once, the largest transient blocks while the link publishes.
    packet = bytearray(1 + len(head) + length)
    packet[0] = first
    at = 1 + len(head)
    packet[1:at] = head
    packet[at : at + len(topic)] = topic
    at += len(topic)
    if qos:
        packet[at] = pid >> 8
        packet[at + 1] = pid & 0xFF
        at += 2
    packet[at:] = payload
    return packet


def _pid(body, offset):
    pid = (body[offset] << 8) | body[offset + 1]
    if pid == 0:
        raise MQTTProtocolError("packet id out of range (§2.3.1)")
    return pid


def parse_packet(first_byte, body):
    """One packet a broker may send to this client (which subscribes with QoS 1 at most), as a
    tuple starting with its type.

    (2 CONNACK, session_present, return_code) · (3 PUBLISH, topic, payload, qos, pid, retain,
    dup) · (4 PUBACK, pid) · (9 SUBACK, pid, [codes]) · (13 PINGRESP,); MQTTProtocolError else.
    `body` may be a memoryview; topic and payload come back as new `bytes` (the caller owns them).
    """
    kind = first_byte >> 4
    flags = first_byte & 0x0F
    size = len(body)
    if kind == _PUBLISH:
        qos = (flags >> 1) & 0x03
        dup = bool(flags & 0x08)
        # §3.3.1.2: QoS 3 is reserved; §3.8.4: never above the subscription's QoS (1 here)
        if qos > 1:
            raise MQTTProtocolError("PUBLISH with QoS %d (§3.3.1.2, §3.8.4)" % qos)
        if qos == 0 and dup:
            raise MQTTProtocolError("DUP on a QoS 0 PUBLISH (§3.3.1.1)")
        # §3.3.2: the topic (two bytes of length first), then the packet id if QoS > 0
        topic_end = 2 + ((body[0] << 8) | body[1]) if size >= 2 else 3
        if topic_end + (2 if qos else 0) > size:
            raise MQTTProtocolError("PUBLISH too short (§3.3.2)")
        topic = bytes(body[2:topic_end])
        # §4.7.1: no wildcards in a PUBLISH topic; §1.5.3: UTF-8, no U+0000; §4.7.3: not empty
        if not topic:
            raise MQTTProtocolError("empty topic (§4.7.3)")
        for byte in b"+#\x00":
            if byte in topic:
                raise MQTTProtocolError("wildcard or NUL in a topic (§4.7.1, §1.5.3)")
        try:
            topic.decode()
        except UnicodeError:
            raise MQTTProtocolError("topic not UTF-8 (§1.5.3)")
        pid = 0
        if qos:
            pid = _pid(body, topic_end)
            topic_end += 2
        return (_PUBLISH, topic, bytes(body[topic_end:]), qos, pid, bool(flags & 0x01), dup)
    # §2.2.2: every other packet a broker sends has reserved flags 0000
    if flags:
        raise MQTTProtocolError("reserved flags on packet type %d (§2.2.2)" % kind)
    if kind not in (_CONNACK, _PUBACK, _SUBACK, _PINGRESP):
        raise MQTTProtocolError("packet type %d is not sent to clients (§2.2.1)" % kind)
    # Remaining length: CONNACK and PUBACK 2 (§3.2.1, §3.4.1), PINGRESP 0 (§3.13.1), SUBACK a
    # packet id and at least one return code (§3.9.3)
    if kind == _SUBACK:
        wrong_size = size < 3
    else:
        wrong_size = size != (0 if kind == _PINGRESP else 2)
    if wrong_size:
        raise MQTTProtocolError("packet type %d of %d bytes (§3)" % (kind, size))
    if kind == _PINGRESP:
        return (_PINGRESP,)
    if kind == _PUBACK:
        return (_PUBACK, _pid(body, 0))
    # Return codes: CONNACK 0-5 (§3.2.2.3), SUBACK 0-2 or 0x80 (§3.9.3)
    codes = list(body[1:] if kind == _CONNACK else body[2:])
    allowed = (0, 1, 2, 3, 4, 5) if kind == _CONNACK else (0, 1, 2, 0x80)
    for code in codes:
        if code not in allowed:
            raise MQTTProtocolError("reserved return code %d (§3.2.2.3, §3.9.3)" % code)
    if kind == _CONNACK:
        if body[0] & 0xFE:
            raise MQTTProtocolError("CONNACK flags bits 7-1 set (§3.2.2.1)")
        return (_CONNACK, bool(body[0] & 1), body[1])
    return (_SUBACK, _pid(body, 0), codes)
