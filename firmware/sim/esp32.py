"""The unix port's stand-in for MicroPython's `esp32` module, so the code an installer's tools
run on a board (provisioning's pre-flight, the firmware's memory figures) runs unchanged on a
virtual board. sim.hal_sim.SimHal installs it as `esp32` (sys.modules); never in a board image.

    import esp32
    esp32.idf_heap_info(esp32.HEAP_DATA)    # [(total, free, largest_free, min_free), ...]

Heap (issue #26; `idf_heap_info`, `HEAP_DATA`, `HEAP_EXEC`): ESP-IDF's own heap, the RAM outside
MicroPython's GC heap that Wi-Fi and TLS allocate from, as the real function reports it: one
4-tuple per heap region that has the capabilities asked for. A virtual board's figures come from
`KVITTO_IDF_HEAP` (set by kvitto.sim.board.VirtualBoard): "INTERNAL_KIB" free, or
"INTERNAL_KIB,PSRAM_KIB" with a PSRAM region of that size, all of it free; so a test can play
a plain ESP32 whose internal RAM is nearly gone, or a board with PSRAM. Without it: 110 KiB
internal free, no PSRAM.

Partitions (`esp32.Partition`, issue #22) are the fleet's: their own module in sim/, hooked in
by `install()` below when present; this file's heap part does not touch them.
"""

import os
import sys

from micropython import const

# ESP-IDF's heap capability bits, as MicroPython's esp32 module names them (esp_heap_caps.h)
HEAP_EXEC = const(1)  # MALLOC_CAP_EXEC
HEAP_DATA = const(4)  # MALLOC_CAP_8BIT

_DEFAULT_INTERNAL_KIB = const(110)
_REGION_BYTES = const(0x10000)  # an ESP32's internal DRAM comes in regions of up to ~100 KiB


def _configured():
    """(internal free bytes, PSRAM free bytes) from KVITTO_IDF_HEAP."""
    text = os.getenv("KVITTO_IDF_HEAP") if hasattr(os, "getenv") else None
    parts = (text or str(_DEFAULT_INTERNAL_KIB)).split(",")
    internal = int(parts[0]) * 1024
    psram = int(parts[1]) * 1024 if len(parts) > 1 else 0
    return internal, psram


def idf_heap_info(capabilities):
    """One (total, free, largest free block, least free since boot) per ESP-IDF heap region
    with `capabilities`, as esp32.idf_heap_info: internal DRAM in regions of 64 KiB, then the
    PSRAM region when the board has one (data only: PSRAM is not executable)."""
    internal, psram = _configured()
    regions = []
    while internal > 0:
        free = min(internal, _REGION_BYTES)
        regions.append((_REGION_BYTES + 2048, free, free - 16 if free > 16 else 0, free))
        internal -= free
    if psram and capabilities & HEAP_DATA and not capabilities & HEAP_EXEC:
        regions.append((psram, psram, psram - 16, psram))
    return regions


_ballast = None


def leave_gc_heap():
    """A plain ESP32's GC heap on the 64-bit unix port (`KVITTO_GC_HEAP_KIB`, set by
    kvitto.sim.board.VirtualBoard): the unix port's own overhead (64-bit objects, the simulator's
    modules) is larger than a board's and fragments `-X heapsize` unevenly, so a small heap alone
    does not make a small board that starts every time; instead a large heap is taken down to
    about this much free by a kept ballast, the way a real board has what ESP-IDF left it."""
    global _ballast
    text = os.getenv("KVITTO_GC_HEAP_KIB") if hasattr(os, "getenv") else None
    if not text:
        return
    import gc

    gc.collect()
    left = int(text) * 1024
    size = 4096
    while size >= 64 and gc.mem_free() > left:
        try:
            _ballast = (_ballast, bytearray(size))  # pairs: no ever larger block to find
        except MemoryError:
            size //= 4


def install():
    """Make `import esp32` find this module on the unix port (sim.hal_sim.SimHal calls it)."""
    sys.modules["esp32"] = sys.modules[__name__]
