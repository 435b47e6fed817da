"""PN532 over I2C (NXP UM0701-02 §6.2.4): the transport a board with `"pn532": {"bus": "i2c"}`
loads, and only that board (device.drivers.pn532_bus imports it by the board file's name).

    from device.drivers.pn532_i2c import I2CTransport
    nfc = PN532(I2CTransport(i2c, irq=irq_pin), reset=rstpd_pin)
"""

import time

from micropython import const

from device.drivers.pn532 import NACK, FrameError, Timeout, bus_error, frame_end, ready_within

_MAX_FRAME = const(274)  # device.drivers.pn532: TFI + 264 data bytes in an extended frame, + 9
_I2C_ADDRESS = const(0x24)  # §6.2.4: 0x48 write / 0x49 read as 8-bit addresses
_I2C_STATUS_READY = const(0x01)  # §6.2.4: first byte of every I2C read is the status byte
_I2C_FIRST_READ = const(40)  # status + most responses in one transaction; longer ones re-read


class I2CTransport:
    """PN532 over I2C (§6.2.4). Every read starts with a status byte; a read that goes past it
    consumes the frame, so a frame longer than the first read is fetched again with a NACK."""

    def __init__(self, i2c, irq=None, addr=_I2C_ADDRESS):
        self._i2c = i2c
        self.irq = irq
        self._addr = addr
        self._buf = bytearray(1 + _MAX_FRAME + 16)
        self._mv = memoryview(self._buf)
        self._status = memoryview(self._buf)[:1]

    def write(self, frame):
        try:
            self._i2c.writeto(self._addr, frame)
        except OSError as error:
            raise bus_error(error)

    def ready(self):
        if self.irq is not None:
            return self.irq.value() == 0  # §6.2.4: P70_IRQ low = response ready
        try:
            self._i2c.readfrom_into(self._addr, self._status)
        except OSError as error:
            raise bus_error(error)
        return self._buf[0] & _I2C_STATUS_READY == _I2C_STATUS_READY

    def read_frame(self):
        """The frame just reported ready, as a memoryview into the transport's buffer."""
        size = _I2C_FIRST_READ
        for _ in range(2):
            try:
                self._i2c.readfrom_into(self._addr, self._mv[: 1 + size])
            except OSError as error:
                raise bus_error(error)
            if self._buf[0] & _I2C_STATUS_READY != _I2C_STATUS_READY:
                raise FrameError("I2C status not ready")
            need = frame_end(self._mv[1:], size)
            if need and need <= size:
                return self._mv[1 : 1 + need]
            if need == 0 or need > _MAX_FRAME + 8:
                return self._mv[1 : 1 + size]  # let parse_frame name what is wrong
            # §6.2.1.4: a NACK makes the PN532 send the same frame again, now read whole
            self.write(NACK)
            size = need
            if not ready_within(self, 50):
                raise Timeout("no frame after NACK")
        raise FrameError("I2C frame longer than announced")

    def wake(self):
        # §6.2.4 / §7.2.11: addressing the PN532 wakes it; the first access may be NAKed
        try:
            self._i2c.writeto(self._addr, b"")
        except OSError:
            pass
        time.sleep_ms(2)
