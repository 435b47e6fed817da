"""Frame collection shared by the PN532's byte-stream transports, SPI and HSU
(device.drivers.pn532_spi, device.drivers.pn532_uart); an I2C board never loads it.

    class SPITransport(StreamTransport):
        def _fill(self, mv): self._spi.readinto(mv)      # then read_frame() -> self._collect()
"""

from micropython import const

from device.drivers.pn532 import FrameError, frame_end

_START1 = const(0x00)  # UM0701-02 §6.2.1: start code 00 FF
_START2 = const(0xFF)
_MAX_FRAME = const(274)  # device.drivers.pn532: TFI + 264 data bytes in an extended frame, + 9


class StreamTransport:
    """Shared frame collection for SPI and HSU: read a byte at a time until the start code,
    then the header, then exactly the rest of the frame."""

    def __init__(self):
        self._buf = bytearray(_MAX_FRAME + 40)
        self._mv = memoryview(self._buf)

    def _fill(self, mv):
        raise NotImplementedError

    def _collect(self):
        n = 0
        limit = len(self._buf)
        # skip garbage and preamble bytes until 00 FF, keep the 00 FF
        while True:
            if n >= 40:
                raise FrameError("no start code within 40 bytes")
            self._fill(self._mv[n : n + 1])
            n += 1
            if n >= 2 and self._buf[n - 2] == _START1 and self._buf[n - 1] == _START2:
                break
        self._buf[0] = _START1
        self._buf[1] = _START2
        n = 2
        self._fill(self._mv[2:4])
        n = 4
        need = frame_end(self._mv, n)
        if need == 0:  # extended header: three more bytes give the length
            self._fill(self._mv[4:7])
            n = 7
            need = frame_end(self._mv, n)
        if need > limit:
            raise FrameError("frame of %d bytes" % need)
        if need > n:
            self._fill(self._mv[n:need])
        return self._mv[:need]
