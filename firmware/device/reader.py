"""Taps: the async PN532 loop that turns cards and phones into credentials, plus tag mode.

    reader = Reader(nfc, on_tap, device_id="tag-0042", irq=irq_pin, rng=hal.urandom, salt=salt)
    asyncio.create_task(reader.run())            # on_tap(Tap) per tap; never raises
    # Tap.kind: "badge" | "ntag424" | "phone" | "unknown"; Tap.cred = credential id (16 bytes)

A card held still is one tap (debounce by UID and by credential until it has been gone for
`gone_ms`). A reader that stops answering is reset through RSTPD_N and re-initialised while the
rest of the device runs on; each reset is reported through `on_health`. The phone protocol
(kvitto AID, CHALLENGE) and the tag-mode URL are specified in docs/nfc.md.
"""

import asyncio
import binascii
import hashlib
import time

from micropython import const

from device import pn532

KVITTO_AID = b"\xf0kvitto\x01"  # docs/nfc.md: proprietary RID 0xF0 (ISO/IEC 7816-5) + name + v1
_INS_CHALLENGE = const(0x10)
_CLA_PROPRIETARY = const(0x80)
_NONCE_BYTES = const(16)
_SW_OK = const(0x9000)
_STATUS_RELEASED = const(0x29)
_STATUS_DESELECTED = const(0x25)
_T4T_AID = b"\xd2\x76\x00\x00\x85\x01\x01"  # NFC Forum Type 4 Tag §5.4.2: NDEF application
_CC_FILE = b"\xe1\x03"
_NDEF_FILE = b"\xe1\x04"
_T4T_MLE = const(0x3B)  # largest READ BINARY answer we offer (fits one PN532 frame easily)


def _hmac_sha256(key, message):
    # RFC 2104 with SHA-256 (block 64): MicroPython has no hmac module
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(message)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def credential_id(salt, raw):
    """FORMATS.md §1 key 8: HMAC-SHA256(org credential salt, raw credential)[:16]; the same
    contract as device.event.credential_id, which it defers to when that module is there."""
    try:
        from device import event  # type: ignore

        return event.credential_id(salt, raw)
    except (ImportError, AttributeError):
        return _hmac_sha256(salt, raw)[:16]


class Tap:
    """One credential read: kind, raw credential bytes, kind-specific extra, credential id."""

    def __init__(self, kind, raw, extra, uid, read_us, cred=None):
        self.kind = kind
        self.raw = raw
        self.extra = extra
        self.uid = uid
        self.read_us = read_us  # ticks_us when the credential was read (feedback deadline base)
        self.cred = cred


def _sun_from_url(url):
    """PICC data ‖ SDMMAC (16 + 8 bytes) from an SDM URL's e= and c= (AN12196 §3.3)."""
    query = url.split("?", 1)[1] if "?" in url else ""
    picc = mac = None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key in ("e", "picc_data"):
            picc = value
        elif key in ("c", "cmac"):
            mac = value
    if picc is None or mac is None or len(picc) != 32 or len(mac) != 16:
        raise pn532.CardError("NDEF URL carries no SUN (e=, c=)")
    try:
        return bytes.fromhex(picc + mac)
    except ValueError:
        raise pn532.CardError("SUN parameters are not hex")


class Reader:
    """The tap loop. `on_tap(tap)` is called synchronously and must return quickly (journal,
    feedback); `on_health(fields)` gets a small dict for a `health` event."""

    def __init__(self, nfc, on_tap, device_id, irq=None, rng=None, salt=None, on_health=None,
                 interval_ms=50, gone_ms=800, fail_limit=2, timeout_ms=500, tag_mode=None,
                 tag_window_ms=300):
        self.nfc = nfc
        self.on_tap = on_tap
        self.device_id = device_id.encode() if isinstance(device_id, str) else device_id
        self.rng = rng
        self.salt = salt
        self.on_health = on_health
        self.interval_ms = interval_ms
        self.gone_ms = gone_ms
        self.fail_limit = fail_limit
        self.timeout_ms = timeout_ms
        self.tag_mode = tag_mode
        self.tag_window_ms = tag_window_ms
        self.ready = False
        self.failures = 0
        self.resets = 0
        self.taps = 0
        self._backoff_ms = 0
        self._last_uid = None
        self._last_raw = None
        self._last_seen = 0
        self._flag = None
        if irq is not None:
            self._flag = asyncio.ThreadSafeFlag()
            self._irq_handler = self._on_irq  # bound once: the handler does not allocate
            irq.irq(self._irq_handler, trigger=2)  # Pin.IRQ_FALLING: P70_IRQ goes low

    def _on_irq(self, pin):
        """IRQ context: touches only the preallocated flag; does not allocate."""
        self._flag.set()  # type: ignore

    def _health(self, fields):
        if self.on_health is not None:
            try:
                self.on_health(fields)
            except Exception:
                pass  # a failing reporter must not stop the reader

    # life cycle
    def start(self):
        """Initialise the PN532 (firmware version, SAM, bounded retries)."""
        self.nfc.begin()
        self.ready = True
        self.failures = 0

    def recover(self, cause):
        """Pulse RSTPD_N and initialise again; report either way. Never raises."""
        self.ready = False
        self.resets += 1
        try:
            self.nfc.hard_reset()
            self.start()
        except Exception as error:
            self._backoff_ms = min(60000, max(1000, self._backoff_ms * 2))
            self._health({"reader": "down", "resets": self.resets, "error": str(error)[:40]})
            return False
        self._backoff_ms = 0
        self._health({"reader": "reset", "resets": self.resets, "cause": cause[:40]})
        return True

    async def run(self):
        """Forever: one cycle at a time; every failure is contained here."""
        while True:
            try:
                await self.step()
            except Exception as error:  # the device loop never crashes on a reader fault
                self._health({"reader": "error", "error": str(error)[:40]})
                await asyncio.sleep_ms(self.interval_ms)

    async def step(self):
        """One search for a card (and one tag-mode window if configured)."""
        if not self.ready:
            if self._backoff_ms:
                await asyncio.sleep_ms(self._backoff_ms)
            try:
                self.start()
            except pn532.PN532Error as error:
                self.recover("init: " + str(error))
                return
        try:
            data = await self.nfc.acall(pn532.CMD_IN_LIST_PASSIVE_TARGET, b"\x01\x00",
                                        self.timeout_ms, self._flag)
            target = pn532.parse_target_a(data)
        except pn532.PN532Error as error:
            self.failures += 1
            if self.failures >= self.fail_limit:
                self.recover("silent: " + str(error))
            return
        self.failures = 0
        now = time.ticks_ms()
        if target is None:
            if self.tag_mode is not None:
                await self.tag_mode.serve(self.nfc, self.tag_window_ms, self._flag)
            await asyncio.sleep_ms(self.interval_ms)
            return
        try:
            self._handle(target, now)
        except pn532.CommandError:
            pass  # the card left during the read: the next cycle sees it again if it is there
        finally:
            try:
                self.nfc.release(target.number)
            except pn532.PN532Error:
                pass
        await asyncio.sleep_ms(self.interval_ms)

    def _held(self, key, now):
        """Debounce: the same UID or credential seen again before it was gone for gone_ms."""
        return key is not None and time.ticks_diff(now, self._last_seen) < self.gone_ms and (
            key == self._last_uid or key == self._last_raw)

    def _handle(self, target, now):
        if self._held(target.uid, now):
            self._last_seen = now
            return
        tap = self.read_credential(target)
        now = time.ticks_ms()
        if self._held(tap.raw, now):
            self._last_seen = now
            self._last_uid = target.uid
            return
        self._last_uid = target.uid
        self._last_raw = tap.raw
        self._last_seen = now
        if self.salt is not None and tap.kind != "unknown":
            tap.cred = credential_id(self.salt, tap.raw)
        self.taps += 1
        self.on_tap(tap)

    def read_credential(self, target):
        """What the target is: a kvitto phone, an NTAG 424 with SUN, or a badge by UID."""
        if target.iso_dep:
            # CommandError (the card left mid-read, §7.1 status 01) propagates: no tap at all
            # rather than a weaker one; CardError (an APDU refused) tries the next kind
            _, sw = self.nfc.select_aid(target.number, KVITTO_AID)
            if sw == _SW_OK:
                return self._phone(target)
            try:
                url = pn532.parse_ndef_uri(self.nfc.read_type4_ndef(target.number))
                return Tap("ntag424", target.uid, {"sun": _sun_from_url(url)}, target.uid,
                           time.ticks_us())
            except pn532.CardError:
                pass
            if len(target.uid) == 4 and target.uid[0] == 0x08:
                # ISO/IEC 14443-3 random UID (a phone without the app): identifies nobody
                return Tap("unknown", target.uid, {}, target.uid, time.ticks_us())
        return Tap("badge", target.uid, {}, target.uid, time.ticks_us())

    def _phone(self, target):
        nonce = self.rng(_NONCE_BYTES) if self.rng is not None else _fallback_nonce()
        command = pn532.apdu(_CLA_PROPRIETARY, _INS_CHALLENGE, 0x00, 0x00,
                             nonce + self.device_id, 0x00)
        data, sw = self.nfc.transceive_apdu(target.number, command)
        if sw != _SW_OK or len(data) != 80:
            raise pn532.CardError("phone answer: SW %04x, %d bytes" % (sw, len(data)))
        # key id 16 ‖ Ed25519 signature 64 over nonce ‖ device id; the host verifies
        return Tap("phone", bytes(data[:16]), {"nonce": nonce, "sig": bytes(data[16:])},
                   target.uid, time.ticks_us())


def _fallback_nonce():
    import os

    return os.urandom(_NONCE_BYTES)


def _b64url(data):
    text = binascii.b2a_base64(data).strip().rstrip(b"=")
    return text.replace(b"+", b"-").replace(b"/", b"_").decode()


def uri_record(url):
    """A short NDEF well-known URI record (NFC Forum RTD URI), prefix 0x04 = "https://"."""
    raw = url.encode()
    if raw[:8] == b"https://":
        payload = b"\x04" + raw[8:]
    else:
        payload = b"\x00" + raw
    return bytes((0xD1, 0x01, len(payload), 0x55)) + payload


class TagMode:
    """The PN532 as an NFC Forum Type 4 tag whose NDEF URL is signed by the device:
    https://HOST/t/DEVICE?c=COUNTER&t=UNIXTIME&s=SIG (docs/nfc.md). The next URL is signed
    ahead of time (`prepare_async`), so a phone's read never waits for Ed25519. `sign` is a
    device.ed25519.Signer (stepwise) or any callable message -> 64-byte signature."""

    def __init__(self, device_id, sign, base="https://kvitto.invalid", counter=0, clock=None,
                 on_read=None):
        self.device_id = device_id
        self.sign = sign
        self.base = base
        self.counter = counter
        self.clock = clock if clock is not None else (lambda: int(time.time()))
        self.on_read = on_read
        self.reads = 0
        self._file = None  # NLEN ‖ NDEF message for counter + 1
        self._cc = bytes((0x00, 0x0F, 0x20, 0x00, _T4T_MLE, 0x00, 0x34, 0x04, 0x06)) + \
            _NDEF_FILE + bytes((0x01, 0x00, 0x00, 0xFF))
        # NFC Forum T4T §5.1 CC: CCLEN 15, mapping 2.0, MLe, MLc, NDEF File Control TLV
        # (T 04, L 06, file E104, max size 256, read free 00, write never FF)

    def _signed_text(self):
        return "%s/t/%s?c=%d&t=%d" % (self.base, self.device_id, self.counter + 1, self.clock())

    def _store(self, signed, signature):
        url = signed + "&s=" + _b64url(signature)
        message = uri_record(url)
        self._file = bytes((len(message) >> 8, len(message) & 0xFF)) + message
        return url

    def prepare(self):
        """Sign the URL for the next read at once (blocking: tests and the first boot)."""
        signed = self._signed_text()
        if hasattr(self.sign, "sign_steps"):
            signature = self.sign.sign(signed.encode())
        else:
            signature = self.sign(signed.encode())
        return self._store(signed, signature)

    async def prepare_async(self):
        """Sign the next URL in ≤ 20 ms slices (device.ed25519.Signer.sign_steps), letting
        taps and MQTT run between them; a plain `sign` callable is called once."""
        signed = self._signed_text()
        if not hasattr(self.sign, "sign_steps"):
            return self._store(signed, self.sign(signed.encode()))
        steps = self.sign.sign_steps(signed.encode())
        for _ in steps:
            await asyncio.sleep_ms(0)
        return self._store(signed, self.sign.signature)

    def _answer(self, command, state):
        """One R-APDU for a C-APDU of the T4T read procedure."""
        if len(command) < 4:
            return b"\x67\x00"
        ins, p1, p2 = command[1], command[2], command[3]
        data = command[5 : 5 + command[4]] if len(command) > 5 else b""
        if ins == 0xA4 and p1 == 0x04:
            state[0] = "app" if data == _T4T_AID else None
            return b"\x90\x00" if state[0] else b"\x6a\x82"
        if ins == 0xA4 and p1 == 0x00 and state[0] is not None:
            if data == _CC_FILE:
                state[0] = "cc"
            elif data == _NDEF_FILE:
                state[0] = "ndef"
            else:
                return b"\x6a\x82"
            return b"\x90\x00"
        if ins == 0xB0 and state[0] in ("cc", "ndef"):
            content = self._cc if state[0] == "cc" else (self._file or b"")
            offset = (p1 << 8) | p2
            length = command[4] if len(command) > 4 else 0
            if offset > len(content):
                return b"\x6b\x00"
            if state[0] == "ndef" and offset + length >= len(content) and length:
                state[1] = True  # the message's last byte was served: one read
            return content[offset : offset + length] + b"\x90\x00"
        return b"\x6d\x00"

    async def serve(self, nfc, window_ms, flag=None):
        """Be a tag for up to `window_ms`; if a phone reads the URL, count and report it."""
        if self._file is None:
            await self.prepare_async()
        try:
            data = await nfc.acall(pn532.CMD_TG_INIT_AS_TARGET, self.target_params(), window_ms,
                                   flag)
        except pn532.Timeout:
            return False  # nobody came; acall aborted the wait with an ACK
        mode, command = pn532.parse_tg_init(data)
        state = [None, False]
        for _ in range(32):  # a T4T read is about 6 APDUs; bound the session
            nfc.tg_set_data(self._answer(command, state))
            try:
                command = nfc.tg_get_data()
            except pn532.CommandError as error:
                if error.status in (_STATUS_RELEASED, _STATUS_DESELECTED, 0x01):
                    break
                raise
        if not state[1]:
            return False
        self.counter += 1
        self.reads += 1
        self._file = None
        if self.on_read is not None:
            self.on_read(self.counter)
        return True

    def target_params(self):
        # UM0701-02 §7.3.14: SENS_RES 0x0004, NFCID1t (3 bytes; the PN532 forces the first
        # UID byte to 0x08), SEL_RES 0x20 = ISO/IEC 14443-4; FeliCa and NFCID3t unused
        uid = hashlib.sha256(self.device_id.encode()).digest()[:3]
        mifare = b"\x04\x00" + uid + b"\x20"
        params = bytearray((0x04,))  # PICC only
        params.extend(mifare)
        params.extend(bytes(18))
        params.extend(bytes(10))
        params.extend(b"\x00\x00")  # no general bytes, no historical bytes
        return params
