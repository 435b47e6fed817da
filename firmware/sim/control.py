"""The virtual board's two host-facing channels: a line-based control socket (what a person at
the door does) and a serial console on stdin/stdout that speaks MicroPython's raw REPL, so
`mpremote connect <pty> resume exec ...` works against a board running under the unix port.

    asyncio.create_task(control_channel(sim_hal, "/tmp/b1.ctl"))   # host listens, we connect
    asyncio.create_task(serial_console())                          # stdin/stdout = the UART
    # control lines: tap badge 04a1b2c3 | press green | door open | alarm | status | events 1

Never part of a board image.
"""

import asyncio
import json
import select
import socket
import sys

from micropython import const

_PRESS_MS = const(150)
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
_CTRL_A = const(1)
_CTRL_B = const(2)
_CTRL_C = const(3)
_CTRL_D = const(4)
_CTRL_E = const(5)

HELP = ("tap KIND HEX [MS] [meta=HEX file=HEX ctr=N] | press INPUT [MS] | set INPUT 0|1 | "
        "door open|close | alarm | led | relay | status | events [FROM] | ping")


def _hex(value):
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


def _plain(value):
    """CBOR-decoded values made JSON-friendly (bytes as hex)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _hex(value)


async def _release(sim_hal, name, ms):
    await asyncio.sleep_ms(ms)
    sim_hal.set_input(name, False)


def _events(sim_hal, first):
    from device.evidence import cbor

    app = getattr(sim_hal, "app", None)
    if app is None:
        raise ValueError("the application is not running (no config?)")
    journal = app.journal
    out = []
    for seq in range(max(1, first), journal.next_seq):
        payload = journal.get(seq)
        if payload is None:
            continue
        fields = cbor.decode(payload)
        out.append({"seq": seq, "type": fields.get(7), "boot": fields.get(3),
                    "cred": _hex(fields.get(8)), "x": _plain(fields.get(10) or {}),
                    "t": fields.get(5)})
    return out


def _phone_signer(seed):
    """A phone app's Ed25519 key from its 32-byte seed: (key id, sign). docs/nfc.md: the key
    id is SHA-256(public key)[:16], the answer signs the CHALLENGE data (nonce ‖ device id)."""
    import hashlib

    from device.evidence import ed25519

    public = ed25519.public_key(seed)
    return hashlib.sha256(public).digest()[:16], lambda message: ed25519.sign(seed, message)


def _tap_args(args):
    """tap KIND HEX [MS] [meta=HEX file=HEX ctr=N] -> (kind, raw, hold ms, card secrets).

    phone with a 32-byte HEX: the phone's private seed, so its answers are real signatures;
    with a 16-byte HEX: a key id alone (all-zero signatures). ntag424: UID, with meta=/file=
    the badge's SDM read keys and ctr= its read counter before this tap."""
    kind, raw = args[0], bytes.fromhex(args[1])
    hold = 300
    card = {}
    for word in args[2:]:
        name, sep, value = word.partition("=")
        if not sep:
            hold = int(word)
        elif name in ("meta", "file"):
            card[name + "_key"] = bytes.fromhex(value)
        elif name == "ctr":
            card["counter"] = int(value)
        else:
            raise ValueError("unknown tap option " + name)
    if kind == "phone" and len(raw) == 32:
        raw, card["sign"] = _phone_signer(raw)
    return kind, raw, hold, card


def handle(sim_hal, line):
    """One control line -> one reply line ("ok ..." or "err ...")."""
    words = line.split()
    if not words:
        return "err empty line; " + HELP
    verb, args = words[0], words[1:]
    try:
        if verb == "ping":
            return "ok pong"
        if verb == "tap":
            kind, raw, hold, card = _tap_args(args)
            sim_hal.tap(kind, raw, hold_ms=hold, **card)
            return "ok"
        if verb in ("press", "set"):
            name = args[0]
            if name == "call":
                name = "alarm_call"
            if verb == "set":
                sim_hal.set_input(name, args[1] == "1")
                return "ok"
            sim_hal.set_input(name, True)
            ms = int(args[1]) if len(args) > 1 else _PRESS_MS
            asyncio.create_task(_release(sim_hal, name, ms))
            return "ok"
        if verb == "door":
            if args[0] not in ("open", "close"):
                return "err door open|close"
            sim_hal.set_input("door", args[0] == "open")
            return "ok"
        if verb == "alarm":
            return handle(sim_hal, "press alarm_call")
        if verb == "led":
            return "ok " + sim_hal.led.colour
        if verb == "relay":
            return "ok %d" % sim_hal.relay.state
        if verb == "status":
            app = getattr(sim_hal, "app", None)
            status = {"led": sim_hal.led.colour, "relay": sim_hal.relay.state}
            if app is not None:
                status.update(device=app.device_id, role=app.role, boot=app.journal.boot,
                              next_seq=app.journal.next_seq, acked=app.journal.acked)
            return "ok " + json.dumps(status)
        if verb == "events":
            return "ok " + json.dumps(_events(sim_hal, int(args[0]) if args else 1))
        return "err unknown command %r; %s" % (verb, HELP)
    except (IndexError, ValueError) as error:
        return "err %s: %s; %s" % (verb, error, HELP)
    except Exception as error:  # the control channel never takes the board down
        return "err %s: %r" % (verb, error)


async def control_channel(sim_hal, path):
    """Connect to the host's Unix socket and serve control lines until it goes away."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the unix port takes a raw sockaddr_un: family AF_UNIX (1, little-endian), path, NUL
            sock.connect(b"\x01\x00" + path.encode() + b"\x00")
        except OSError:
            sock.close()
            await asyncio.sleep_ms(200)
            continue
        stream = asyncio.StreamReader(sock)
        writer = asyncio.StreamWriter(sock, {})
        try:
            while True:
                line = await stream.readline()
                if not line:
                    break
                reply = handle(sim_hal, line.decode().strip())
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        sock.close()
        await asyncio.sleep_ms(200)


class RawRepl:
    """MicroPython's raw REPL protocol (pyboard.py / mpremote transport_serial) over a byte
    stream: ctrl-A enters, code then ctrl-D runs it and answers "OK", stdout, 0x04, the
    traceback, 0x04, ">". Raw-paste (ctrl-E A ctrl-A) is declined with "R\\x00"."""

    def __init__(self, write):
        self.write = write
        self.raw = False
        self.code = bytearray()
        self.paste_probe = 0
        self.line = bytearray()
        self.namespace = {"__name__": "__main__"}

    def feed(self, data):
        for byte in data:
            self._byte(byte)

    def _byte(self, byte):
        if self.paste_probe:
            self.paste_probe -= 1
            if self.paste_probe == 0:
                self.write(b"R\x00")  # understood, not supported: the host sends plain raw
            return
        if byte == _CTRL_A:
            self.raw = True
            self.code = bytearray()
            self.write(b"\r\n" + _RAW_BANNER)
            return
        if byte == _CTRL_C:
            self.code = bytearray()
            self.line = bytearray()
            return  # nothing to interrupt: the application keeps running (mpremote "resume")
        if not self.raw:
            self._friendly(byte)
            return
        if byte == _CTRL_B:
            self.raw = False
            self.write(b"\r\nkvitto virtual board\r\n>>> ")
        elif byte == _CTRL_E and not self.code:
            self.paste_probe = 2
        elif byte == _CTRL_D:
            if not self.code:
                # soft reset request: the virtual board keeps its state, as `resume` expects
                self.write(b"soft reboot\r\n" + _RAW_BANNER)
                return
            code = bytes(self.code)
            self.code = bytearray()
            self.write(b"OK")
            self._run(code)
            self.write(b"\x04>")
        else:
            self.code.append(byte)

    def _run(self, code):
        error = None
        try:
            exec(code, self.namespace)
        except BaseException as caught:  # SystemExit too: the console survives it
            error = caught
        self.write(b"\x04")
        if error is not None:
            sys.print_exception(error, sys.stdout)

    def _friendly(self, byte):
        if byte in (10, 13):
            self.write(b"\r\n")
            line = bytes(self.line).decode()
            self.line = bytearray()
            if line.strip():
                try:
                    try:
                        value = eval(line, self.namespace)
                        if value is not None:
                            print(repr(value))
                    except SyntaxError:
                        exec(line, self.namespace)
                except BaseException as error:
                    sys.print_exception(error, sys.stdout)
            self.write(b">>> ")
        elif byte in (8, 127):
            if self.line:
                self.line = self.line[:-1]
                self.write(b"\x08 \x08")
        elif byte >= 32:
            self.line.append(byte)
            self.write(bytes((byte,)))


async def serial_console():
    """The raw REPL on this process's stdin/stdout (the host relays them to a pty)."""
    stdin = sys.stdin.buffer
    repl = RawRepl(sys.stdout.buffer.write)
    stream = asyncio.StreamReader(stdin)
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    while True:
        data = await stream.read(1)  # read(n) would wait for n bytes: take one, then drain
        if not data:
            await asyncio.sleep_ms(1000)  # stdin closed: nobody will ever type again
            continue
        while poller.poll(0):
            more = stdin.read(1)
            if not more:
                break
            data += more
        repl.feed(data)
