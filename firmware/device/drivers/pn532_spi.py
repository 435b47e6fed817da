"""PN532 over SPI (NXP UM0701-02 §6.2.5): the transport a board with `"pn532": {"bus": "spi"}`
loads, and only that board (device.drivers.pn532_bus imports it by the board file's name).

    from device.drivers.pn532_spi import SPITransport
    nfc = PN532(SPITransport(spi, cs_pin, irq=irq_pin), reset=rstpd_pin)
"""

import time

from micropython import const

from device.drivers.pn532 import bus_error
from device.drivers.pn532_stream import StreamTransport

_MAX_FRAME = const(274)  # device.drivers.pn532: TFI + 264 data bytes in an extended frame, + 9
_SPI_DW = const(0x01)  # §6.2.5: data write, status read, data read
_SPI_SR = const(0x02)
_SPI_DR = const(0x03)


class SPITransport(StreamTransport):
    """PN532 over SPI (§6.2.5): mode 0, LSB first (set on the bus by hal, no bit reversal
    here), CS held low for one whole operation; DW/SR/DR prefix bytes."""

    def __init__(self, spi, cs, irq=None):
        super().__init__()
        self._spi = spi
        self._cs = cs
        self.irq = irq
        self._one = bytearray(1)
        self._out = bytearray(_MAX_FRAME + 1)
        self._cs.value(1)

    def write(self, frame):
        n = len(frame)
        self._out[0] = _SPI_DW
        self._out[1 : 1 + n] = frame
        self._cs.value(0)
        try:
            self._spi.write(memoryview(self._out)[: 1 + n])
        except OSError as error:
            raise bus_error(error)
        finally:
            self._cs.value(1)

    def ready(self):
        if self.irq is not None:
            return self.irq.value() == 0
        self._cs.value(0)
        try:
            self._one[0] = _SPI_SR
            self._spi.write(self._one)
            self._spi.readinto(self._one)
        except OSError as error:
            raise bus_error(error)
        finally:
            self._cs.value(1)
        return self._one[0] & 0x01 == 0x01

    def _fill(self, mv):
        self._spi.readinto(mv)

    def read_frame(self):
        self._cs.value(0)
        try:
            self._one[0] = _SPI_DR
            self._spi.write(self._one)
            return self._collect()
        except OSError as error:
            raise bus_error(error)
        finally:
            self._cs.value(1)

    def wake(self):
        # §7.2.11: NSS low wakes the PN532; it needs about 2 ms before the first byte
        self._cs.value(0)
        time.sleep_ms(2)
        self._cs.value(1)
