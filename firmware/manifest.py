"""Freeze manifest: kvitto's `device` package frozen into a board's MicroPython firmware.

    make -C ports/esp32 BOARD=ESP32_GENERIC BOARD_VARIANT=OTA \
        FROZEN_MANIFEST=/path/to/kvitto/firmware/manifest.py
    kvitto flash --firmware build-ESP32_GENERIC-OTA/firmware.bin ... # with an image made by
    kvitto image --frozen ...                                        # (no device/ on littlefs)

The plain ESP32 boards (boards/esp32-*.json with `"build": "frozen"`) name this build as
`ESP32_GENERIC-OTA`: MicroPython's ESP32_GENERIC board in its OTA variant, whose partition table
(partitions-4MiB-ota.csv: two 1.5 MiB app slots, a 960 KiB vfs) is the board file's. The app
must fit one slot: `kvitto flash` refuses a larger one, and a device refuses an update larger
than its other slot (`size`).

Frozen, the bytecode, strings and constants (the Ed25519 comb table) stay in flash; loaded from
.mpy files on the filesystem, as a stock firmware must, they take the heap: bench/device.py
measures both ("rom" and "fs"). `kvitto image --frozen` leaves device/ off the filesystem, where
it would shadow the frozen copy (sys.path looks in / before .frozen). sim/ is never frozen.
"""

include("$(PORT_DIR)/boards/manifest.py")  # type: ignore  # noqa: F821  (manifest builtin)
package("device")  # type: ignore  # noqa: F821  (firmware/device, its subpackages recursively)
