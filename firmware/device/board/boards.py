"""Board files (boards/*.json): pins, buses, roles and flash layout as data, validated.

    from device.board import boards
    board = boards.load("boards/esp32-lock.json")   # raises BoardError naming file and field
    print(board["relay"]["pin"], board["flash"]["fs_offset"])

A new board is a new JSON file, never a code change (like esptool's chip table). The checks
themselves are device.board.board_check, loaded only while a board file is validated. Pure module:
runs under the unix port and CPython alike.
"""

import json


class BoardError(ValueError):
    """A board file that cannot drive a board: the message names the file and the field."""


def validate(board, source="<board>"):
    """Check a decoded board file (device.board.board_check); returns it unchanged or raises
    BoardError. The checks are loaded for the call and dropped after it."""
    import device
    from device.board import board_check

    try:
        return board_check.validate(board, source)
    finally:
        device.forget("board.board_check")


def parse(text, source="<board>"):
    """Decode and validate board JSON text."""
    try:
        board = json.loads(text)
    except ValueError as error:
        raise BoardError("%s: not valid JSON (%s)" % (source, error))
    return validate(board, source)


def load(path):
    """Read and validate a board file; every problem is a BoardError naming the file."""
    try:
        with open(path) as file:
            text = file.read()
    except OSError as error:
        raise BoardError("%s: cannot read the board file (%s)" % (path, error))
    return parse(text, path)


def supports(board, role):
    """True when the board lists `role` (validate checked it has the parts the role needs)."""
    return role in board["roles"]
