"""Pre-flight: before a board is provisioned (or right after `kvitto flash --check`), ask it over
its serial console how much memory it has and refuse, in one line, a board on which the
configured role would run out of it.

    report = preflight(console, role="tag", board=load_board("esp32s3-devkitc"), tls=True)
    print(report.line())          # what was found and what the role needs; KvittoError if short

What the board is asked (mpremote's raw REPL, no reset): MicroPython's version and machine,
`gc.mem_free()` and `gc.mem_alloc()`, `micropython.mem_info()` (its largest free block),
`esp32.idf_heap_info(esp32.HEAP_DATA)` (ESP-IDF's own heap: internal RAM regions, and PSRAM when
there is some) and where the `device` package comes from (frozen into the firmware, or .mpy files
on the filesystem as with a stock MicroPython: its `__path__`). A virtual board answers the same questions
(firmware/sim/esp32.py).

The rule. On an ESP32 MicroPython's garbage-collected heap grows from the same internal RAM that
Wi-Fi and TLS need (ESP-IDF allocates their buffers outside the GC heap), unless the board has
PSRAM, where MicroPython puts its heap. So the heap a role can count on is
`gc.mem_free()` plus, without PSRAM, what ESP-IDF has free beyond the Wi-Fi and TLS reserve; and
ESP-IDF itself must keep that reserve free in internal RAM in any case.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kvitto.errors import KvittoError

if TYPE_CHECKING:
    from kvitto.install.console import DeviceConsole
    from kvitto.install.image import Board

# The heap each role needs on a 32-bit MicroPython (bench/device.py's bounds: its 64-bit least
# heap less what the 32-bit build was measured to save), by where the firmware's code is:
# "stock" = .mpy files on the filesystem, their bytecode loaded into the heap (stock
# MicroPython; the bench's summary line); "frozen" = device/ frozen into the firmware
# (manifest.py): the tag's "frozen, its names in flash" bound, lock and alarm that plus their
# extra data heap on the 64-bit port (bench rows "rom", column "role"). Measured 2026-12-08,
# every event acknowledged by a signed command the device verifies, as in the field.
ROLE_HEAP_KIB = {
    "stock": {"tag": 98, "lock": 108, "alarm": 99},
    "frozen": {"tag": 49, "lock": 57, "alarm": 49},
}
HEAP_MARGIN_KIB = 8  # GC fragmentation and a longer MQTT packet than the bench's
# ESP-IDF's own RAM, outside the GC heap (issue #26: "roughly 40-50 KB each")
WIFI_RESERVE_KIB = 45
TLS_RESERVE_KIB = 50
PSRAM_REGION = 1024 * 1024  # an IDF heap region this large is PSRAM: internal RAM is < 200 KiB
MIN_MICROPYTHON = (1, 23, 0)  # the `vfs` module, asyncio's current API
RECOMMENDED_BOARD = "esp32s3-devkitc"

PROBE = """
import gc, json, sys, micropython
gc.collect()
micropython.mem_info()
info = {"version": list(sys.implementation.version[:3]),
        "machine": getattr(sys.implementation, "_machine", ""),
        "free": gc.mem_free(), "alloc": gc.mem_alloc(), "idf": None, "device": None}
try:
    import esp32
    info["idf"] = [list(region) for region in esp32.idf_heap_info(esp32.HEAP_DATA)]
except ImportError:
    pass
try:
    import device
    info["device"] = getattr(device, "__path__", "")  # where the import found the package
except ImportError:
    pass
print(json.dumps(info))
"""
_MAX_FREE = re.compile(r"max free sz:\s*(\d+)")
_GC_BLOCK_BYTES = 16  # 32-bit MicroPython; the 64-bit unix port has 32 (the figure is a hint)


@dataclass
class Preflight:
    """What the board reported, and the verdict for the role."""

    port: str
    role: str
    version: str
    firmware: str  # "stock" or "frozen"
    psram_kib: int
    gc_free_kib: int
    gc_total_kib: int
    largest_free_kib: int | None
    idf_free_kib: int
    reserve_kib: int
    room_kib: int
    need_kib: int
    ok: bool
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        found = (
            f"MicroPython {self.version}, {self.firmware} firmware, "
            + (f"PSRAM {self.psram_kib} KiB" if self.psram_kib else "no PSRAM")
            + f", gc.mem_free {self.gc_free_kib} KiB, ESP-IDF heap {self.idf_free_kib} KiB free"
        )
        if self.ok:
            return (
                f"{self.port}: pre-flight ok for {self.role}: {found}; {self.room_kib} KiB of "
                f"heap for a role that needs {self.need_kib}"
            )
        return f"{self.port}: pre-flight refused for {self.role}: {found}; {self.problem}"


def firmware_kind(device_path: str | None) -> str | None:
    """Where the board's `device` package comes from, by its `__path__` (the sys.path entry the
    import matched, then /device; a frozen module's `__file__` has no such prefix): "frozen" in
    the firmware (".frozen/device"; or a ROMFS partition, "/rom/device": its code stays in
    flash too), "stock" (.mpy files on the filesystem), None (not there)."""
    if device_path is None:
        return None
    return "frozen" if device_path.startswith((".frozen", "/rom")) else "stock"


def judge(
    report: dict[str, Any], role: str, port: str, board: Board | None, wifi: bool, tls: bool
) -> Preflight:
    """The verdict on a board's answer to PROBE (pure: the tests feed it answers too)."""
    try:
        version = tuple(int(part) for part in report["version"][:3])
        free, alloc = int(report["free"]), int(report["alloc"])
        regions = [tuple(int(v) for v in region[:4]) for region in report.get("idf") or []]
    except (KeyError, TypeError, ValueError):
        raise KvittoError(f"{port}: the board's memory report is unreadable: {report!r}") from None
    kind = firmware_kind(report.get("device"))
    internal = sum(region[1] for region in regions if region[0] < PSRAM_REGION)
    psram = sum(region[0] for region in regions if region[0] >= PSRAM_REGION)
    if free + alloc >= PSRAM_REGION:  # the GC heap itself is in PSRAM (a SPIRAM build)
        psram = max(psram, free + alloc)
    reserve = (WIFI_RESERVE_KIB if wifi else 0) + (TLS_RESERVE_KIB if tls else 0)
    internal_kib = internal // 1024
    # without PSRAM the GC heap grows into ESP-IDF's free RAM, less what Wi-Fi and TLS need
    room = free // 1024 + (0 if psram else max(0, internal_kib - reserve))
    need = ROLE_HEAP_KIB[kind or "stock"][role] + HEAP_MARGIN_KIB
    largest = None
    match = _MAX_FREE.search(report.get("mem_info", ""))
    if match:
        largest = int(match.group(1)) * _GC_BLOCK_BYTES // 1024
    result = Preflight(
        port=port, role=role, version=".".join(map(str, version)), firmware=kind or "none",
        psram_kib=psram // 1024, gc_free_kib=free // 1024, gc_total_kib=(free + alloc) // 1024,
        largest_free_kib=largest, idf_free_kib=internal_kib, reserve_kib=reserve,
        room_kib=room, need_kib=need, ok=False,
    )  # fmt: skip
    download = board.data.get("firmware", {}).get("download") if board is not None else None
    stock = download or "ESP32_GENERIC_S3"
    if version < MIN_MICROPYTHON:
        wanted = ".".join(map(str, MIN_MICROPYTHON))
        result.problem = (
            f"kvitto needs MicroPython {wanted} or newer: flash {stock} from micropython.org"
        )
    elif kind is None:
        result.problem = "the kvitto firmware is not on the board: `kvitto flash` it first"
    elif internal_kib < reserve:
        result.problem = (
            f"ESP-IDF has {internal_kib} KiB of internal RAM free, Wi-Fi and TLS need "
            f"{reserve}: use a board with PSRAM ({RECOMMENDED_BOARD}) and its stock firmware"
        )
    elif room < need:
        expected = board.data.get("psram", 0) // 1024 if board is not None else 0
        if expected and not psram:
            instead = (
                f"board {board.name if board else '?'} has {expected} KiB of PSRAM but this "
                f"firmware does not use it: flash {stock}"
            )
        elif kind == "stock":
            instead = (
                f"flash the frozen build (firmware/manifest.py, `kvitto image --frozen`) or use "
                f"a board with PSRAM ({RECOMMENDED_BOARD}, stock firmware)"
            )
        else:
            instead = f"use a board with PSRAM ({RECOMMENDED_BOARD})"
        result.problem = (
            f"{room} KiB of heap for MicroPython (Wi-Fi and TLS keep {reserve} KiB of "
            f"ESP-IDF's), the {role} role needs {need} KiB on {kind} firmware: {instead}"
        )
    else:
        result.ok = True
    return result


def preflight(
    console: DeviceConsole,
    role: str,
    board: Board | None = None,
    wifi: bool = True,
    tls: bool = False,
) -> Preflight:
    """Ask the board (PROBE) and judge; KvittoError with the one-line verdict when it is short."""
    report = console.run(PROBE)
    if not isinstance(report, dict):
        raise KvittoError(f"{console.port}: the board's memory report is unreadable: {report!r}")
    report["mem_info"] = getattr(console, "last_output", "")
    result = judge(report, role, console.port, board, wifi, tls)
    if not result.ok:
        raise KvittoError(result.line())
    return result
