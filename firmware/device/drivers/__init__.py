"""Drivers: the PN532 NFC controller, its transports (I2C, SPI, HSU/UART) and the card protocols
spoken through it (DESIGN.md, Layout).

    from device.drivers import pn532, pn532_bus
    nfc = pn532.PN532(pn532_bus.open_transport("i2c", board_hal.bus("i2c"), irq), reset=reset)

A driver receives its bus and pins as arguments (from device.board.hal) and imports nothing from
the layers above it: no evidence, link, roles or app.
"""
