"""The kvitto device package: one module per concern (see DESIGN.md, Layout).

    import device
    print(device.VERSION)
    device.forget("board_check")   # a module needed once: its functions leave the heap
"""

import sys

VERSION = "0.1.0"
WIRE_FORMAT = 1


def forget(name):
    """Drop the submodule device.`name` so the garbage collector takes its functions and tables
    back: for code that runs once at boot or on a rare command (board and config checks). The
    next import loads it again."""
    sys.modules.pop("device." + name, None)
    globals().pop(name, None)
