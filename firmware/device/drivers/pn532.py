"""PN532 NFC controller: frames and commands (NXP UM0701-02); transports in pn532_i2c/_spi/_uart,
the one for a board's bus picked by device.drivers.pn532_bus.

    nfc = PN532(pn532_bus.open_transport("i2c", i2c, irq=irq_pin), reset=rstpd_pin)
    nfc.begin()                                  # SAMConfiguration + RFConfiguration
    target = pn532_diag.list_passive_target(nfc)  # InListPassiveTarget: a Target, or None

The driver never builds a bus: `hal` hands it a `machine.I2C`/`SPI`/`UART` (or the simulator's
buses). Frames are pure functions (`frame_into`, `parse_frame`) so they run under CPython too.
Card protocols on top of InDataExchange (APDUs, NDEF) are device.drivers.cards, loaded when
needed; commands only bring-up and tests send (PowerDown, RF field, blocking searches)
device.drivers.pn532_diag.
"""

import asyncio
import time

from micropython import const

# --- frame bytes (UM0701-02 §6.2.1) -------------------------------------------------------
_PREAMBLE = const(0x00)
_START1 = const(0x00)
_START2 = const(0xFF)
_POSTAMBLE = const(0x00)
_TFI_HOST = const(0xD4)  # host -> PN532
_TFI_PN532 = const(0xD5)  # PN532 -> host
_TFI_ERROR = const(0x7F)  # §6.2.1.5: application-level error frame
_MAX_BODY = const(265)  # §6.2.1.2: TFI + up to 264 data bytes (extended frame)
_MAX_FRAME = const(_MAX_BODY + 9)

# §6.2.1.3 / §6.2.1.4
ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"

# --- command codes (UM0701-02 §7) ----------------------------------------------------------
_CMD_GET_FIRMWARE_VERSION = const(0x02)
_CMD_SAM_CONFIGURATION = const(0x14)
_CMD_RF_CONFIGURATION = const(0x32)
_CMD_IN_DATA_EXCHANGE = const(0x40)
_CMD_IN_RELEASE = const(0x52)
# InListPassiveTarget (0x4A) is sent by device.roles.reader, TgInitAsTarget (0x8C), TgGetData
# (0x86) and TgSetData (0x8E) by device.drivers.tag_mode, and pn532_diag's by it, each with its
# own private constant: a public one, or a method, would be one more name on every tag's heap.

_SEL_RES_ISO_DEP = const(0x20)  # ISO/IEC 14443-3 SAK bit 6: target speaks ISO-DEP (14443-4)

# §7.1 Table 4: status byte error codes the driver names
_STATUS_TIMEOUT = const(0x01)
_STATUS_RELEASED = const(0x29)  # target released by the initiator (tag mode: phone left)
_STATUS_DESELECTED = const(0x25)  # DEP protocol: target deselected (tag mode)

# The PN532 stretches SCL while it wakes and while it prepares a response: hal builds the
# board's I2C with this timeout, twice the ESP32 port's default (50 ms in MicroPython 1.2x).
I2C_TIMEOUT_US = const(100_000)

_POLL_MS = const(5)  # acall: a missed interrupt costs at most this
_ETIMEDOUT = const(116)  # the errno machine.I2C raises when clock stretching exceeds timeout


# One hierarchy per driver, a class only where a caller acts on it: a command whose ACK is a
# FrameError is sent again, a response that is one is asked for again with a NACK, a
# CommandError's status and a Timeout tell the reader and tag mode what the card or phone did. The rest (the PN532's error frame, a response
# that is not the expected one, a bus failure) is a PN532Error whose message names it.


class PN532Error(Exception):
    """Every error the driver raises derives from this (one hierarchy per driver)."""


class FrameError(PN532Error):
    """Bytes that are not a valid PN532 frame: no start code, truncated, bad length, a length
    (LCS) or data (DCS) checksum that does not add up to zero, a NACK."""


class CommandError(PN532Error):
    """The PN532 reports a non-zero status byte (§7.1 Table 4); `.status` holds it."""

    def __init__(self, status, where=""):
        super().__init__("status 0x%02x %s" % (status, where))
        self.status = status


class Timeout(PN532Error):
    """No ACK or no response in time."""


# --- frames ---------------------------------------------------------------------------------


def frame_into(buf, body, data):
    """Write the frame for TFI+`body`+`data` into `buf`; return its length. Allocates nothing
    when body/data are bytes: the driver builds every command frame in one buffer this way."""
    n = len(body) + len(data)
    if n < 1 or n > _MAX_BODY:
        raise FrameError("frame body of %d bytes" % n)
    buf[0] = _PREAMBLE
    buf[1] = _START1
    buf[2] = _START2
    if n < 255:
        # §6.2.1.1: LCS makes LEN + LCS == 0 mod 256
        buf[3] = n
        buf[4] = (0x100 - n) & 0xFF
        i = 5
    else:
        # §6.2.1.2 extended frame: 0xFF 0xFF marks it, then LENM LENL LCS
        buf[3] = 0xFF
        buf[4] = 0xFF
        buf[5] = n >> 8
        buf[6] = n & 0xFF
        buf[7] = (0x100 - ((n >> 8) + (n & 0xFF))) & 0xFF
        i = 8
    total = 0
    for b in body:
        buf[i] = b
        total += b
        i += 1
    for b in data:
        buf[i] = b
        total += b
        i += 1
    # §6.2.1.1: DCS makes TFI + PD0..PDn + DCS == 0 mod 256
    buf[i] = (0x100 - (total & 0xFF)) & 0xFF
    buf[i + 1] = _POSTAMBLE
    return i + 2


def _frame_at(buf, i, n):
    """The body of a frame whose start code 00 FF is at buf[i], buf[i+1]; None for a NACK."""
    if i + 4 > n:
        raise FrameError("truncated frame header")
    length = buf[i + 2]
    check = buf[i + 3]
    if length == 0x00 and check == 0xFF:
        return b""  # ACK (§6.2.1.3): the empty body
    if length == 0xFF and check == 0x00:
        return None  # NACK (§6.2.1.4)
    head = i + 4
    if length == 0xFF and check == 0xFF:
        if i + 7 > n:
            raise FrameError("truncated extended header")
        length = (buf[i + 4] << 8) | buf[i + 5]
        if (buf[i + 4] + buf[i + 5] + buf[i + 6]) & 0xFF:
            raise FrameError("extended LCS")
        head = i + 7
        if length < 255 or length > _MAX_BODY:
            raise FrameError("extended length %d" % length)
    elif (length + check) & 0xFF:
        raise FrameError("LCS")
    elif length == 0:
        raise FrameError("zero length")
    if head + length + 1 > n:
        raise FrameError("truncated frame body")
    total = 0
    for k in range(head, head + length + 1):
        total += buf[k]
    if total & 0xFF:
        raise FrameError("DCS")
    body = bytes(buf[head : head + length])
    if body[0] == _TFI_ERROR and length == 1:
        raise PN532Error("PN532 error frame")  # §6.2.1.5: not a FrameError, not sent again
    return body


def parse_frame(buf):
    """TFI + data of the first valid frame in `buf` (leading garbage is skipped); b"" for an
    ACK. Raises a FrameError (a NACK too), or PN532Error for the PN532's error frame."""
    n = len(buf)
    first = None
    for i in range(n - 1):
        if buf[i] == _START1 and buf[i + 1] == _START2:
            try:
                body = _frame_at(buf, i, n)
            except FrameError as error:
                first = first or error
                continue
            if body is None:
                raise FrameError("NACK frame")  # not garbage to skip: the other side's answer
            return body
    raise first or FrameError("no start code 00 FF")


def frame_end(buf, n):
    """Bytes a frame starting at buf[0:n] needs in total (header known), or 0 if the header
    is not complete yet. Used by the stream transports to know how much more to read."""
    i = 0
    while i + 1 < n and not (buf[i] == _START1 and buf[i + 1] == _START2):
        i += 1
    if i + 4 > n:
        return 0
    length = buf[i + 2]
    check = buf[i + 3]
    if (length == 0x00 and check == 0xFF) or (length == 0xFF and check == 0x00):
        return i + 5  # ACK / NACK: ... 00 FF xx xx 00
    if length == 0xFF and check == 0xFF:
        if i + 7 > n:
            return 0
        return i + 7 + ((buf[i + 4] << 8) | buf[i + 5]) + 2
    return i + 4 + length + 2


# --- response parsers (pure: fuzzed under CPython) -----------------------------------------


def check_status(data, where):
    """Raise CommandError unless the status byte (low 6 bits, §7.1) is zero; return the rest."""
    if len(data) < 1:
        raise PN532Error("missing status byte in " + where)
    if data[0] & 0x3F:
        raise CommandError(data[0] & 0x3F, where)
    return data[1:]


class Target:
    """One ISO/IEC 14443 type A target from InListPassiveTarget (§7.3.5): what the reader and
    the card protocols use of it (SENS_RES and the ATS are read past)."""

    def __init__(self, number, sel_res, uid):
        self.number = number
        self.sel_res = sel_res
        self.uid = uid
        self.iso_dep = bool(sel_res & _SEL_RES_ISO_DEP)


def parse_target_a(data):
    """The first type A target of an InListPassiveTarget response, or None for no card. An ATS
    after the NFCID (ISO-DEP targets) is not read: ISO-DEP is told by SEL_RES."""
    if len(data) < 1:
        raise PN532Error("InListPassiveTarget: no NbTg")
    count = data[0]
    if count == 0:
        return None
    if count > 2:
        raise PN532Error("InListPassiveTarget: NbTg %d" % count)
    # Tg(1) SENS_RES(2) SEL_RES(1) NFCIDLength(1) NFCID1 [ATS]
    if len(data) < 6:
        raise PN532Error("InListPassiveTarget: short target")
    uid_length = data[5]
    if uid_length not in (4, 7, 10) or len(data) < 6 + uid_length:
        raise PN532Error("InListPassiveTarget: NFCID length %d" % uid_length)
    return Target(data[1], data[4], bytes(data[6 : 6 + uid_length]))


# --- shared by the transports (device.drivers.pn532_i2c, _spi, _uart) ----------------------------


def bus_error(error):
    """The PN532Error for an OSError from a machine bus (shared by the transports)."""
    if error.args and error.args[0] == _ETIMEDOUT:
        return PN532Error("bus timeout (clock stretching beyond the I2C timeout)")
    return PN532Error("bus error %r" % (error,))


def ready_within(transport, timeout_ms):
    """Whether `transport` has a frame ready within `timeout_ms`, asked every millisecond."""
    begin = time.ticks_ms()
    while not transport.ready():
        if time.ticks_diff(time.ticks_ms(), begin) > timeout_ms:
            return False
        time.sleep_ms(1)
    return True


# --- the driver ----------------------------------------------------------------------------


class PN532:
    """Commands over one transport. The core is non-blocking (`start` + `poll`); `call` waits
    synchronously; `acall` lets asyncio run while the PN532 works."""

    def __init__(self, transport, reset=None, ack_timeout_ms=30, timeout_ms=1000):
        self.transport = transport
        self._reset = reset
        self.ack_timeout_ms = ack_timeout_ms
        self.timeout_ms = timeout_ms
        self._frame = memoryview(bytearray(_MAX_FRAME))  # written in place, sent as a slice
        self._pending = -1
        self._header = bytearray(2)
        self._header[0] = _TFI_HOST
        self._target_header = bytearray(3)  # TFI, InDataExchange, Tg: no copy of the data
        self._target_header[0] = _TFI_HOST
        self._target_header[1] = _CMD_IN_DATA_EXCHANGE
        self.asleep = False

    # core
    def start(self, command, params=None, target=-1):
        """Send a command and wait for its ACK (§6.2.2 handshake). One resend if the ACK is
        missing or mangled: no ACK means the PN532 did not take the frame. `target` puts the
        target number before `params` (InDataExchange: device.drivers.cards.data_exchange)
        without building a new buffer."""
        header = self._header
        if target >= 0:
            header = self._target_header
            header[1] = command
            header[2] = target
        self._header[1] = command
        n = frame_into(self._frame, header, b"" if params is None else params)
        self._pending = -1
        for attempt in range(2):
            self.transport.write(self._frame[:n])
            try:
                if not ready_within(self.transport, self.ack_timeout_ms):
                    raise Timeout("no ACK for command 0x%02x" % command)
                if parse_frame(self.transport.read_frame()) == b"":
                    self._pending = command
                    return
                raise FrameError("expected ACK")
            except (FrameError, Timeout):
                if attempt:
                    raise

    def poll(self):
        """The pending command's response data (after D5 and the code), or None if not ready."""
        if self._pending < 0:
            raise PN532Error("no command pending")
        if not self.transport.ready():
            return None
        body = b""
        for attempt in range(3):
            try:
                body = parse_frame(self.transport.read_frame())
                break
            except FrameError:
                if attempt == 2:
                    raise
                # §6.2.1.4: a response we could not read (a bad checksum, cut short): ask for
                # the same response again
                self.transport.write(NACK)
                if not ready_within(self.transport, 20):
                    raise Timeout("no frame")
        command = self._pending
        self._pending = -1
        # TFI D5, then the response code: the command + 1
        if len(body) < 2 or body[0] != _TFI_PN532 or body[1] != ((command + 1) & 0xFF):
            raise PN532Error("not a response to command 0x%02x" % command)
        return body[2:]

    def abort(self):
        """§6.2.1.3: an ACK from the host aborts the command in progress."""
        self._pending = -1
        self.transport.write(ACK)

    def call(self, command, params=None, timeout_ms=None, target=-1):
        self.start(command, params, target)
        limit = self.timeout_ms if timeout_ms is None else timeout_ms
        begin = time.ticks_ms()
        while True:
            data = self.poll()
            if data is not None:
                return data
            if time.ticks_diff(time.ticks_ms(), begin) > limit:
                self.abort()
                raise Timeout("no response to command 0x%02x" % command)
            time.sleep_ms(1)

    async def acall(self, command, params=None, timeout_ms=None, flag=None):
        """`call` for asyncio: waits on `flag` (a ThreadSafeFlag set by the IRQ pin) with
        polling as the fallback, so a missed interrupt costs at most _POLL_MS."""
        self.start(command, params)
        limit = self.timeout_ms if timeout_ms is None else timeout_ms
        begin = time.ticks_ms()
        while True:
            data = self.poll()
            if data is not None:
                return data
            if time.ticks_diff(time.ticks_ms(), begin) > limit:
                self.abort()
                raise Timeout("no response to command 0x%02x" % command)
            if flag is not None:
                try:
                    await asyncio.wait_for_ms(flag.wait(), _POLL_MS)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep_ms(_POLL_MS)

    # reset and power
    def hard_reset(self):
        """Pulse RSTPD_N low (§8 / datasheet: ≥ 20 ns; we hold 10 ms), then let it boot."""
        if self._reset is None:
            raise PN532Error("no RSTPD_N pin")
        self._pending = -1
        self._reset.value(0)
        time.sleep_ms(10)
        self._reset.value(1)
        time.sleep_ms(10)
        self.asleep = False
        self.transport.wake()

    def begin(self):
        """Wake, read the firmware version, SAM normal mode, bounded passive retries."""
        self.transport.wake()
        firmware = self.firmware_version()
        # §7.2.10: mode 1 = normal (no SAM); timeout 0x14 only for virtual card mode; P70_IRQ on
        self.call(_CMD_SAM_CONFIGURATION, b"\x01\x14\x01")
        # §7.3.1 CfgItem 5 (max retries): MxRtyATR 1, MxRtyPSL 1, MxRtyPassiveActivation 5, so
        # a card search ends on its own
        self.call(_CMD_RF_CONFIGURATION, b"\x05\x01\x01\x05")
        return firmware

    # commands (§7)
    def firmware_version(self):
        """(IC, Ver, Rev, Support) from GetFirmwareVersion (§7.2.2)."""
        data = self.call(_CMD_GET_FIRMWARE_VERSION)
        if len(data) != 4:
            raise PN532Error("firmware version of %d bytes" % len(data))
        return tuple(data)

    def release(self, target=0):
        check_status(self.call(_CMD_IN_RELEASE, bytes((target,))), "InRelease")
