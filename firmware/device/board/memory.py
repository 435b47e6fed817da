"""The heap's watch: free memory now, its low-water mark since boot, and whether the device
should shed optional work before an allocation fails (issue #26).

    from device.board import memory
    if memory.low():              # below 12 KiB even after a collection
        ...                       # the app drops tag mode and its log lines (device.app)
    memory.least_free()           # the least free heap seen since boot: for a health record

On an ESP32 without PSRAM MicroPython's heap grows from the RAM that Wi-Fi and TLS use too, so
running low there means taking it from them; the provisioning pre-flight makes that rare
(kvitto.install.preflight), this watch makes it survivable. Board layer: imports nothing of the
device's.
"""

import gc

from micropython import const

_LOW_BYTES = const(12288)  # below this after a collection: shed optional work

_least = [1 << 30]


def free():
    """gc.mem_free() now, remembered if it is the least seen."""
    now = gc.mem_free()
    if now < _least[0]:
        _least[0] = now
    return now


def least_free():
    """The least free heap (bytes) seen by free(), low() or a MemoryError since boot."""
    free()
    return _least[0]


def low(threshold=_LOW_BYTES):
    """True when less than `threshold` bytes are free even after a garbage collection."""
    if free() >= threshold:
        return False
    gc.collect()
    return free() < threshold


def exhausted():
    """A MemoryError was caught: record that the heap ran out, and collect."""
    _least[0] = 0
    gc.collect()
