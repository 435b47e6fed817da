"""Simulated machine-like buses and pins attached to one simulated PN532 (unix port + CPython).

    model = PN532Sim()
    i2c = SimI2C(model)                      # writeto / readfrom_into, clock stretching
    nfc = PN532(I2CTransport(i2c, irq=model.irq), reset=model.rstpd)  # device.drivers.pn532_i2c

Each bus logs what crossed it (`.log`: list of (op, bytes)) so tests check exact bytes.
"""

_ENODEV = 19  # errno for "no ACK on the address" as machine.I2C raises it
_ETIMEDOUT = 116  # errno machine.I2C raises when SCL is held longer than its timeout
_SPI_DW = 0x01
_SPI_SR = 0x02
_SPI_DR = 0x03


class SimPin:
    """A machine.Pin look-alike: value(), irq(handler, trigger), and a `getter` for lines the
    model drives (P70_IRQ) or an `on_change` for lines the host drives (RSTPD_N, CS)."""

    IN = 1
    OUT = 3
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, value=1, getter=None, on_change=None):
        self._value = value
        self._getter = getter
        self._on_change = on_change
        self._handler = None
        self._trigger = 0
        self.changes = []

    def value(self, v=None):
        if v is None:
            return self._getter() if self._getter is not None else self._value
        v = 1 if v else 0
        old = self._value
        self._value = v
        self.changes.append(v)
        if self._on_change is not None and old != v:
            self._on_change(v)
        return None

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=IRQ_FALLING):
        self._handler = handler
        self._trigger = trigger

    def edge(self, falling):
        """Called by the model when it moves the line."""
        if self._handler is None:
            return
        if (falling and self._trigger & SimPin.IRQ_FALLING) or (
            not falling and self._trigger & SimPin.IRQ_RISING
        ):
            self._handler(self)


def reverse_bits(b):
    b = ((b & 0xF0) >> 4) | ((b & 0x0F) << 4)
    b = ((b & 0xCC) >> 2) | ((b & 0x33) << 2)
    return ((b & 0xAA) >> 1) | ((b & 0x55) << 1)


class SimI2C:
    """machine.I2C over the model (§6.2.4 of the PN532 manual): writes carry one frame; each
    read transaction starts with the status byte; reading past it consumes the frame."""

    def __init__(self, model, timeout_us=50000, addr=0x24):
        self.model = model
        self.timeout_us = timeout_us
        self.addr = addr
        self.log = []

    def _check(self, addr):
        if addr != self.addr:
            raise OSError(_ENODEV)
        if self.model.stretch_us > self.timeout_us:
            raise OSError(_ETIMEDOUT)
        if self.model.asleep:
            # the address match wakes it; this first access is NAKed
            self.model.wake("i2c")
            raise OSError(_ENODEV)

    def scan(self):
        return [] if self.model.asleep else [self.addr]

    def writeto(self, addr, buf, stop=True):
        self._check(addr)
        data = bytes(buf)
        self.log.append(("w", data))
        if data:
            self.model.receive(data)
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        self._check(addr)
        n = len(buf)
        frame = self.model.peek()
        if frame is None:
            for i in range(n):
                buf[i] = 0
            self.log.append(("r", bytes(n)))
            return
        buf[0] = 0x01
        for i in range(1, n):
            buf[i] = frame[i - 1] if i - 1 < len(frame) else 0
        self.log.append(("r", bytes(buf)))
        if n > 1:
            self.model.consume()

    def readfrom(self, addr, n, stop=True):
        buf = bytearray(n)
        self.readfrom_into(addr, buf)
        return bytes(buf)


class SimSPI:
    """machine.SPI over the model (§6.2.5): CS low, then DW + frame, SR -> status, or DR ->
    the frame's bytes. `firstbit` other than LSB scrambles every byte, as on a real bus."""

    LSB = 1
    MSB = 0

    def __init__(self, model, firstbit=1):
        self.model = model
        self.firstbit = firstbit
        self.cs = SimPin(1, on_change=self._cs_change)
        self.log = []
        self._selected = False
        self._mode = None
        self._written = bytearray()
        self._cursor = 0
        self._waking = False

    def _wire(self, b):
        return b if self.firstbit == SimSPI.LSB else reverse_bits(b)

    def _cs_change(self, level):
        if level == 0:
            self._selected = True
            self._mode = None
            self._written = bytearray()
            self._cursor = 0
            self._waking = self.model.asleep
            if self.model.asleep:
                self.model.wake("spi")  # NSS low wakes it; bytes in this window are lost
            return
        self._selected = False
        if self._waking:
            self._waking = False
        elif self._mode == _SPI_DW and self._written:
            self.log.append(("dw", bytes(self._written)))
            self.model.receive(bytes(self._written))
        elif self._mode == _SPI_DR and self._cursor:
            self.model.consume()
        self._mode = None

    def write(self, buf):
        if not self._selected:
            return
        for raw in bytes(buf):
            b = self._wire(raw)
            if self._mode is None:
                self._mode = b
            elif self._mode == _SPI_DW:
                self._written.append(b)

    def readinto(self, buf, write=0):
        n = len(buf)
        if not self._selected:
            for i in range(n):
                buf[i] = 0xFF
            return
        if self._mode == _SPI_SR:
            status = 0x01 if self.model.peek() is not None else 0x00
            for i in range(n):
                buf[i] = self._wire(status)
            return
        frame = self.model.peek() if self._mode == _SPI_DR else None
        for i in range(n):
            if frame is not None and self._cursor < len(frame):
                buf[i] = self._wire(frame[self._cursor])
            else:
                buf[i] = 0
            self._cursor += 1
        if self._mode == _SPI_DR:
            self.log.append(("dr", bytes(buf)))

    def read(self, n, write=0):
        buf = bytearray(n)
        self.readinto(buf, write)
        return bytes(buf)

    def write_readinto(self, out, buf):
        self.write(out)
        self.readinto(buf)


class SimUART:
    """machine.UART over the model (§6.2.3 HSU): a byte stream both ways; the model pushes
    ACK and response frames unasked."""

    def __init__(self, model):
        self.model = model
        self._rx = bytearray()
        self.log = []

    def write(self, buf):
        data = bytes(buf)
        self.log.append(("w", data))
        self.model.receive_stream(data)
        return len(data)

    def _pull(self):
        while True:
            frame = self.model.peek()
            if frame is None:
                return
            self._rx.extend(frame)
            self.model.consume()

    def any(self):
        self._pull()
        return len(self._rx)

    def read(self, n=None):
        self._pull()
        if not self._rx:
            return None
        if n is None or n >= len(self._rx):
            data = bytes(self._rx)
            self._rx = bytearray()
        else:
            data = bytes(self._rx[:n])
            self._rx = self._rx[n:]
        return data

    def readinto(self, buf, n=None):
        want = len(buf) if n is None else min(n, len(buf))
        data = self.read(want)
        if not data:
            return None
        for i in range(len(data)):
            buf[i] = data[i]
        return len(data)
