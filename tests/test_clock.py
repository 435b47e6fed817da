"""Device time: SNTP offset ((T2-T1)+(T3-T4))/2 from the least-delay sample, the origin check,
the signed `time` command's set, and the (t, sync age) quality every event carries."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from app_support import run_both

NTP_DELTA = 2208988800


def test_offset_math_and_best_sample(micropython, tmp_path):
    out = run_both(
        micropython,
        """
from device.link.ntp import offset_and_delay, best_offset, ntp_to_unix_ms, unix_ms_to_ntp
from device.link.ntp import ClockError
# server 5 s ahead, 40 ms each way, 2 ms in the server
print(offset_and_delay(1000, 6040, 6042, 1082))
print(best_offset([(0, 5100, 5101, 300), (1000, 6040, 6042, 1082), (0, 4990, 4991, 100)]))
print(ntp_to_unix_ms(*unix_ms_to_ntp(1763900000123)))
try:
    best_offset([(100, 0, 0, 50)])
except ClockError as error:
    print("refused", error)
clock = FakeClock()
from device.link.clock import Clock
c = Clock(clock)
print(c.quality(), c.now(), c.now() is not None)
clock.advance(2500)
print(c.set(1763900000000), c.quality())
clock.advance(61000)
print(c.quality(), c.uptime_ms())
print(c.set(1763900061500), c.quality())
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "(5000, 80)",
        "(5000, 80)",  # the 80 ms round trip beats 300 ms and 99 ms
        "1763900000123",
        "refused no usable NTP sample",
        "(None, None) None False",
        "1763899997500 (1763900000, 0)",  # first set: against uptime alone (2.5 s)
        "(1763900061, 61) 63500",
        "500 (1763900061, 0)",
    ]


class FakeNtp:
    """A UDP NTP server on loopback whose clock is `skew_ms` ahead of this machine's."""

    def __init__(self, skew_ms: int, echo_origin: bool = True, stratum: int = 2):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.skew_ms = skew_ms
        self.echo_origin = echo_origin
        self.stratum = stratum
        self.answered = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def stamp(self) -> bytes:
        now_ms = int(time.time() * 1000) + self.skew_ms
        return struct.pack(">II", now_ms // 1000 + NTP_DELTA, ((now_ms % 1000) << 32) // 1000)

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(128)
            except OSError:
                return
            receive = self.stamp()
            origin = data[40:48] if self.echo_origin else b"\x00" * 8
            head = bytes([(0 << 6) | (4 << 3) | 4, self.stratum, 6, 0xEC]) + bytes(20)
            self.sock.sendto(head + origin + receive + self.stamp(), peer)
            self.answered += 1


@pytest.mark.parametrize("skew_ms", [123456789, -4000])
def test_sntp_against_a_server(micropython, skew_ms):
    server = FakeNtp(skew_ms)
    out = micropython(
        f"""
        import asyncio, time
        from device.link import ntp
        from device.link.clock import Clock
        c = Clock()
        import socket
        class Net:
            AF_INET = socket.AF_INET
            SOCK_DGRAM = socket.SOCK_DGRAM
            socket = socket.socket
            getaddrinfo = staticmethod(lambda host, port: socket.getaddrinfo("127.0.0.1", {server.port}))
        offset = asyncio.run(ntp.sync(c, ["ntp.test"], samples=4, socket_module=Net))
        t, age = c.quality()
        print(t - int(time.time()), age)
        """
    )
    difference, age = out.split()
    assert abs(int(difference) - skew_ms // 1000) <= 1
    assert age == "0"
    assert server.answered == 4


@pytest.mark.parametrize(
    "server,problem",
    [(dict(echo_origin=False), "origin check"), (dict(stratum=0), "kiss-o'-death")],
)
def test_sntp_refuses_bad_answers(micropython, server, problem):
    fake = FakeNtp(5000, **server)
    out = micropython(
        f"""
        import asyncio, socket
        from device.link import ntp
        from device.link.clock import Clock
        from device.link.ntp import ClockError
        class Net:
            AF_INET = socket.AF_INET
            SOCK_DGRAM = socket.SOCK_DGRAM
            socket = socket.socket
            getaddrinfo = staticmethod(lambda host, port: socket.getaddrinfo("127.0.0.1", {fake.port}))
        c = Clock()
        try:
            asyncio.run(ntp.sync(c, ["ntp.test"], samples=2, socket_module=Net))
        except ClockError as error:
            print("refused", error)
        print(c.now() is not None)
        """
    )
    assert problem in out
    assert out.splitlines()[-1] == "False"
