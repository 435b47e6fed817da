"""Asyncio MQTT 3.1.1 client for the door device: QoS 1, persistent session, reconnect, TLS.

    client = MQTTClient("tag-0042", "broker.lan", 1883, will=(b"kvitto/v1/tag-0042/state", b"offline"))
    asyncio.create_task(client.run())                          # keeps the connection, forever
    await client.publish(b"kvitto/v1/tag-0042/evt", message)  # waits through outages for PUBACK

mqtt_as-style (Peter Hinch) but loadable on the unix port: it never imports `network`; sockets
come from `socket`/`ssl`, so the same code runs on the ESP32 and in CI. It waits on the socket
through asyncio's own I/O queue, as asyncio.Stream does, without loading that module or keeping
a Stream per connection. The packets are device.link.mqtt_codec's (pure; every packet from the
broker goes through its `parse_packet`, which raises `MQTTProtocolError` for anything MQTT 3.1.1
does not allow); the connect path is device.link.mqtt_connect, loaded for a connect and dropped
after it. A malformed packet closes the connection (the client reconnects); it never ends the
loop.
"""

import asyncio
import random
import time

import device
from device.link.mqtt_codec import MQTTError, MQTTProtocolError, parse_packet, publish_packet

try:
    from micropython import const  # type: ignore
except ImportError:  # CPython imports the client in the codec tests

    def const(value):
        return value


# MQTT 3.1.1 §2.2.1: the packet types the client reads (as in device.link.mqtt_codec)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_MAX_PACKET = const(4096)  # what this device accepts; commands are ~200 bytes
_RX_BYTES = const(256)  # the receive buffer kept: acks (~150 bytes), time, config, ~6 creds fit
_CONNECT_TIMEOUT_MS = const(5000)
_WRITE_TIMEOUT_MS = const(5000)


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
        # loaded for this connect and dropped after it: device.link.mqtt_connect
        from device.link import mqtt_connect

        try:
            await mqtt_connect.connect(self)
        finally:
            device.forget("device.link.mqtt_connect")

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
