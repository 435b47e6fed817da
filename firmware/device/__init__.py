"""The kvitto device package: one subpackage per layer, one module per concern
(docs/architecture.md, The firmware).

    import device
    print(device.VERSION)
    device.forget("board.board_check")   # a module needed once: its functions leave the heap
"""

import sys

VERSION = "0.1.0"
WIRE_FORMAT = 1


def forget(name):
    """Drop the submodule device.`name` (e.g. "board.board_check") so the garbage collector takes
    its functions and tables back: for code that runs once at boot or on a rare command (board
    and config checks). The next import loads it again."""
    sys.modules.pop("device." + name, None)
    package, _, leaf = name.rpartition(".")
    owner = sys.modules.get("device." + package) if package else None
    # the attribute the import set on its package, which would keep the module alive
    (owner.__dict__ if owner is not None else globals()).pop(leaf, None)
