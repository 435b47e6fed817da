"""The MQTT client's connect path, loaded for a connect and dropped after it (issue #26): a
door device connects once a boot and again after an outage, and between them this code would
only take heap. `connect(client)` is device.link.mqtt.MQTTClient._connect's body: it works on
the client's own state, as the method did.
"""

import asyncio
import select
import socket
import time

from device.link.mqtt_codec import (
    MQTTError,
    MQTTProtocolError,
    packet,
    publish_packet,
    string_field,
)

try:
    from micropython import const  # type: ignore
except ImportError:  # CPython imports it in the codec tests

    def const(value):
        return value


_CONNECT = const(1)
_CONNACK = const(2)
_SUBSCRIBE = const(8)
_CONNECT_TIMEOUT_MS = const(5000)  # as in device.link.mqtt


def connect_packet(client_id, keepalive, user=None, password=None, will=None):
    """§3.1, persistent session (CleanSession 0); `will` = (topic, message, retain, qos)."""
    flags = 0
    payload = string_field(client_id)
    if will is not None:
        topic, message, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += string_field(topic) + string_field(message)
    if user is not None:
        flags |= 0x80
        payload += string_field(user)
        if password is not None:
            flags |= 0x40
            payload += string_field(password)
    if not 0 <= keepalive <= 0xFFFF:
        raise MQTTError("keepalive out of range")
    header = b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big")
    return packet(_CONNECT << 4, header + payload)


def subscribe_packet(pid, topics):
    """§3.8: fixed-header flags 0010; `topics` = [(topic, qos), …]."""
    body = pid.to_bytes(2, "big")
    for topic, qos in topics:
        body += string_field(topic) + bytes((qos,))
    return packet(_SUBSCRIBE << 4 | 0x02, body)


async def connect(client):
    """Connect `client` (an MQTTClient): socket, TLS, CONNECT/CONNACK, subscriptions, birth."""
    if client._addr is None:
        client._addr = socket.getaddrinfo(client.server, client.port, 0, socket.SOCK_STREAM)[0]
        client.stats["dns"] += 1
    sock = socket.socket(client._addr[0], socket.SOCK_STREAM)
    client._sock = sock
    sock.setblocking(False)
    try:
        sock.connect(client._addr[-1])
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
    if client.ssl_context is not None:
        sock = client.ssl_context.wrap_socket(
            sock, server_hostname=client.server, do_handshake_on_connect=False
        )
        sock.setblocking(False)
        client._sock = sock
    client._down = asyncio.Event()
    client._last_rx = time.ticks_ms()
    await client._send(
        connect_packet(
            client.client_id, client.keepalive, client.user, client.password, client.will
        )
    )
    reply = await asyncio.wait_for_ms(client._read_packet(), _CONNECT_TIMEOUT_MS)
    if reply[0] != _CONNACK:
        raise MQTTProtocolError("CONNACK not first or not once (§3.2)")
    if reply[2]:  # §3.2.2.3: bad credentials, unknown id, …
        raise MQTTError("broker refused the connection: return code %d" % reply[2])
    client._reader = asyncio.create_task(client._read_loop())
    if client.subscriptions:
        # Resubscribe on every connect (mqtt_as): a broker that lost its state forgets us.
        pid = client._new_pid()
        codes = await client._request(subscribe_packet(pid, client.subscriptions), pid)
        for code in codes or ():
            if code == 0x80:
                raise MQTTError("broker refused the subscription (ACL?)")
    if client.birth is not None:
        pid = client._new_pid()
        await client._request(publish_packet(client.birth[0], client.birth[1], 1, pid, True), pid)
    client.connected = True
    client.stats["connects"] += 1
    client.up.set()
    if client.on_connect is not None:
        client.on_connect()
