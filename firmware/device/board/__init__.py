"""The edge of the firmware: board files, the device configuration and the HAL
(docs/architecture.md, The firmware).

    from device.board import boards
    board_hal = boards.open_hal(boards.load("boards/esp32-lock.json"))

Imports nothing from the layers above (drivers, evidence, link, roles, app). Only hal.py imports
`machine` and `network`; boards.open_hal, by the board file's "hal" field, is the one place
device/ opens sim/ (the unix port's simulated board).
"""
