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
installed. `Fleet` runs several boards; `kvitto sim` puts a line prompt in front of one.
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
from collections.abc import Iterator
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
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.role = role
        self.heap = heap
        # an existing image (e.g. from `kvitto image`) is mounted as it is, like a flashed board
        self.flash = Path(flash) if flash is not None else self.workdir / "flash.img"
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
            KVITTO_BOARD=str(BOARDS / "sim.json"),
            KVITTO_FLASH=str(self.flash),
            KVITTO_CONTROL=str(self.control_path),
            KVITTO_SERIAL="stdio",
            KVITTO_RESET_CAUSE=reset_cause,
        )
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
        application: an unprovisioned board only blinks red); returns its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None and not self.powered:
                break
            try:
                status = json.loads(self.control("status", timeout=2))
            except SimError:
                time.sleep(0.1)
                continue
            if "device" in status or not app:
                return status
            time.sleep(0.1)
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


class NtagBadges:
    """NTAG 424 DNA badges as the simulation holds them to doors: each badge's keys derived
    from the organisation's masters (kvitto.install.enroll, AN10922) and one read counter per badge,
    kept here because a badge is one object that goes from door to door.

        badges = NtagBadges(ntag424_masters(pki))
        board.tap("ntag424", uid_hex, **badges.card(uid_hex))
    """

    def __init__(self, masters: Any):
        self.masters = masters
        self.counters: dict[bytes, int] = {}

    def card(self, uid_hex: str) -> dict[str, Any]:
        from kvitto.install.enroll import ntag424_badge_keys, parse_uid

        uid = parse_uid(uid_hex, "NTAG 424 UID")
        keys = ntag424_badge_keys(self.masters, uid)
        counter = self.counters.get(uid, 0)
        # the badge reads counter + 1 for this tap; a later tap must read above it
        self.counters[uid] = counter + 1
        return {"meta_key": keys[1], "file_key": keys[2], "counter": counter}


class Fleet:
    """Several virtual boards that share a salt and an organisation key (and, with `badges`,
    the organisation's NTAG 424 keys)."""

    def __init__(
        self,
        workdir: Path,
        count: int,
        broker: tuple[str, int] | None = None,
        roles: tuple[str, ...] = ("tag",),
        org_public_key: bytes | None = None,
        salt: bytes | None = None,
        badges: NtagBadges | None = None,
    ):
        if count < 1:
            raise SimError("--boards must be at least 1")
        for role in roles:
            if role not in ("tag", "lock", "alarm"):
                raise SimError(f"unknown role {role!r} (tag, lock, alarm)")
        self.salt = salt or secrets.token_bytes(16)
        self.org_public_key = org_public_key or bytes(32)
        self.badges = badges
        self.boards: list[VirtualBoard] = []
        for index in range(1, count + 1):
            role = roles[(index - 1) % len(roles)]
            device = f"{role}-{index:04d}"
            self.boards.append(
                VirtualBoard(
                    Path(workdir) / device,
                    device,
                    role,
                    broker=broker,
                    salt=self.salt,
                    org_public_key=self.org_public_key,
                )
            )

    def start(self) -> None:
        for board in self.boards:
            board.start()
        for board in self.boards:
            board.wait_ready()

    def stop(self) -> None:
        for board in self.boards:
            board.stop()

    def board(self, number: str) -> VirtualBoard:
        try:
            index = int(number)
        except ValueError:
            matches = [b for b in self.boards if b.device == number]
            if matches:
                return matches[0]
            raise SimError(f"no board {number!r}") from None
        if not 1 <= index <= len(self.boards):
            raise SimError(f"no board {index} (1..{len(self.boards)})")
        return self.boards[index - 1]

    def __iter__(self) -> Iterator[VirtualBoard]:
        return iter(self.boards)

    HELP = (
        "tap N KIND HEX (badge|ntag424 UID, phone SEED) | press N INPUT | door N open|close | "
        "alarm N | power N cut|restore | net N cut|restore | led N | events N | status | help | "
        "quit"
    )

    def command(self, line: str) -> str:
        """One prompt line -> one reply line (the same protocol on the keyboard and socket)."""
        words = line.split()
        if not words:
            return ""
        verb, args = words[0], words[1:]
        try:
            if verb in ("help", "?"):
                return self.HELP
            if verb == "status":
                return json.dumps(
                    [
                        {"board": i, "device": b.device, "role": b.role, "serial": b.serial_port}
                        | (json.loads(b.control("status")) if b.powered else {"power": "off"})
                        for i, b in enumerate(self.boards, 1)
                    ]
                )
            if verb not in ("tap", "press", "door", "alarm", "power", "net", "led", "events"):
                return f"error: unknown command {verb!r}; {self.HELP}"
            if not args:
                return f"error: {verb} needs a board number; {self.HELP}"
            board = self.board(args[0])
            rest = args[1:]
            if verb == "tap" and len(rest) >= 2:
                card = self.badges.card(rest[1]) if self.badges and rest[0] == "ntag424" else {}
                board.tap(rest[0], rest[1], **card)
            elif verb == "press" and rest:
                board.press(rest[0])
            elif verb == "door" and rest and rest[0] in ("open", "close"):
                board.door(rest[0] == "open")
            elif verb == "alarm":
                board.press("alarm_call")
            elif verb == "power" and rest and rest[0] in ("cut", "restore"):
                board.power_cut() if rest[0] == "cut" else board.power_restore()
            elif verb == "net" and rest and rest[0] in ("cut", "restore"):
                board.network_cut() if rest[0] == "cut" else board.network_restore()
            elif verb == "led":
                return board.led()
            elif verb == "events":
                return json.dumps(board.events())
            else:
                return f"error: cannot read {line!r}; {self.HELP}"
            return "ok"
        except KvittoError as error:
            return f"error: {error}"


def serve_socket(fleet: Fleet, path: Path, stop: threading.Event) -> None:
    """The prompt's line protocol on a Unix socket, for other programs."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.5)

    def client(connection: socket.socket) -> None:
        with connection, connection.makefile("rwb") as stream:
            for raw in stream:
                reply = fleet.command(raw.decode().strip())
                stream.write(reply.encode() + b"\n")
                stream.flush()

    while not stop.is_set():
        try:
            connection, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        threading.Thread(target=client, args=(connection,), daemon=True).start()
    server.close()


def parse_broker(url: str) -> tuple[str, int]:
    """mqtt://host:port -> (host, port); the board's own link speaks plain MQTT here."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise SimError(f"--broker {url!r}: expected mqtt://host:port")
    try:
        port = parts.port or 1883
    except ValueError:
        raise SimError(f"--broker {url!r}: the port is not a number") from None
    return parts.hostname, port


def run_sim(
    boards: int,
    broker: str | None,
    roles: tuple[str, ...],
    workdir: Path,
    listen: Path | None,
    org_public_key: bytes | None,
    salt: bytes | None,
    lines: Iterator[str] | None,
    echo: Any = print,
    prompt: bool = True,
    pki_dir: Path | None = None,
) -> Fleet:
    """`kvitto sim`: start the boards, list them, then obey prompt lines until quit/EOF (or,
    with lines=None, until interrupted); the socket at `listen` takes the same lines.

    `pki_dir`: the organisation's `kvitto pki` folder: its credential salt (unless `salt` is
    given) and NTAG 424 master keys, so taps carry the credential ids and SUNs it enrolled."""
    badges = None
    if pki_dir is not None:
        from kvitto.install.enroll import ntag424_masters
        from kvitto.install.pki import load_org

        org = load_org(pki_dir)
        salt = salt or org.credential_salt
        org_public_key = org_public_key or org.command_public_key
        badges = NtagBadges(ntag424_masters(pki_dir))
    fleet = Fleet(
        workdir,
        boards,
        parse_broker(broker) if broker else None,
        roles,
        org_public_key=org_public_key,
        salt=salt,
        badges=badges,
    )
    stop = threading.Event()
    try:
        fleet.start()
        if listen is not None:
            threading.Thread(target=serve_socket, args=(fleet, listen, stop), daemon=True).start()
        for index, board in enumerate(fleet, 1):
            echo(f"board {index}: {board.device} ({board.role}) serial {board.serial_port}")
        if listen is not None:
            echo(f"control socket: {listen} (same lines as the prompt)")
        echo(Fleet.HELP)
        if lines is None:
            while not stop.wait(1):
                pass
        else:
            for line in lines:
                line = line.strip()
                if line in ("quit", "exit"):
                    break
                if line:
                    echo(fleet.command(line))
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        fleet.stop()
    return fleet
