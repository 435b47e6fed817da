"""A PN532 simulator speaking the real frames (UM0701-02), with scripted cards and faults.

    model = PN532Sim()
    model.place(UidCard(b"\\x04\\x11\\x22\\x33"))          # a card in the field
    i2c = SimI2C(model)                                    # or SimSPI(model), SimUART(model)

Runs under the unix port and CPython. Its frame code is written apart from device/drivers/pn532.py on
purpose: the driver is tested against a second implementation of the manual, not itself.
Cards: UidCard, Ntag213 (NDEF), Ntag424 (SUN per AN12196), HcePhone (kvitto challenge);
initiators: TagReaderPhone (a phone reading the PN532 in tag mode). Faults: garbage bytes,
dropped ACK, checksum errors, clock stretching, a PN532 that stays silent until RSTPD_N.
"""

import time

try:
    from sim.buses import SimI2C, SimPin, SimSPI, SimUART
except ImportError:  # imported as a top-level module
    from buses import SimI2C, SimPin, SimSPI, SimUART

try:
    import cryptolib

    def aes_ecb(key, block):
        return cryptolib.aes(bytes(key), 1).encrypt(bytes(block))

except ImportError:  # CPython
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def aes_ecb(key, block):
        encryptor = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()
        return encryptor.update(bytes(block)) + encryptor.finalize()


def _ticks():
    try:
        return time.ticks_ms()
    except AttributeError:  # CPython
        return int(time.monotonic() * 1000)


def bus(kind, model):
    """The machine-like bus of `kind` ("i2c", "spi", "uart") attached to `model`."""
    if kind == "i2c":
        return SimI2C(model, timeout_us=100000)
    if kind == "spi":
        return SimSPI(model)
    if kind in ("uart", "hsu"):
        return SimUART(model)
    raise ValueError("no simulated %s bus" % kind)


ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
KVITTO_AID = b"\xf0kvitto\x01"
NDEF_AID = b"\xd2\x76\x00\x00\x85\x01\x01"
_SW_OK = b"\x90\x00"
_SW_NOT_FOUND = b"\x6a\x82"
_SW_INS = b"\x6d\x00"
_SW_WRONG = b"\x6a\x86"


def _hex(data):
    return "".join("%02X" % b for b in data)


# --- AES-CMAC (NIST SP 800-38B), AN10922 diversification, AN12196 SUN ----------------------


def _double(block):
    out = bytearray(16)
    carry = 0
    for i in range(15, -1, -1):
        v = (block[i] << 1) | carry
        out[i] = v & 0xFF
        carry = v >> 8
    if block[0] & 0x80:
        out[15] ^= 0x87
    return bytes(out)


def _subkeys(key):
    k1 = _double(aes_ecb(key, bytes(16)))
    return k1, _double(k1)


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def _cbc_mac(key, data):
    state = bytes(16)
    for i in range(0, len(data), 16):
        state = aes_ecb(key, _xor(state, data[i : i + 16]))
    return state


def aes_cmac(key, message):
    k1, k2 = _subkeys(key)
    message = bytes(message)
    if message and len(message) % 16 == 0:
        last = _xor(message[-16:], k1)
        body = message[:-16]
    else:
        tail = len(message) % 16
        start = len(message) - tail
        padded = message[start:] + b"\x80" + bytes(15 - tail)
        last = _xor(padded, k2)
        body = message[:start]
    return _cbc_mac(key, body + last)


def an10922_diversify(master, data):
    """AN10922 §2.2 AES-128: CMAC over 0x01 ‖ M, always padded to 32 bytes."""
    d = b"\x01" + bytes(data)
    k1, k2 = _subkeys(master)
    if len(d) == 32:
        d = d[:16] + _xor(d[16:], k1)
    else:
        d = d + b"\x80" + bytes(31 - len(d))
        d = d[:16] + _xor(d[16:], k2)
    return _cbc_mac(master, d)


def sun_message(meta_key, file_key, uid, counter, padding=bytes(5)):
    """(PICC data 16, SDMMAC 8) as an NTAG 424 DNA computes them (AN12196 §3.3, §3.4)."""
    plain = b"\xc7" + bytes(uid) + bytes((counter & 0xFF, (counter >> 8) & 0xFF, counter >> 16))
    plain += bytes(padding)[: 16 - len(plain)]
    picc = aes_ecb(meta_key, plain)  # AES-CBC with a zero IV over one block = ECB
    sv2 = b"\x3c\xc3\x00\x01\x00\x80" + plain[1:11]
    session = aes_cmac(file_key, sv2)
    full = aes_cmac(session, b"")  # SDMMACInputOffset == SDMMACOffset: MAC over no data
    return picc, bytes(full[i] for i in range(1, 16, 2))


# --- frames (the simulator's own reading of UM0701-02 §6.2.1) -------------------------------


def frame(body):
    n = len(body)
    if n < 255:
        head = bytes((0, 0, 0xFF, n, (0x100 - n) & 0xFF))
    else:
        head = bytes((0, 0, 0xFF, 0xFF, 0xFF, n >> 8, n & 0xFF, (0x100 - (n >> 8) - (n & 0xFF)) & 0xFF))
    return head + bytes(body) + bytes(((0x100 - sum(body)) & 0xFF, 0))


GOT_ACK = object()
GOT_NACK = object()


def unframe(data):
    """(body or GOT_ACK/GOT_NACK, bytes used) of the first frame in a host byte stream; body None
    for a frame with a checksum error; (None, 0) when more bytes are needed."""
    i = 0
    while i + 1 < len(data) and not (data[i] == 0 and data[i + 1] == 0xFF):
        i += 1
    if i + 4 > len(data):
        return None, 0
    length, lcs = data[i + 2], data[i + 3]
    if (length, lcs) == (0, 0xFF):
        return GOT_ACK, min(len(data), i + 5)
    if (length, lcs) == (0xFF, 0):
        return GOT_NACK, min(len(data), i + 5)
    head = i + 4
    if (length, lcs) == (0xFF, 0xFF):
        if i + 7 > len(data):
            return None, 0
        length = (data[i + 4] << 8) | data[i + 5]
        head = i + 7
        if (data[i + 4] + data[i + 5] + data[i + 6]) & 0xFF:
            return False, head
    elif (length + lcs) & 0xFF:
        return False, head
    if head + length + 1 > len(data):
        return None, 0
    body = bytes(data[head : head + length])
    if (sum(body) + data[head + length]) & 0xFF:
        return False, min(len(data), head + length + 2)
    return body, min(len(data), head + length + 2)


# --- cards -----------------------------------------------------------------------------------


class UidCard:
    """A MIFARE Classic-like badge: only its UID is readable without keys."""

    sens_res = 0x0004
    sel_res = 0x08
    ats = b""

    def __init__(self, uid):
        self.uid = bytes(uid)

    def activate(self):
        pass

    def exchange(self, data):
        return None  # no answer without MIFARE authentication: the PN532 reports a timeout


class Ntag213(UidCard):
    """NTAG 213 (NFC Forum Type 2): 45 pages, CC at page 3, NDEF TLV from page 4."""

    sens_res = 0x0044
    sel_res = 0x00

    def __init__(self, uid, ndef):
        super().__init__(uid)
        memory = bytearray(45 * 4)
        memory[0:3] = self.uid[0:3]
        memory[4:8] = self.uid[3:7]
        memory[12:16] = b"\xe1\x10\x12\x00"  # CC: NDEF, v1.0, 144 bytes, read/write
        tlv = bytes((0x03, len(ndef))) + bytes(ndef) + b"\xfe"
        memory[16 : 16 + len(tlv)] = tlv
        self.memory = memory

    def exchange(self, data):
        if len(data) == 2 and data[0] == 0x30:  # READ: 4 pages, rolling over at the end
            start = data[1] * 4
            if start >= len(self.memory):
                return b"\x00"  # NAK
            return bytes(self.memory[(start + k) % len(self.memory)] for k in range(16))
        return b"\x00"


def uri_record(url):
    """One short well-known URI record (NFC Forum RTD URI) with prefix 0x04 = https://."""
    raw = url.encode()
    if raw.startswith(b"https://"):
        payload = b"\x04" + raw[8:]
    else:
        payload = b"\x00" + raw
    return bytes((0xD1, 0x01, len(payload), 0x55)) + payload


class _Type4:
    """ISO-DEP target basics: ATS and APDU parsing shared by NTAG 424 and the phones."""

    sens_res = 0x0344
    sel_res = 0x20
    ats = b"\x06\x77\x77\x71\x02\x80"

    def activate(self):
        self.selected = None

    def exchange(self, data):
        data = bytes(data)
        if len(data) < 4:
            return _SW_WRONG
        return self.apdu(data[0], data[1], data[2], data[3], data[4:])

    @staticmethod
    def _lc_data(rest):
        if not rest:
            return b"", None
        if len(rest) == 1:
            return b"", rest[0]
        n = rest[0]
        return rest[1 : 1 + n], (rest[1 + n] if len(rest) > 1 + n else None)


class Ntag424(_Type4):
    """NTAG 424 DNA with SUN: the NDEF file holds a URL whose e= and c= are mirrored
    (encrypted PICC data and SDMMAC). The read counter goes up once per activation that
    reads the file (AN12196 §3.3). Keys: diversified per AN10922 from `master` if given."""

    def __init__(self, uid, meta_key=bytes(16), file_key=bytes(16), counter=0,
                 base="https://kvitto.invalid/sun"):
        self.uid = bytes(uid)
        self.meta_key = bytes(meta_key)
        self.file_key = bytes(file_key)
        self.counter = counter
        self.base = base
        self.last_sun = None
        self.selected = None
        self._content = None

    def _build(self):
        self.counter += 1
        picc, mac = sun_message(self.meta_key, self.file_key, self.uid, self.counter)
        self.last_sun = picc + mac
        url = self.base + "?e=" + _hex(picc) + "&c=" + _hex(mac)
        message = uri_record(url)
        return bytes((len(message) >> 8, len(message) & 0xFF)) + message

    def activate(self):
        self.selected = None
        self._content = None

    def apdu(self, cla, ins, p1, p2, rest):
        data, le = self._lc_data(rest)
        if ins == 0xA4 and p1 == 0x04:
            if data == NDEF_AID:
                self.selected = "app"
                return _SW_OK
            return _SW_NOT_FOUND
        if ins == 0xA4 and p1 == 0x00 and self.selected is not None:
            if data == b"\xe1\x04":
                self.selected = "ndef"
                return _SW_OK
            if data == b"\xe1\x03":
                self.selected = "cc"
                return _SW_OK
            return _SW_NOT_FOUND
        if ins == 0xB0 and self.selected == "ndef":
            if self._content is None:
                self._content = self._build()
            offset = (p1 << 8) | p2
            n = le if le else 256
            return self._content[offset : offset + n] + _SW_OK
        return _SW_INS


class HcePhone(_Type4):
    """A provider phone running the kvitto HCE app (docs/nfc.md): SELECT the kvitto AID, then
    CHALLENGE (80 10 00 00, nonce 16 ‖ device id) answered with key id 16 ‖ Ed25519 sig 64.
    `sign(message) -> 64 bytes` is the phone's key; its UID is random on every activation."""

    def __init__(self, key_id, sign, aid=KVITTO_AID):
        self.key_id = bytes(key_id)
        self.sign = sign
        self.aid = aid
        self.uid = b"\x08\x00\x00\x01"
        self.activations = 0
        self.challenges = []
        self.selected = None

    def activate(self):
        self.selected = None
        self.activations += 1
        n = self.activations * 7919
        # ISO/IEC 14443-3: a random single-size UID starts with 0x08
        self.uid = bytes((0x08, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))

    def apdu(self, cla, ins, p1, p2, rest):
        data, _ = self._lc_data(rest)
        if ins == 0xA4 and p1 == 0x04:
            if data == self.aid:
                self.selected = "kvitto"
                return b"\x01" + _SW_OK  # protocol version 1
            return _SW_NOT_FOUND
        if cla == 0x80 and ins == 0x10 and self.selected == "kvitto":
            if len(data) < 17:
                return b"\x67\x00"
            self.challenges.append(data)
            return self.key_id + bytes(self.sign(data)) + _SW_OK
        return _SW_INS


class TagReaderPhone:
    """A phone reading the PN532 in tag mode as an NFC Forum Type 4 Tag (T4T §5.4): SELECT
    NDEF application, CC file, NDEF file; NLEN; the message. `.url` holds what it read."""

    def __init__(self, chunk=0x3B):
        self.chunk = chunk
        self.url = None
        self.error = None
        self.steps = []
        self._script = None
        self._length = None
        self._message = bytearray()

    def start(self):
        self._script = self._run()
        return next(self._script)

    def answer(self, response):
        try:
            return self._script.send(bytes(response))
        except StopIteration:
            return None

    def _expect_ok(self, response, what):
        if response[-2:] != _SW_OK:
            self.error = what + " failed: " + _hex(response[-2:])
            return False
        return True

    def _run(self):
        response = yield b"\x00\xa4\x04\x00\x07" + NDEF_AID + b"\x00"
        if not self._expect_ok(response, "SELECT NDEF application"):
            return
        response = yield b"\x00\xa4\x00\x0c\x02\xe1\x03"
        if not self._expect_ok(response, "SELECT CC"):
            return
        response = yield b"\x00\xb0\x00\x00\x0f"
        if not self._expect_ok(response, "READ CC") or len(response) < 17:
            self.error = self.error or "CC too short"
            return
        cc = response[:-2]
        ndef_file = cc[9:11]
        max_read = (cc[3] << 8) | cc[4]
        response = yield b"\x00\xa4\x00\x0c\x02" + ndef_file
        if not self._expect_ok(response, "SELECT NDEF file"):
            return
        response = yield b"\x00\xb0\x00\x00\x02"
        if not self._expect_ok(response, "READ NLEN"):
            return
        length = (response[0] << 8) | response[1]
        offset = 2
        message = bytearray()
        while len(message) < length:
            n = min(self.chunk, max_read, length - len(message))
            response = yield bytes((0x00, 0xB0, offset >> 8, offset & 0xFF, n))
            if not self._expect_ok(response, "READ BINARY"):
                return
            message.extend(response[:-2])
            offset += len(response) - 2
        self.steps.append("read")
        if len(message) > 4 and message[3] == 0x55:
            prefix = "https://" if message[4] == 0x04 else ""
            self.url = prefix + bytes(message[5:]).decode()


# --- the PN532 --------------------------------------------------------------------------------


class PN532Sim:
    """One PN532 v1.6 (IC 0x32). Host frames come in through a bus (`receive` for I2C/SPI,
    `receive_stream` for HSU); the frames it answers wait in a queue the bus reads
    (`peek`/`consume`). P70_IRQ (`.irq`) is low while a frame waits; RSTPD_N (`.rstpd`)
    resets it when pulsed low."""

    def __init__(self, firmware=(0x32, 0x01, 0x06, 0x07)):
        self.firmware = bytes(firmware)
        self.irq = SimPin(1, getter=self._irq_level)
        self.rstpd = SimPin(1, on_change=self._rstpd_change)
        self.card = None
        self.initiator = None
        self.stretch_us = 0
        self.commands = []  # command codes received, in order
        self.resets = 0
        self._stream = bytearray()
        self._remove_at = None
        self._power_on()
        self.silent = False
        self._drop_acks = 0
        self._corrupt = 0
        self._garbage = b""

    def _power_on(self):
        self._out = []
        self._last = None
        self.asleep = False
        self._sleep_after = False
        self.wake_sources = 0
        self.sam = False
        self.retries = 0xFF
        self.field = True
        self.pending = None
        self.target = None
        self.tg_mode = None
        self.tg_first = None
        self.nfcid1 = None
        self.tg_next = None

    # faults
    def fault_silent(self):
        """From now on it takes frames and never answers, until RSTPD_N is pulsed."""
        self.silent = True

    def fault_drop_ack(self, count=1):
        """The next `count` command frames are lost: no ACK, no response."""
        self._drop_acks += count

    def fault_checksum(self, count=1):
        """The next `count` responses leave with a wrong DCS (a NACK gets a clean copy)."""
        self._corrupt += count

    def fault_garbage(self, data=b"\x55\xaa\x00\x13\xff"):
        """Bytes that come out before the next frame (noise on the line)."""
        self._garbage = bytes(data)

    def clear_faults(self):
        """A clean line again (line faults survive a PN532 reset: they are not in the chip)."""
        self._drop_acks = 0
        self._corrupt = 0
        self._garbage = b""
        self.stretch_us = 0

    # RSTPD_N
    def _rstpd_change(self, level):
        if level == 1:
            self.resets += 1
            self.silent = False
            self._stream = bytearray()
            self._power_on()

    def _irq_level(self):
        return 0 if (self._out and not self.silent) else 1

    # output queue
    def peek(self):
        self._expire()
        if self.silent or not self._out:
            return None
        return self._out[0]

    def consume(self):
        if self._out:
            self._out.pop(0)
        if not self._out and self._sleep_after:
            # §7.2.11: it sleeps once the host has read the PowerDown response
            self._sleep_after = False
            self.asleep = True

    def _send(self, data, keep=True):
        """Queue a frame for the host; faults apply on the way out (the line, not the PN532:
        `_last`, what a NACK asks for again, stays clean)."""
        if keep:
            self._last = data
        if keep and self._corrupt:
            self._corrupt -= 1
            data = data[:-2] + bytes(((data[-2] + 1) & 0xFF, 0))
        if self._garbage:
            data = self._garbage + data
            self._garbage = b""
        was_empty = not self._out
        self._out.append(data)
        if was_empty:
            self.irq.edge(True)

    def _respond(self, body):
        self._send(frame(body))

    # input
    def wake(self, bus):
        bits = {"i2c": 0x80, "spi": 0x20, "hsu": 0x10}[bus]
        if self.asleep and self.wake_sources & bits:
            self.asleep = False

    def receive_stream(self, data):
        """HSU bytes: 0x55 wakes a sleeping PN532 (§6.2.3); frames are cut from the stream."""
        if self.asleep:
            if 0x55 in data:
                self.wake("hsu")
            return
        self._stream.extend(data)
        while True:
            body, used = unframe(self._stream)
            if used == 0:
                if len(self._stream) > 600:
                    self._stream = bytearray()
                return
            self._stream = self._stream[used:]
            self._handle(body)

    def receive(self, data):
        """One host frame (I2C write, SPI DW)."""
        self._expire()
        if self.asleep:
            return
        body, used = unframe(data)
        if used:
            self._handle(body)

    def _handle(self, body):
        if self.silent:
            return
        if body is GOT_ACK:
            self.pending = None  # §6.2.1.3: ACK aborts the command in progress
            self._out = []
            return
        if body is GOT_NACK:
            if self._last is not None:
                self._out = []
                self._send(self._last)
            return
        if body is None or body is False:
            return  # §6.2.2: a frame with a checksum error is ignored (no ACK)
        if self._drop_acks:
            self._drop_acks -= 1
            return
        if len(body) < 2 or body[0] != 0xD4:
            self._send(b"\x00\x00\xff\x01\xff\x7f\x81\x00")  # §6.2.1.5 error frame
            return
        self._out = []
        self._send(ACK, keep=False)
        self.pending = None
        self.commands.append(body[1])
        handler = getattr(self, "_cmd_%02x" % body[1], None)
        if handler is None:
            self._send(b"\x00\x00\xff\x01\xff\x7f\x81\x00")
            return
        handler(bytes(body[2:]))

    # commands
    def _cmd_02(self, params):  # GetFirmwareVersion §7.2.2
        self._respond(b"\xd5\x03" + self.firmware)

    def _cmd_14(self, params):  # SAMConfiguration §7.2.10
        if not params or params[0] not in (1, 2, 3, 4):
            self._respond(b"\xd5\x15")  # real firmware answers; mode is not checked further
            return
        self.sam = True
        self._respond(b"\xd5\x15")

    def _cmd_16(self, params):  # PowerDown §7.2.11
        self.wake_sources = params[0] if params else 0
        self._respond(b"\xd5\x17\x00")
        self._sleep_after = True

    def _cmd_32(self, params):  # RFConfiguration §7.3.1
        if params[:1] == b"\x05" and len(params) == 4:
            self.retries = params[3]
        elif params[:1] == b"\x01" and len(params) == 2:
            self.field = bool(params[1] & 0x01)
        self._respond(b"\xd5\x33")

    def _cmd_4a(self, params):  # InListPassiveTarget §7.3.5
        if len(params) < 2 or params[1] != 0x00:
            self._respond(b"\xd5\x4b\x00")
            return
        if self.card is not None and self.field:
            self._activate()
        elif self.retries == 0xFF:
            self.pending = "list"
        else:
            self._respond(b"\xd5\x4b\x00")

    def _activate(self):
        card = self.card
        card.activate()
        self.target = 1
        body = bytearray(b"\xd5\x4b\x01\x01")
        body.extend((card.sens_res >> 8, card.sens_res & 0xFF, card.sel_res, len(card.uid)))
        body.extend(card.uid)
        if card.sel_res & 0x20:
            body.extend(card.ats)
        self._respond(bytes(body))

    def _cmd_40(self, params):  # InDataExchange §7.3.8
        if not params or self.target is None or params[0] != self.target:
            self._respond(b"\xd5\x41\x27")  # wrong context
            return
        if self.card is None:
            self._respond(b"\xd5\x41\x01")  # timeout: the card left
            return
        answer = self.card.exchange(params[1:])
        if answer is None:
            self._respond(b"\xd5\x41\x01")
        else:
            self._respond(b"\xd5\x41\x00" + bytes(answer))

    def _cmd_52(self, params):  # InRelease §7.3.11
        self.target = None
        self._respond(b"\xd5\x53\x00")

    def _cmd_8c(self, params):  # TgInitAsTarget §7.3.14
        if len(params) < 37:
            self._send(b"\x00\x00\xff\x01\xff\x7f\x81\x00")
            return
        self.tg_mode = params[0]
        # PN532 emulation limit: NFCID1 is 4 bytes and its first byte is forced to 0x08
        # (random UID), so only the 3 bytes after it are the host's.
        self.nfcid1 = b"\x08" + params[3:6]
        self.tg_first = None
        if self.initiator is not None:
            self._start_target()
        else:
            self.pending = "tg"

    def _start_target(self):
        first = self.initiator.start()
        self.tg_first = first
        # mode byte: 106 kbps, ISO/IEC 14443-4 PICC activated (bit 2 PICC)
        self._respond(b"\xd5\x8d\x04" + first)

    def _cmd_86(self, params):  # TgGetData §7.3.16
        if self.initiator is None or self.tg_first is None:
            self._respond(b"\xd5\x87\x29")  # released by the initiator
            return
        command = self.tg_next
        if command is None:
            self.initiator = None
            self._respond(b"\xd5\x87\x29")
        else:
            self._respond(b"\xd5\x87\x00" + command)

    def _cmd_8e(self, params):  # TgSetData §7.3.17
        if self.initiator is None:
            self._respond(b"\xd5\x8f\x29")
            return
        self.tg_next = self.initiator.answer(params)
        self._respond(b"\xd5\x8f\x00")

    # scripted world
    def place(self, card):
        """A card enters the field; a waiting InListPassiveTarget answers at once."""
        self.card = card
        if self.pending == "list" and not self.silent:
            self.pending = None
            self._activate()

    def remove(self):
        self.card = None
        self.target = None
        self._remove_at = None

    def present(self, kind, raw, hold_ms=300, sign=None, meta_key=None, file_key=None,
                counter=0):
        """What a person at the door does (sim.hal_sim.tap): hold a credential for hold_ms.
        kind: "badge" (UID), "ntag424" (UID; its SDM meta and file read keys, zero keys
        without them, and the read counter before this tap: the badge travels from door to
        door, so the caller keeps its counter), "phone" (raw = key id; `sign` is the phone's
        key, all-zero signatures without one)."""
        if kind == "ntag424":
            card = Ntag424(raw, meta_key or bytes(16), file_key or bytes(16), counter)
        elif kind == "phone":
            card = HcePhone(raw, sign or (lambda message: bytes(64)))
        else:
            card = UidCard(raw)
        self.place(card)
        self._remove_at = _ticks() + hold_ms

    def _expire(self):
        if self._remove_at is not None and _ticks() >= self._remove_at:
            self.remove()

    def phone_reads(self, phone):
        """A phone comes to read the PN532 in tag mode."""
        self.initiator = phone
        if self.pending == "tg" and not self.silent:
            self.pending = None
            self._start_target()
