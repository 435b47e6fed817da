"""PN532 over HSU, its UART (NXP UM0701-02 §6.2.3): the transport a board with
`"pn532": {"bus": "uart"}` loads, and only that board (device.drivers.pn532_bus imports it
by the board file's name).

    from device.drivers.pn532_uart import UARTTransport
    nfc = PN532(UARTTransport(uart), reset=rstpd_pin)
"""

import time

from device.drivers.pn532 import Timeout, bus_error
from device.drivers.pn532_stream import StreamTransport

# §6.2.3 HSU wake-up: 0x55 0x55 then enough zeros for the PN532 to wake (> 1 ms at 115200)
HSU_WAKEUP = b"\x55\x55" + bytes(14)


class UARTTransport(StreamTransport):
    """PN532 over HSU (§6.2.3), 115200 8N1; the PN532 pushes ACK and response unasked."""

    def __init__(self, uart, timeout_ms=100):
        super().__init__()
        self._uart = uart
        self.irq = None
        self._timeout_ms = timeout_ms

    def write(self, frame):
        try:
            self._uart.write(frame)
        except OSError as error:
            raise bus_error(error)

    def ready(self):
        return self._uart.any() > 0

    def _fill(self, mv):
        got = 0
        start = time.ticks_ms()
        while got < len(mv):
            n = self._uart.readinto(mv[got:])
            if n:
                got += n
            elif time.ticks_diff(time.ticks_ms(), start) > self._timeout_ms:
                raise Timeout("HSU frame incomplete")
            else:
                time.sleep_ms(1)

    def read_frame(self):
        return self._collect()

    def drain(self):
        while self._uart.any():
            self._uart.read()

    def wake(self):
        self.write(HSU_WAKEUP)
        time.sleep_ms(2)
