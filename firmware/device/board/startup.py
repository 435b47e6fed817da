"""What a board does before the app runs: read its board file, open its HAL, read its
configuration; or, when one of them is bad, say why and blink red. Run once a boot
(device.app.start), then dropped with the loaders it alone needs (device.forget).

    from device.board import startup
    board, board_hal, settings, problem = startup.load()   # problem: why config.json is refused
    startup.refuse(board_hal, problem)            # says it, blinks red; never returns on a board

A missing board file has no LED to blink: it is printed and the board waits for the installer.
The serial console stays usable for provisioning throughout. Board layer: imports nothing above.
"""

import asyncio
import os
import time

from micropython import const

from device.board import boards, config

_BLINK_MS = const(500)


def _getenv(name):
    getenv = getattr(os, "getenv", None)  # the unix port has it; the ESP32 port does not
    return getenv(name) if getenv else None


def load():
    """(board, board_hal, settings, problem): settings None and the problem as text when
    config.json is missing or bad, problem None otherwise. A missing or bad board file never
    returns."""
    try:
        board = boards.load(_getenv("KVITTO_BOARD") or "board.json")
    except boards.BoardError as error:
        # without a board file there is no LED to blink: say it and wait for the installer
        print("kvitto: %s" % error)
        while True:
            time.sleep(5)
    if board["hal"] == "sim":  # the unix port: the sim's options come from the environment
        board_hal = boards.open_hal(board, flash=_getenv("KVITTO_FLASH"),
                                    control=_getenv("KVITTO_CONTROL"),
                                    serial=_getenv("KVITTO_SERIAL") == "stdio")
    else:
        board_hal = boards.open_hal(board)
    root = board_hal.fs_root
    try:
        settings = config.load(root + "/config.json" if root else "config.json")
        if settings["role"] not in board["roles"]:
            raise config.ConfigError("config.json: field 'role': board %s supports %s, not %s"
                                     % (board["name"], ", ".join(board["roles"]),
                                        settings["role"]))
    except config.ConfigError as error:
        return board, board_hal, None, str(error)
    return board, board_hal, settings, None


def refuse(board_hal, message):
    """Bad or missing config: say why, blink red, keep the serial console for provisioning."""
    print("kvitto: " + message)
    asyncio.run(_blink(board_hal))


async def _blink(board_hal):
    for coroutine in board_hal.extra_tasks():
        asyncio.create_task(coroutine)
    while True:
        board_hal.led.show("red")
        await asyncio.sleep_ms(_BLINK_MS)
        board_hal.led.show("off")
        await asyncio.sleep_ms(_BLINK_MS)
