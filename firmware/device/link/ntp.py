"""SNTP (RFC 5905 / RFC 4330) for device.link.clock: packets, checks, the best of a few samples.
Its own module, loaded only while a sync runs (device.app drops it after each), so a device
without NTP hosts in config.json never carries it on the heap.

    from device.link import ntp
    offset_ms = await ntp.sync(clock, ["pool.ntp.org"])   # applied to clock, returned
"""

import asyncio
import struct
import time

from micropython import const

_NTP_PORT = const(123)
_NTP_PACKET = const(48)
_NTP_UNIX_DELTA = const(2208988800)  # RFC 5905 §6: seconds from 1900-01-01 to 1970-01-01
_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_LI_UNSYNCHRONIZED = const(3)


class ClockError(Exception):
    """An NTP answer that fails the checks (origin, mode, stratum, leap indicator). Here, not in
    device.link.clock, so the class is on the heap only while a sync runs."""


def ntp_to_unix_ms(seconds, fraction):
    # RFC 5905 §6: 32-bit seconds since 1900 and a 32-bit binary fraction of a second
    return (seconds - _NTP_UNIX_DELTA) * 1000 + ((fraction * 1000) >> 32)


def unix_ms_to_ntp(unix_ms):
    seconds = unix_ms // 1000 + _NTP_UNIX_DELTA
    fraction = (((unix_ms % 1000) << 32) + 999) // 1000  # round up: ms survive a round trip
    return seconds, fraction


def request(nonce):
    """A client packet (RFC 5905 §7.3): LI 0, VN 4, mode 3; the transmit timestamp is a random
    nonce (RFC 9109 §3: the client's clock need not be disclosed), echoed back as origin."""
    packet = bytearray(_NTP_PACKET)
    packet[0] = (4 << 3) | _MODE_CLIENT
    packet[40:48] = nonce
    return packet


def parse_reply(reply, nonce):
    """(T2, T3) in Unix ms from a server reply, after the RFC 5905 §8 / RFC 4330 §5 checks."""
    if len(reply) < _NTP_PACKET:
        raise ClockError("short NTP reply (%d bytes)" % len(reply))
    leap, version, mode = reply[0] >> 6, (reply[0] >> 3) & 7, reply[0] & 7
    if mode != _MODE_SERVER:
        raise ClockError("NTP reply mode %d, not server (4)" % mode)
    if version not in (3, 4):
        raise ClockError("NTP version %d" % version)
    if bytes(reply[24:32]) != bytes(nonce):
        raise ClockError("NTP reply does not echo our transmit timestamp (origin check)")
    stratum = reply[1]
    if stratum == 0 or stratum > 15:
        raise ClockError("NTP server unsynchronized or kiss-o'-death (stratum %d)" % stratum)
    if leap == _LI_UNSYNCHRONIZED:
        raise ClockError("NTP server clock not synchronized (LI 3)")
    receive_s, receive_f, transmit_s, transmit_f = struct.unpack(">IIII", reply[32:48])
    if transmit_s == 0:
        raise ClockError("NTP reply without a transmit timestamp")
    return ntp_to_unix_ms(receive_s, receive_f), ntp_to_unix_ms(transmit_s, transmit_f)


def offset_and_delay(t1, t2, t3, t4):
    """RFC 5905 §8: offset ((T2-T1)+(T3-T4))/2 and round-trip delay (T4-T1)-(T3-T2), in ms."""
    return ((t2 - t1) + (t3 - t4)) // 2, (t4 - t1) - (t3 - t2)


def best_offset(samples):
    """The offset of the sample with the least round-trip delay (RFC 5905 §10, clock filter):
    its error bound, delay/2, is the smallest. `samples`: (t1, t2, t3, t4) tuples."""
    best = None
    for sample in samples:
        offset, delay = offset_and_delay(*sample)
        if delay < 0:
            continue  # impossible timing: a broken server or a stepped clock mid-exchange
        if best is None or delay < best[1]:
            best = (offset, delay)
    if best is None:
        raise ClockError("no usable NTP sample")
    return best



async def sync(clock, hosts, samples=4, rng=None, timeout_ms=1000, socket_module=None):
    """Query the hosts for up to `samples` good answers, apply the best offset to `clock` (a
    device.link.clock.Clock), return it. Raises ClockError when no host gave a usable answer."""
    if socket_module is None:
        import socket as socket_module
    import os

    rng = rng or os.urandom
    good = []
    errors = []
    for host in hosts:
        try:
            address = socket_module.getaddrinfo(host, _NTP_PORT)[0][-1]  # DNS once per host
        except OSError as error:
            errors.append("%s: %s" % (host, error))
            continue
        for _ in range(samples):
            try:
                good.append(await _exchange(clock, socket_module, address, rng, timeout_ms))
            except (OSError, ClockError) as error:
                errors.append("%s: %s" % (host, error))
            if len(good) >= samples:
                break
        if len(good) >= samples:
            break
    if not good:
        raise ClockError("no NTP answer (%s)" % "; ".join(errors[-3:]))
    offset, _ = best_offset(good)
    return clock.adjust(offset)


async def _exchange(clock, socket_module, address, rng, timeout_ms):
    nonce = rng(8)
    sock = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        t1 = clock.local_ms()
        sock.sendto(request(nonce), address)
        start = time.ticks_ms()
        while True:
            try:
                reply = sock.recv(_NTP_PACKET + 16)
                t4 = clock.local_ms()
                break
            except OSError:
                if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                    raise ClockError("NTP timeout")
                await asyncio.sleep_ms(5)
        t2, t3 = parse_reply(reply, nonce)
        return t1, t2, t3, t4
    finally:
        sock.close()
