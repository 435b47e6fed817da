"""CPython side of the signed-evidence tests: the device package importable here too, so pure
modules run under CPython and the unix port with identical results.

    from signing_support import FIRMWARE, VECTORS, device_module, fakes_module
    cbor = device_module("evidence.cbor")
    device_signing = fakes_module("device_signing")   # tests/fakes/: sign1 in one call
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
FAKES = TESTS / "fakes"
VECTORS = TESTS / "vectors"

for _path in (FIRMWARE, FAKES):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

if "micropython" not in sys.modules:
    # CPython lacks MicroPython's `micropython` module; the pure device modules use only const().
    _stand_in = ModuleType("micropython")
    _stand_in.const = lambda expr: expr  # type: ignore[attr-defined]
    sys.modules["micropython"] = _stand_in


def device_module(name: str) -> ModuleType:
    """firmware/device/<layer>/<name>.py (name: "evidence.cbor") imported under CPython."""
    return importlib.import_module(f"device.{name}")


def fakes_module(name: str) -> ModuleType:
    """tests/fakes/<name>.py (test code that uses the device modules) imported under CPython."""
    return importlib.import_module(name)
