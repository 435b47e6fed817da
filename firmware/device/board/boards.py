"""Board files (boards/*.json): pins, buses, roles and flash layout as data, validated.

    from device.board import boards
    board = boards.load("boards/esp32-lock.json")   # raises BoardError naming file and field
    print(board["relay"]["pin"], board["flash"]["fs_offset"])

A new board is a new JSON file, never a code change (like esptool's chip table). The checks
themselves are device.board.board_check, loaded only while a board file is validated. Pure module:
runs under the unix port and CPython alike.
"""

import json

from device.board.errors import BoardError


def validate(board, source="<board>"):
    """Check a decoded board file (device.board.board_check); returns it unchanged or raises
    BoardError. The checks are loaded for the call and dropped after it."""
    import device
    from device.board import board_check

    try:
        return board_check.validate(board, source)
    finally:
        device.forget("device.board.board_check")


def load(path):
    """Read, decode and validate a board file; every problem is a BoardError naming the file.
    The partition table is checked and dropped: it is the flasher's (kvitto flash), and on the
    board esp32.Partition reads it from flash."""
    try:
        with open(path) as file:
            text = file.read()
    except OSError as error:
        raise BoardError("%s: cannot read the board file (%s)" % (path, error))
    try:
        board = json.loads(text)
    except ValueError as error:
        raise BoardError("%s: not valid JSON (%s)" % (path, error))
    board = validate(board, path)
    board.pop("partitions", None)
    return board


def open_hal(board, **sim_options):
    """The HAL the validated board names: device.board.hal.MachineHal for `"hal": "machine"`,
    the unix port's simulated board for `"hal": "sim"` (sim_options go to it). The one place
    device/ reaches sim/: a board image has no sim/ and its board file never takes that branch.
    Here rather than in hal.py, which sim.hal_sim imports for the HAL's names."""
    if board["hal"] == "sim":
        from sim import hal_sim  # unix port only; never in a board image

        return hal_sim.SimHal(board, **sim_options)
    from device.board.hal import MachineHal

    return MachineHal(board)
