"""Several virtual boards and the `kvitto sim` shell: one line per action at the prompt or
through `<workdir>/sim.sock`, and the NTAG 424 badges that move between their doors.

    kvitto sim --boards 3 --roles tag,lock,alarm --broker mqtt://127.0.0.1:1883 [--pki pki/]
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError
from kvitto.sim.board import SimError, VirtualBoard


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
            refused = refusal(board, verb, rest)
            if refused:
                return f"error: {refused}"
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


# What each role's firmware reads (device/roles.py): a tag has no buttons at all.
ROLE_INPUTS = {"tag": (), "lock": ("door", "exit"), "alarm": ("alarm_call", "green", "yellow")}
# Credential bytes a tap can carry: a badge UID (4, 7 or 10 bytes), an NTAG 424's 7-byte UID,
# a phone app key's 32-byte seed (real answers) or a 16-byte key id.
TAP_BYTES = {"badge": (4, 7, 10), "ntag424": (7,), "phone": (32, 16)}


def refusal(board: VirtualBoard, verb: str, rest: list[str]) -> str:
    """Why the board cannot do this prompt line, or "" if it can: a line that would answer
    "ok" and record nothing is refused instead."""
    name = f"board {board.device} ({board.role})"
    inputs = ROLE_INPUTS.get(board.role, ())
    if verb == "press" and rest:
        button = "alarm_call" if rest[0] == "call" else rest[0]
        if button not in inputs:
            have = ", ".join(inputs) if inputs else "no buttons: tap it instead"
            return f"{name} has no input {rest[0]!r} ({have})"
    if verb == "door" and "door" not in inputs:
        return f"{name} has no door contact (a lock has)"
    if verb == "alarm" and "alarm_call" not in inputs:
        return f"{name} takes no alarm calls (an alarm unit does)"
    if verb == "tap" and len(rest) >= 2:
        kind, value = rest[0], rest[1]
        if kind not in TAP_BYTES:
            return f"tap: unknown credential {kind!r} (badge, ntag424, phone)"
        try:
            size = len(bytes.fromhex(value.replace(":", "")))
        except ValueError:
            return f"tap {kind}: {value!r} is not hex"
        if size not in TAP_BYTES[kind]:
            wanted = " or ".join(str(n) for n in TAP_BYTES[kind])
            return f"tap {kind}: {size} bytes; expected {wanted}"
    return ""


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
        from kvitto.store.keys import load_org

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
