"""Run one firmware snippet under the unix port and under CPython (with the shims MicroPython
provides natively) and insist on the same output: the pure role modules behave the same.

from app_support import run_both
out = run_both(micropython, "from device.roles.lock import Lock\\nprint('ok')")
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

CPYTHON_PRELUDE = f"""
import sys
sys.path[:0] = [{str(TESTS)!r}, {str(ROOT / "firmware")!r}]
from pn532_support import install_shims
install_shims()
"""

# A fake millisecond clock and recording parts, shared by role scenarios (both interpreters).
PARTS = """
class FakeClock:
    def __init__(self):
        self.now = 1000
    def __call__(self):
        return self.now
    def advance(self, ms):
        self.now += ms

class Line:
    def __init__(self, active=False):
        self.active = active
    def value(self):
        return self.active

class Relay:
    def __init__(self):
        self.state = False
        self.changes = []
    def set(self, on):
        if bool(on) != self.state:
            self.changes.append(bool(on))
        self.state = bool(on)

events = []
def emit(kind, cred, x):
    events.append((kind, cred.hex() if cred else None, x))

def show():
    for event in events:
        print(event[0], event[1], sorted(event[2].items()) if event[2] else None)
    events.clear()
"""


def run_both(micropython, code: str, tmp_path: Path | None = None) -> str:
    code = PARTS + textwrap.dedent(code)
    device_dir = host_dir = None
    if tmp_path is not None:  # each interpreter gets its own files
        device_dir, host_dir = tmp_path / "unix-port", tmp_path / "cpython"
        device_dir.mkdir()
        host_dir.mkdir()
    device_out = micropython(code, cwd=device_dir)
    result = subprocess.run(
        [sys.executable, "-c", CPYTHON_PRELUDE + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=host_dir,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == device_out, "CPython and the unix port disagree"
    return device_out


NEEDS = (
    "evidence/cbor.py",
    "evidence/journal.py",
    "drivers/pn532.py",
    "roles/reader.py",
    "roles/visits.py",
)


def missing_firmware() -> list[str]:
    """Device modules the application needs that have not landed in this checkout."""
    return [name for name in NEEDS if not (ROOT / "firmware" / "device" / name).exists()]


# device.evidence.event (issue "Signed evidence") builds the payload map of FORMATS.md §1; until it
# lands, this stand-in builds the same map with device.evidence.cbor so the app can be tested.
EVENT_STANDIN = """
try:
    from device.evidence import event
    event.build_payload
except (ImportError, AttributeError):
    import sys, device
    from device.evidence import cbor
    class _EventModule:
        pass
    event = _EventModule()
    def build_payload(dev, seq, boot, up, type, prev, t=None, sync=None, cred=None, x=None):
        fields = {0: 1, 1: dev, 2: seq, 3: boot, 4: up, 7: type, 9: prev}
        if t is not None:
            fields[5] = t
            fields[6] = sync
        if cred is not None:
            fields[8] = cred
        if x:
            fields[10] = x
        return cbor.encode(fields)
    event.build_payload = build_payload
    sys.modules["device.evidence.event"] = event
    device.evidence.event = event
"""


def app_prelude(role: str, image: Path, seed: str = "t", tag_mode: bool = False) -> str:
    """A unix-port snippet prelude: sim board on `image`, an App for `role` on a fake clock
    (FakeTicks.advance jumps time for the roles without waiting), helpers to act and read."""
    return (
        EVENT_STANDIN
        + f"""
import asyncio, json, sys
from device.board import boards, config, hal
from device.evidence import identity
from device.app import App
from device.link.clock import Clock
from device.roles.reader import credential_id
from device.evidence import cbor

class FakeTicks:
    def __init__(self):
        import time
        self.base = time.ticks_ms()
        self.jump = 0
    def __call__(self):
        import time
        return time.ticks_add(time.ticks_ms(), self.jump)
    def advance(self, ms):
        self.jump += ms

board = boards.load({str(ROOT / "boards" / "sim.json")!r})
sim = boards.open_hal(board, flash={str(image)!r}, seed={seed.encode()!r})
SALT = bytes(range(16))
settings = config.validate({{
    "device": "{role}-0042", "role": {role!r}, "board": "sim",
    "broker": {{"host": "127.0.0.1", "port": 1}}, "salt": SALT.hex(),
    "org_public_key": "11" * 32, "tag_mode": {tag_mode!r}}})
ticks = FakeTicks()

def cred_of(uid_hex):
    return credential_id(SALT, bytes.fromhex(uid_hex))

def journal_lines(app, first=1):
    out = []
    for seq in range(first, app.journal.next_seq):
        fields = cbor.decode(app.journal.get(seq))
        cred = fields.get(8)
        x = fields.get(10) or {{}}
        x = {{k: v for k, v in x.items() if k not in ("fw",)}}
        out.append("%d %d %s %s %s" % (seq, fields[3], fields[7], cred.hex() if cred else "-",
                                       json.dumps(sorted(x.items())) if x else "-"))
    return out

async def tap(uid_hex, wait_ms=450, kind="badge", hold_ms=200):
    sim.tap(kind, bytes.fromhex(uid_hex), hold_ms=hold_ms)
    await asyncio.sleep_ms(wait_ms)

async def press(name, ms=100):
    sim.set_input(name, True)
    await asyncio.sleep_ms(ms)
    sim.set_input(name, False)
    await asyncio.sleep_ms(100)
"""
    )
