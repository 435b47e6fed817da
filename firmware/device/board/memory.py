"""The heap's watch: free memory now, its low-water mark since boot, and whether the device
should shed optional work before an allocation fails (issue #26).

    from device.board import memory
    if memory.low():              # below 12 KiB even after a collection
        ...                       # the app drops tag mode and its log lines (device.app)
    memory.least_free()           # the least free heap seen since boot: for a health record
    memory.settle()               # once, when the app starts: garbage goes while it is young

On an ESP32 without PSRAM MicroPython's heap grows from the RAM that Wi-Fi and TLS use too, so
running low there means taking it from them; the provisioning pre-flight makes that rare
(kvitto.install.preflight), this watch makes it survivable. Board layer: imports nothing of the
device's.
"""

import gc
import sys

from micropython import const

_LOW_BYTES = const(12288)  # below this after a collection: shed optional work
_EVERY_WORDS = const(2048)  # settle(): collect after this many words are allocated

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


def settle():
    """Collect now, and from now on after every 2048 words allocated (8 KiB on an ESP32, 16 on
    the 64-bit unix port), not only when an allocation finds no room (gc.threshold). A
    signature leaves some 1.4 MB of spent integers behind it; collected only when the heap is
    full, the objects that stay (a record, a packet, a file) land between the holes they leave
    and the heap ends up too fragmented for a 300-byte block with 11 KiB free. Collected young,
    they are packed low. The tag role's least heap on the unix port, measured before the bench
    acknowledged events: 206 KiB without, 198 with (bench/device.py); a signature takes about a
    third longer there."""
    gc.collect()
    gc.threshold(_EVERY_WORDS * (8 if sys.maxsize >> 32 else 4))
