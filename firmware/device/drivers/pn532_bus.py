"""The PN532 transport for the bus a board file names (`"pn532": {"bus": "i2c"}`): each transport
is its own module, and this one imports only the board's, so a board carries one bus's code on its
heap, not three. Apart from device.drivers.pn532, which the transports import for its frames.

    from device.drivers import pn532, pn532_bus
    nfc = pn532.PN532(pn532_bus.open_transport("i2c", board_hal.bus("i2c"), irq), reset=reset)
"""

from device.drivers.pn532 import PN532Error


def open_transport(kind, bus, irq=None, cs=None):
    """The transport for a board file's `pn532.bus` ("i2c", "spi", "uart") over the bus hal
    built; SPI needs its CS pin (`cs`, or the bus's own `.cs` as the simulator offers). Each
    transport is its own module, imported here only for the bus the board names: a board
    carries one bus's code on its heap, not three."""
    if kind == "i2c":
        from device.drivers.pn532_i2c import I2CTransport

        return I2CTransport(bus, irq)
    if kind == "spi":
        from device.drivers.pn532_spi import SPITransport

        return SPITransport(bus, cs if cs is not None else bus.cs, irq)
    if kind in ("uart", "hsu"):
        from device.drivers.pn532_uart import UARTTransport

        return UARTTransport(bus)
    raise PN532Error("no PN532 transport for bus %r" % (kind,))
