"""Virtual boards: the real firmware in a unix-port process on the `sim` board, its flash in an
image file, a pty as its serial port and a control socket for what happens at the door.

    with VirtualBoard(workdir, "tag-0001", broker=("127.0.0.1", 1883)) as board:
        board.tap("badge", "04a1b2c3"); board.press("green"); board.door(True)
        board.power_cut(); board.power_restore()          # SIGKILL, restart on the same flash
        print(board.serial_port, board.events())          # mpremote connect <pty> resume ...

The serial port is a pty whose other end a relay thread joins to the process's stdin/stdout,
where firmware/sim/control.py speaks MicroPython's raw REPL; so `mpremote connect <pty> resume
exec "..."` works as against a real board. The control socket carries one line per action
(`tap badge 04a1b2c3`, `press green`, `door open`, `events`), answered "ok ..." or "err ...".
Network cuts go through kvitto.sim.netproxy.NetProxy between the board and the broker when it is
installed. Several boards and the `kvitto sim` prompt: kvitto.sim.fleet.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError
from kvitto.paths import BOARDS, FIRMWARE, micropython_binary, micropython_path

CONFIG_FILE = "config.json"
BOARD_FILE = "board.json"
# littlefs parameters of MicroPython's VfsLfs2 (the same as kvitto.install.image uses)
LFS_READ_SIZE = LFS_PROG_SIZE = LFS_LOOKAHEAD = 32
LFS_NAME_MAX = 255
_SIGUSR1_EXIT = -signal.SIGUSR1  # the simulated watchdog's reset (firmware/sim/hal_sim.py)


class SimError(KvittoError):
    """A virtual board that cannot start or does not answer."""


def board_layout(board: str = "sim") -> dict[str, Any]:
    path = BOARDS / f"{board}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SimError(f"{path}: no such board file") from None


def _littlefs(layout: dict[str, Any], mount: bool = True):
    from littlefs import LittleFS

    flash = layout["flash"]
    return LittleFS(
        block_size=flash["block_size"],
        block_count=flash["fs_size"] // flash["block_size"],
        read_size=LFS_READ_SIZE,
        prog_size=LFS_PROG_SIZE,
        lookahead_size=LFS_LOOKAHEAD,
        name_max=LFS_NAME_MAX,
        mount=mount,
    )


def write_flash(path: Path, files: dict[str, bytes], board: str = "sim") -> None:
    """A fresh littlefs image holding `files`, sized for the board's filesystem."""
    fs = _littlefs(board_layout(board))
    for name, data in files.items():
        with fs.open(name, "wb") as stream:
            stream.write(data)
    path.write_bytes(bytes(fs.context.buffer))


def read_flash_file(path: Path, name: str, board: str = "sim") -> bytes:
    """One file from a (stopped) board's flash image."""
    from littlefs import LittleFS

    layout = board_layout(board)
    fs: LittleFS = _littlefs(layout, mount=False)
    fs.context.buffer[:] = path.read_bytes()
    fs.mount()
    with fs.open(name, "rb") as stream:
        return stream.read()


def make_config(
    device: str,
    role: str,
    broker: tuple[str, int],
    salt: bytes,
    org_public_key: bytes,
    **extra: Any,
) -> dict[str, Any]:
    """A device config (/config.json) for a virtual board."""
    config = {
        "device": device,
        "role": role,
        "board": "sim",
        "broker": {"host": broker[0], "port": broker[1], "user": None, "password": None},
        "salt": salt.hex(),
        "org_public_key": org_public_key.hex(),
        "ntp": [],
    }
    config.update(extra)
    return config


class VirtualBoard:
    """One virtual board. `config`: written into a new flash image (None: unprovisioned, as a
    board fresh from `kvitto flash`). With `broker` and a NetProxy available, the board talks
    to the broker through a proxy so `network_cut()` works."""

    def __init__(
        self,
        workdir: Path,
        device: str = "tag-0001",
        role: str = "tag",
        *,
        broker: tuple[str, int] | None = None,
        config: dict[str, Any] | None = None,
        salt: bytes | None = None,
        org_public_key: bytes | None = None,
        provision: bool = True,
        proxy: bool = True,
        heap: str = "2M",
        flash: Path | None = None,
        idf_heap: str | None = None,
        board: Path | None = None,
        gc_heap_kib: int | None = None,
    ):
        self.workdir = Path(workdir).resolve()  # the board process runs inside it
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.role = role
        self.heap = heap
        # ESP-IDF's heap as the board's esp32.idf_heap_info reports it (firmware/sim/esp32.py):
        # "INTERNAL_KIB" or "INTERNAL_KIB,PSRAM_KIB" free
        self.idf_heap = idf_heap
        # a small board's GC heap left free at start (firmware/sim/esp32.py leave_gc_heap)
        self.gc_heap_kib = gc_heap_kib
        self.board = Path(board).resolve() if board is not None else BOARDS / "sim.json"
        # an existing image (e.g. from `kvitto image`) is mounted as it is, like a flashed board
        self.flash = Path(flash).resolve() if flash is not None else self.workdir / "flash.img"
        self.log_path = self.workdir / "board.log"
        self.control_path = self.workdir / "control.sock"
        self.proxy = None
        self.broker = broker
        if broker is not None and proxy:
            self.proxy = _start_proxy(broker)
        if provision and not self.flash.exists():
            if config is None:
                target = self.broker_address() or ("127.0.0.1", 1883)
                config = make_config(
                    device,
                    role,
                    target,
                    salt or secrets.token_bytes(16),
                    org_public_key or bytes(32),
                )
            write_flash(self.flash, {CONFIG_FILE: json.dumps(config).encode()})
        self.process: subprocess.Popen[bytes] | None = None
        self.powered = False
        self.resets: list[str] = []  # reset causes of every start after the first
        self._control_lock = threading.Lock()
        self._connection: socket.socket | None = None
        self._connected = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        self._listener.bind(str(self.control_path))
        self._listener.listen(1)
        self._closing = False
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as on a UART
        os.set_blocking(self._master, False)
        self.serial_port = os.ttyname(self._slave)
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    # -- life cycle
    def broker_address(self) -> tuple[str, int] | None:
        if self.proxy is not None:
            return _proxy_address(self.proxy)
        return self.broker

    def start(self, reset_cause: str = "power") -> None:
        if self.process is not None and self.process.poll() is None:
            return
        env = dict(os.environ)
        env.update(
            MICROPYPATH=micropython_path(),
            KVITTO_BOARD=str(self.board),
            KVITTO_FLASH=str(self.flash),
            KVITTO_CONTROL=str(self.control_path),
            KVITTO_SERIAL="stdio",
            KVITTO_RESET_CAUSE=reset_cause,
        )
        if self.idf_heap is not None:
            env["KVITTO_IDF_HEAP"] = self.idf_heap
        if self.gc_heap_kib is not None:
            env["KVITTO_GC_HEAP_KIB"] = str(self.gc_heap_kib)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self._connected.clear()
        self.process = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={self.heap}", str(FIRMWARE / "main.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        self.powered = True
        process = self.process
        threading.Thread(target=self._board_to_pty, args=(process,), daemon=True).start()
        threading.Thread(target=self._pty_to_board, args=(process,), daemon=True).start()

    def wait_ready(self, timeout: float = 30, app: bool = True) -> dict[str, Any]:
        """Wait until the board answers on the control channel (and, with `app`, runs the
        application: an unprovisioned board only blinks red); returns its status. A board that
        keeps dying at start, or answers without running the application, says so."""
        deadline = time.monotonic() + timeout
        resets_before = len(self.resets)
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None and not self.powered:
                break
            if len(self.resets) - resets_before >= 3:
                raise SimError(
                    f"board {self.device} stops at every start (exit status "
                    f"{self.process.returncode if self.process else '?'}); "
                    f"log:\n{self.log_tail()}"
                )
            try:
                answer: dict[str, Any] = json.loads(self.control("status", timeout=2))
            except SimError:
                time.sleep(0.1)
                continue
            status = answer
            if "device" in answer or not app:
                return answer
            time.sleep(0.1)
        if status is not None:
            raise SimError(
                f"board {self.device} answers but runs no application: no config.json on its "
                f"flash {self.flash}? (status {status}); log:\n{self.log_tail()}"
            )
        raise SimError(f"board {self.device} did not come up; log:\n{self.log_tail()}")

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL, nothing flushed that the firmware did not flush itself."""
        self.powered = False
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._drop_connection()

    def power_restore(self) -> None:
        self.resets.append("power")
        self.start("power")

    def reset(self) -> None:
        """The reset button: restart on the same flash (e.g. after provisioning wrote config)."""
        self.power_cut()
        self.resets.append("soft")
        self.start("soft")

    def network_cut(self, blackhole: bool = False) -> None:
        """Pull the cable (connections reset) or, with `blackhole`, let packets vanish."""
        if self.proxy is None:
            raise SimError(
                "this board has no network proxy (kvitto.sim.netproxy or a broker missing)"
            )
        _proxy_call(self.proxy, "blackhole" if blackhole else "cut")

    def network_restore(self) -> None:
        if self.proxy is None:
            raise SimError(
                "this board has no network proxy (kvitto.sim.netproxy or a broker missing)"
            )
        _proxy_call(self.proxy, "restore")

    def stop(self) -> None:
        self._closing = True
        self.power_cut()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                _proxy_call(self.proxy, "close")
        self._listener.close()
        with contextlib.suppress(OSError):
            os.close(self._master)
        with contextlib.suppress(OSError):
            os.close(self._slave)
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- at the door
    def control(self, line: str, timeout: float = 10) -> str:
        """Send one control line; returns the text after "ok", raises SimError on "err"."""
        if not self._connected.wait(timeout):
            raise SimError(f"board {self.device}: control channel not connected")
        with self._control_lock:
            connection = self._connection
            if connection is None:
                raise SimError(f"board {self.device}: control channel not connected")
            try:
                connection.settimeout(timeout)
                connection.sendall(line.encode() + b"\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    reply += chunk
            except OSError as error:
                self._drop_connection()
                raise SimError(f"board {self.device}: control channel lost ({error})") from None
        text = reply.decode().strip()
        if text.startswith("err"):
            raise SimError(f"board {self.device}: {text[4:]}")
        return text[3:]

    def tap(
        self,
        kind: str,
        uid_hex: str,
        hold_ms: int = 800,
        meta_key: bytes | None = None,
        file_key: bytes | None = None,
        counter: int | None = None,
    ) -> None:
        """Hold a credential to the door. badge: UID; ntag424: UID with the badge's SDM meta
        and file read keys and its read counter before this tap (NtagBadges keeps them);
        phone: the app key's 32-byte seed (real answers) or a 16-byte key id (zero ones)."""
        # held as staff hold a badge: longer than one reader + tag-mode cycle (docs/nfc.md)
        line = f"tap {kind} {uid_hex} {hold_ms}"
        if meta_key is not None and file_key is not None:
            line += f" meta={meta_key.hex()} file={file_key.hex()}"
        if counter is not None:
            line += f" ctr={counter}"
        self.control(line)

    def press(self, name: str, ms: int = 400) -> None:
        # A firm press. The buttons are polled and debounced (30 ms stable): a board process
        # starved of CPU for longer than a short press, as on a loaded CI machine, would miss
        # it; 400 ms is still a press, not a hold, to the alarm unit.
        self.control(f"press {name} {ms}")

    def door(self, open_: bool) -> None:
        self.control("door open" if open_ else "door close")

    def led(self) -> str:
        return self.control("led")

    def events(self, first: int = 1) -> list[dict[str, Any]]:
        return json.loads(self.control(f"events {first}"))

    def wait_events(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Poll the journal until it holds at least `count` events."""
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= count:
                return events
            time.sleep(0.1)
        raise SimError(f"board {self.device}: {len(events)} events, expected {count}")

    # -- threads
    def _accept(self) -> None:
        while not self._closing:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._control_lock:
                if self._connection is not None:
                    self._connection.close()
                self._connection = connection
            self._connected.set()

    def _drop_connection(self) -> None:
        self._connected.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _watch(self) -> None:
        """The board's power supply: a reset (watchdog, crash) restarts it on the same flash."""
        while not self._closing:
            time.sleep(0.1)
            process = self.process
            if process is None or not self.powered or process.poll() is None:
                continue
            cause = "wdt" if process.returncode == _SIGUSR1_EXIT else "other"
            self._drop_connection()
            self.resets.append(cause)
            self.start(cause)

    def _board_to_pty(self, process: subprocess.Popen[bytes]) -> None:
        stdout = process.stdout
        assert stdout is not None
        while True:
            try:
                data = os.read(stdout.fileno(), 4096)
            except OSError:
                return
            if not data:
                return
            try:
                os.write(self._master, data)
            except OSError as error:
                # nobody on the serial port and its buffer full: a UART drops bytes too
                if error.errno not in (errno.EAGAIN, errno.EIO):
                    return

    def _pty_to_board(self, process: subprocess.Popen[bytes]) -> None:
        import select

        stdin = process.stdin
        assert stdin is not None
        while process.poll() is None:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            if process.poll() is not None or self.process is not process:
                return  # reset meanwhile: these bytes are for the new process's reader
            try:
                data = os.read(self._master, 4096)
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EIO):
                    time.sleep(0.05)
                    continue
                return
            try:
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, ValueError):
                return


def _start_proxy(broker: tuple[str, int]) -> Any:
    try:
        from kvitto.sim.netproxy import NetProxy  # type: ignore[import-not-found]
    except ImportError:  # the link issue's proxy not installed: the board connects directly
        return None
    return NetProxy(broker[0], broker[1]).start()


def _proxy_address(proxy: Any) -> tuple[str, int]:
    return (proxy.host, proxy.port)


def _proxy_call(proxy: Any, action: str) -> None:
    {
        "cut": proxy.drop,
        "blackhole": proxy.blackhole,
        "restore": proxy.restore,
        "close": proxy.stop,
    }[action]()
