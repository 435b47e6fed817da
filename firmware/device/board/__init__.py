"""The edge of the firmware: board files, the device configuration and the HAL (DESIGN.md, Layout).

    from device.board import boards, hal
    board_hal = boards.open_hal(boards.load("boards/esp32-lock.json"))

Imports nothing from the layers above (drivers, evidence, link, roles, app). Only hal.py imports
`machine` and `network`; the board file's "hal" field is the one place sim/ is chosen.
"""
