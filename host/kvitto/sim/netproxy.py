"""A loopback TCP proxy between a virtual board and its broker that can cut the network.

    proxy = NetProxy("127.0.0.1", broker_port).start()    # board connects to proxy.port
    proxy.drop()        # every connection reset, new ones refused: a cable pulled out
    proxy.blackhole()   # connections stay up, nothing moves: a dead Wi-Fi access point
    proxy.restore()     # traffic flows again

`drop` closes both sides at once, as a reset would; the board sees an error or EOF and
reconnects. `blackhole` stops reading, so bytes wait in the kernel's buffers as they would in
a router's queue and a sender eventually blocks; only the board's keepalive (MQTT: ping at
keepalive/4, dead after four silent intervals) can tell. After `restore` a black-holed
connection resumes where it was, like TCP after a long outage; the board has usually given up on
it by then and opened a new one.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

Mode = Literal["pass", "drop", "blackhole"]
_CHUNK = 65536
_POLL = 0.05  # seconds a pump waits before it looks at the mode again


class NetProxy:
    """Forward TCP from `listen_port` (0 = any free port) to `target_host:target_port`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ):
        self.target = (target_host, target_port)
        self.host = listen_host
        self._listen_port = listen_port
        self.port = 0
        self.mode: Mode = "pass"
        self.accepted = 0
        self.refused = 0
        self.bytes_forwarded = 0
        self._server: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> NetProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self._listen_port))
        server.listen(16)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, name="netproxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        self._close_all()

    # -- the three states -----------------------------------------------------------------

    def restore(self) -> None:
        self.mode = "pass"
        self._flowing.set()

    def drop(self) -> None:
        """Reset every open connection and refuse new ones until `restore()`."""
        self.mode = "drop"
        self._flowing.set()  # wake paused pumps so they notice and exit
        self._close_all()

    cut = drop

    def blackhole(self) -> None:
        """Keep connections open but move no byte, either way; new connections are accepted
        (the TCP handshake is the kernel's) and then hear nothing."""
        self.mode = "blackhole"
        self._flowing.clear()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- internals --------------------------------------------------------------------------

    def _close_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.mode == "drop":
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self.refused += 1
                _reset(client)  # broker down: the board sees the same refusal it would
                continue
            self.accepted += 1
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink, pair), name="netproxy-pump", daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        source.settimeout(_POLL)
        try:
            while not self._stopped.is_set():
                if not self._flowing.wait(_POLL):
                    continue  # black hole: leave the bytes in the kernel's buffers
                if self.mode == "drop":
                    break
                try:
                    data = source.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                if not self._flowing.is_set():
                    # The hole opened while we were reading: hold these bytes until it closes.
                    while not self._flowing.wait(_POLL):
                        if self._stopped.is_set():
                            return
                    if self.mode == "drop":
                        break
                sink.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for sock in pair:
                _reset(sock)


def _reset(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
