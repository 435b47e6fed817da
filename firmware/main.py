"""Entry point: load the board and config, pick the role, start the asyncio loop.

    micropython firmware/main.py --selftest   # unix port: report the platform and exit
    KVITTO_BOARD=boards/sim.json KVITTO_FLASH=/tmp/b1.img micropython firmware/main.py
    # on a board: runs from flash at every start, after boot.py

A missing or bad board.json / config.json is printed and shown as a red blink (device.app), never
a crash loop; the REPL stays reachable for provisioning.
"""

import sys

import device


def selftest():
    print("kvitto firmware", device.VERSION, "wire format", device.WIRE_FORMAT)
    print("platform", sys.platform, "micropython", ".".join(str(p) for p in sys.implementation.version[:3]))


def main():
    if "--selftest" in sys.argv:
        selftest()
        return
    from device import app

    app.start()


main()
