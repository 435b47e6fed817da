"""NetProxy, the network cut between a virtual board and the broker: pass, drop, black hole."""

from __future__ import annotations

import socket
import threading

import pytest

from kvitto.sim.netproxy import NetProxy


@pytest.fixture
def echo():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()
    server.close()


def roundtrip(sock: socket.socket, data: bytes, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def closed(sock: socket.socket) -> bool:
    """EOF or reset within two seconds (a timeout means the connection is still up)."""
    sock.settimeout(2)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def test_pass_drop_blackhole_restore(echo):
    proxy = NetProxy(*echo).start()
    try:
        first = socket.create_connection((proxy.host, proxy.port))
        assert roundtrip(first, b"hello") == b"hello"

        proxy.drop()  # the open connection dies, new ones are refused
        assert closed(first)
        refused = socket.create_connection((proxy.host, proxy.port))
        assert closed(refused)  # the proxy closes it at once
        assert proxy.refused == 1

        proxy.restore()
        second = socket.create_connection((proxy.host, proxy.port))
        assert roundtrip(second, b"again") == b"again"

        proxy.blackhole()  # connection stays up, nothing moves
        second.sendall(b"into the hole")
        second.settimeout(0.5)
        with pytest.raises(TimeoutError):
            second.recv(100)
        assert proxy.open_connections == 1

        proxy.restore()  # held bytes flow again, like TCP after a long outage
        second.settimeout(2)
        assert second.recv(100) == b"into the hole"
        for sock in (first, refused, second):
            sock.close()
    finally:
        proxy.stop()


def test_broker_down_behind_the_proxy_looks_like_a_refusal():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    proxy = NetProxy("127.0.0.1", dead_port).start()
    try:
        client = socket.create_connection((proxy.host, proxy.port))
        assert closed(client)
        client.close()
        assert proxy.refused == 1 and proxy.accepted == 0
    finally:
        proxy.stop()
