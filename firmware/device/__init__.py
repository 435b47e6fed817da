"""The kvitto device package: one subpackage per layer, one module per concern
(docs/architecture.md, The firmware).

    import device
    print(device.VERSION)
    device.forget("device.board.board_check")   # run once: its functions leave the heap
"""

import sys

VERSION = "0.1.0"
WIRE_FORMAT = 1


def forget(name):
    """Drop the module `name` (e.g. "device.board.board_check") so the garbage collector takes
    its functions and tables back: for code that runs once at boot or on a rare command (board
    and config checks). The next import loads it again. The full dotted name is the module's
    own, already interned: a shorter one would be one more name on the heap for good."""
    sys.modules.pop(name, None)
    package, _, leaf = name.rpartition(".")
    owner = sys.modules.get(package)
    if owner is not None:  # the attribute the import set on its package keeps the module alive
        owner.__dict__.pop(leaf, None)
