"""Asyncio MQTT 3.1.1 client for the door device: QoS 1, persistent session, reconnect, TLS.

    client = MQTTClient("tag-0042", "broker.lan", 1883, will=(b"kvitto/v1/tag-0042/state", b"offline"))
    asyncio.create_task(client.run())                          # keeps the connection, forever
    await client.publish(b"kvitto/v1/tag-0042/evt", message)  # waits through outages for PUBACK

mqtt_as-style (Peter Hinch) but loadable on the unix port: it never imports `network`; sockets
come from `socket`/`ssl`, so the same code runs on the ESP32 and in CI. It waits on the socket
through asyncio's own I/O queue, as asyncio.Stream does, without loading that module or keeping
a Stream per connection. The packet codec at the top is pure (runs under CPython too); every
packet from the broker goes through `parse_packet`, which raises `MQTTProtocolError` for
anything MQTT 3.1.1 does not allow. A malformed packet closes the connection (the client
reconnects); it never ends the loop.
"""

import asyncio
import random
import select
import socket
import time

try:
    from micropython import const  # type: ignore
except ImportError:  # CPython runs the pure codec in tests

    def const(value):
        return value


# MQTT 3.1.1 §2.2.1: control packet types (parse_packet returns the number)
_CONNECT = const(1)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBSCRIBE = const(8)
_SUBACK = const(9)
_PINGRESP = const(13)

_MAX_REMAINING = const(268435455)  # §2.2.3: four bytes of 7 bits
_MAX_PACKET = const(4096)  # what this device accepts; commands are ~200 bytes
_RX_BYTES = const(256)  # the receive buffer kept: acks (~150 bytes), time, config, ~6 creds fit
_CONNECT_TIMEOUT_MS = const(5000)
_WRITE_TIMEOUT_MS = const(5000)


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


def _string(value):
    if isinstance(value, str):
        value = value.encode()
    if len(value) > 0xFFFF:
        raise MQTTError("string longer than 65535 bytes (§1.5.3)")
    return len(value).to_bytes(2, "big") + value


def _packet(first_byte, body):
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def connect_packet(client_id, keepalive, user=None, password=None, will=None):
    """§3.1, persistent session (CleanSession 0); `will` = (topic, message, retain, qos)."""
    flags = 0
    payload = _string(client_id)
    if will is not None:
        topic, message, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if user is not None:
        flags |= 0x80
        payload += _string(user)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    if not 0 <= keepalive <= 0xFFFF:
        raise MQTTError("keepalive out of range")
    header = b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big")
    return _packet(_CONNECT << 4, header + payload)


def publish_packet(topic, payload, qos=1, pid=0, retain=False, dup=False):
    """§3.3: DUP only with QoS > 0 (§3.3.1.1); a packet id only with QoS > 0 (§3.3.2.2)."""
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup and qos else 0)
    topic = _string(topic)
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


def subscribe_packet(pid, topics):
    """§3.8: fixed-header flags 0010; `topics` = [(topic, qos), …]."""
    body = pid.to_bytes(2, "big")
    for topic, qos in topics:
        body += _string(topic) + bytes((qos,))
    return _packet(_SUBSCRIBE << 4 | 0x02, body)


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


# ---- the client (asyncio) ------------------------------------------------------------------


def _readable(sock):
    # Awaitable (a generator, as asyncio.Stream.readinto is): the loop resumes the task once
    # `sock` can be read; asyncio.core._io_queue is the queue every Stream waits on.
    yield asyncio.core._io_queue.queue_read(sock)  # type: ignore  (MicroPython's asyncio)


def _write_rest(sock, packet, sent):
    # asyncio.Stream.drain without the Stream: wait until `sock` takes more, write, repeat
    view = memoryview(packet)
    while sent < len(view):
        yield asyncio.core._io_queue.queue_write(sock)  # type: ignore  (MicroPython's asyncio)
        count = sock.write(view[sent:])
        if count is not None:  # None: the socket took nothing this time
            sent += count


class MQTTClient:
    """Keeps one broker connection alive and carries QoS 1 both ways.

    `on_message(topic, payload, retained)` is called from the reader for every PUBLISH the
    broker sends; it must be quick (queue the work) because the PUBACK waits for it.
    """

    def __init__(
        self,
        client_id,
        server,
        port=1883,
        user=None,
        password=None,
        keepalive=60,
        will=None,
        birth=None,
        subscriptions=(),
        on_message=None,
        ssl_context=None,
        backoff_ms=(250, 30000),
        seed=None,
    ):
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = None if will is None else (will[0], will[1], True, 1)  # retained, QoS 1
        self.birth = birth  # (topic, message): published retained after every connect
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.ssl_context = ssl_context
        self.backoff_ms = backoff_ms
        # mqtt_as: ping at keepalive/4; broker dead after 4 silent intervals (_keepalive)
        self._ping_ms = max(100, keepalive * 1000 // 4)
        self._addr = None  # DNS resolved once (mqtt_as): a flaky resolver must not stall us
        self._sock = None  # the (TLS-wrapped) socket; only _connect writes to it before `up`
        self._reader = None
        # Allocated once, small: a 4 KiB block for the rare long allowlist would be the largest
        # the device keeps, and a hard one to find in a fragmented heap; such a packet gets a
        # block of its own size when it comes. parse_packet copies out.
        self._rxview = memoryview(bytearray(_RX_BYTES))
        self._wlock = asyncio.Lock()
        self._down = asyncio.Event()
        self._pending = {}  # pid -> [Event, acked]
        self._next_pid = 0
        self._last_rx = time.ticks_ms()
        self.up = asyncio.Event()  # set while connected and subscribed
        self.on_connect = None  # called (no arguments) after every successful connect
        self.connected = False
        self.last_error = None
        self.stats = {
            "connects": 0,
            "drops": 0,
            "malformed": 0,
            "pings": 0,
            "dns": 0,
        }
        if seed is not None:
            random.seed(seed)

    # -- public API --

    async def run(self):
        """Connect, serve, reconnect with jittered exponential backoff, until cancelled."""
        attempts = 0
        try:
            while True:
                try:
                    await self._connect()
                    attempts = 0
                    # Until the connection is lost, with `_keepalive` beside it. A task that
                    # sleeps costs a fraction of a wait_for with a timeout on `_down`, which a
                    # connection would hold all its life: the peak heap is during a connection.
                    ended = []  # why _keepalive ended the connection, if it did
                    keepalive = asyncio.create_task(self._keepalive(ended))
                    try:
                        await self._down.wait()
                    finally:
                        keepalive.cancel()
                    raise ended[0] if ended else MQTTError("connection lost")  # -> last_error
                except MQTTProtocolError as error:
                    self.stats["malformed"] += 1
                    self.last_error = error
                except (OSError, MQTTError, asyncio.TimeoutError, MemoryError) as error:
                    # out of memory mid-connect (a lazy import, a TLS buffer): a failed attempt
                    # like any other, or this task would end and the link wait for ever
                    self.last_error = error
                self._drop()
                attempts += 1
                await asyncio.sleep_ms(self._backoff(attempts))
        finally:
            self._drop()  # cancelled: close the socket, wake every publisher

    async def publish(self, topic, payload, retain=False, qos=1):
        """Send; with QoS 1 return only after the PUBACK, waiting through any outage.

        Never cancelled half-way (mqtt_as): after a reconnect the same packet id goes again
        with DUP set (§4.4: a client resends unacknowledged PUBLISH packets on reconnect).
        """
        if qos == 0:
            await self.up.wait()
            await self._send(publish_packet(topic, payload, 0))
            return
        pid = self._new_pid()
        slot = [asyncio.Event(), False]
        self._pending[pid] = slot
        dup = False
        try:
            while True:
                await self.up.wait()
                try:
                    await self._send(publish_packet(topic, payload, 1, pid, retain, dup))
                except (OSError, MQTTError, asyncio.TimeoutError):
                    await asyncio.sleep_ms(0)  # never spin: let run() reconnect
                else:
                    await slot[0].wait()  # PUBACK, or a drop (which sets every slot)
                if slot[1]:
                    return
                slot[0].clear()
                dup = True
        finally:
            self._pending.pop(pid, None)

    # -- connection --

    def _backoff(self, attempts):
        low, high = self.backoff_ms
        delay = min(high, low << min(attempts - 1, 16))
        half = delay // 2
        return half + random.getrandbits(20) % (half + 1)  # jitter: no herd after a broker crash

    async def _connect(self):
        if self._addr is None:
            self._addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
            self.stats["dns"] += 1
        sock = socket.socket(self._addr[0], socket.SOCK_STREAM)
        self._sock = sock
        sock.setblocking(False)
        try:
            sock.connect(self._addr[-1])
        except OSError as error:
            if error.args[0] not in (115, 119):  # EINPROGRESS (Linux, lwIP)
                raise
        poller = select.poll()  # connected once writable (a non-blocking connect)
        poller.register(sock, select.POLLOUT)
        start = time.ticks_ms()
        while True:
            ready = poller.poll(0)
            events = ready[0][1] if ready else 0
            if events & (select.POLLERR | select.POLLHUP):
                raise OSError(111)  # ECONNREFUSED or reset while connecting
            if events & select.POLLOUT:
                break
            if time.ticks_diff(time.ticks_ms(), start) > _CONNECT_TIMEOUT_MS:
                raise OSError(110)  # ETIMEDOUT
            await asyncio.sleep_ms(5)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_hostname=self.server, do_handshake_on_connect=False
            )
            sock.setblocking(False)
            self._sock = sock
        self._down = asyncio.Event()
        self._last_rx = time.ticks_ms()
        await self._send(
            connect_packet(
                self.client_id, self.keepalive, self.user, self.password, self.will
            )
        )
        packet = await asyncio.wait_for_ms(self._read_packet(), _CONNECT_TIMEOUT_MS)
        if packet[0] != _CONNACK:
            raise MQTTProtocolError("CONNACK not first or not once (§3.2)")
        if packet[2]:  # §3.2.2.3: bad credentials, unknown id, …
            raise MQTTError("broker refused the connection: return code %d" % packet[2])
        self._reader = asyncio.create_task(self._read_loop())
        if self.subscriptions:
            # Resubscribe on every connect (mqtt_as): a broker that lost its state forgets us.
            pid = self._new_pid()
            codes = await self._request(subscribe_packet(pid, self.subscriptions), pid)
            for code in codes or ():
                if code == 0x80:
                    raise MQTTError("broker refused the subscription (ACL?)")
        if self.birth is not None:
            pid = self._new_pid()
            await self._request(publish_packet(self.birth[0], self.birth[1], 1, pid, True), pid)
        self.connected = True
        self.stats["connects"] += 1
        self.up.set()
        if self.on_connect is not None:
            self.on_connect()

    async def _request(self, packet, pid):
        """Send a packet and wait for the acknowledgement with the same packet id."""
        slot = [asyncio.Event(), False]
        self._pending[pid] = slot
        try:
            await self._send(packet)
            await asyncio.wait_for_ms(slot[0].wait(), _CONNECT_TIMEOUT_MS)
            if not slot[1]:
                raise MQTTError("connection lost")  # before the acknowledgement
            return slot[2] if len(slot) > 2 else None
        finally:
            self._pending.pop(pid, None)

    async def _keepalive(self, ended):
        """PINGREQ every keepalive/4; give up after four silent intervals (mqtt_as)."""
        last_ping = time.ticks_ms()
        try:
            while True:
                await asyncio.sleep_ms(self._ping_ms // 2)
                now = time.ticks_ms()
                if time.ticks_diff(now, self._last_rx) >= 4 * self._ping_ms:
                    raise MQTTError("broker silent for four ping intervals")
                if time.ticks_diff(now, last_ping) >= self._ping_ms:
                    last_ping = now
                    self.stats["pings"] += 1
                    await self._send(b"\xc0\x00")  # PINGREQ: type 12, no body (§3.12)
        except Exception as error:  # run() raises it as its own and drops the connection
            ended.append(error)
            self._drop()

    def _drop(self):
        # The connection is gone: publishers must wait now. `up` stays set otherwise until run()
        # gets a turn, and Event.wait() on a set event does not yield, so a publisher would
        # retry the dead socket in a loop that never lets run() in (seen: EPIPE, 100% CPU).
        # Called again by run() after a task found the connection dead: the second call finds
        # nothing left to do.
        if self.connected:
            self.stats["drops"] += 1
        self.connected = False
        self.up.clear()
        self._down.set()
        for slot in self._pending.values():
            slot[0].set()  # wake every waiter; unacknowledged ones resend after reconnect
        if self._reader is not None:
            if self._reader is not asyncio.current_task():
                self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    async def _send(self, packet):
        sock = self._sock
        if sock is None:
            raise MQTTError("not connected")
        async with self._wlock:
            try:
                # as asyncio.Stream.write + drain: what the socket takes now, the rest when it
                # is writable again, within the write timeout; a whole packet costs no task
                sent = sock.write(packet) or 0
                if sent < len(packet):
                    await asyncio.wait_for_ms(_write_rest(sock, packet, sent), _WRITE_TIMEOUT_MS)
                else:
                    await asyncio.sleep_ms(0)  # as drain does: other tasks run between packets
            except (OSError, asyncio.TimeoutError) as error:
                self.last_error = error
                self._drop()
                raise MQTTError("write failed")

    # -- reading --

    async def _read_into(self, view):
        # `view` is a memoryview: slicing it does not copy, so readinto fills our buffer
        sock = self._sock
        if sock is None:
            raise MQTTError("not connected")
        got = 0
        while got < len(view):
            await _readable(sock)  # type: ignore  (a generator the loop drives, as Stream's)
            count = sock.readinto(view[got:])
            if count is None:  # TLS wants more records
                continue
            if count == 0:
                raise MQTTError("broker closed the connection")
            got += count

    async def _read_packet(self):
        # The fixed header byte by byte through the buffer's first byte: the body comes after.
        head = self._rxview[:1]
        await self._read_into(head)
        first = head[0]
        length = 0
        shift = 0
        for _ in range(4):
            await self._read_into(head)
            digit = head[0]
            length |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        else:
            raise MQTTProtocolError("remaining length out of range (§2.2.3)")
        if length > _MAX_PACKET:
            raise MQTTProtocolError("packet of %d bytes exceeds the device limit" % length)
        if length > len(self._rxview):
            body = memoryview(bytearray(length))
        else:
            body = self._rxview[:length]
        await self._read_into(body)
        self._last_rx = time.ticks_ms()
        return parse_packet(first, body)

    async def _read_loop(self):
        try:
            while True:
                packet: tuple = await self._read_packet()
                kind = packet[0]
                if kind == _PUBACK or kind == _SUBACK:
                    slot = self._pending.get(packet[1])
                    if slot is not None:  # else: a late ack from an earlier connection
                        slot[1] = True
                        if kind == _SUBACK:
                            slot.append(packet[2])
                        slot[0].set()
                elif kind == _PUBLISH:
                    _, topic, payload, qos, pid, retain, _ = packet
                    if self.on_message is not None:
                        self.on_message(topic, payload, retain)
                    if qos == 1:
                        await self._send(b"\x40\x02" + pid.to_bytes(2, "big"))  # PUBACK (§3.4)
                elif kind == _CONNACK:
                    raise MQTTProtocolError("CONNACK not first or not once (§3.2)")
                # PINGRESP: _last_rx is all it is for
        except MQTTProtocolError as error:
            self.stats["malformed"] += 1
            self.last_error = error
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a broken socket or a failing handler: drop, never crash
            self.last_error = error
        self._drop()

    def _new_pid(self):
        while True:
            self._next_pid = self._next_pid % 0xFFFF + 1
            if self._next_pid not in self._pending:
                return self._next_pid
