"""Taps: the async PN532 loop that turns cards and phones into credentials.

    reader = Reader(nfc, on_tap, device_id="tag-0042", irq=irq_pin, rng=hal.urandom, salt=salt)
    asyncio.create_task(reader.run())            # on_tap(Tap) per tap; never raises
    # Tap.kind: "badge" | "ntag424" | "phone" | "unknown"; Tap.cred = credential id (16 bytes)

A card held still is one tap (debounce by UID and by credential until it has been gone for
`gone_ms`). A reader that stops answering is reset through RSTPD_N and re-initialised while the
rest of the device runs on; each reset is reported through `on_health`. The phone protocol
(kvitto AID, CHALLENGE) is specified in docs/nfc.md; tag mode (`tag_mode=`, a
device.tag_mode.TagMode) is its own module, loaded only when config.json turns it on.
"""

import asyncio
import hashlib
import time

from micropython import const

from device import pn532

KVITTO_AID = b"\xf0kvitto\x01"  # docs/nfc.md: proprietary RID 0xF0 (ISO/IEC 7816-5) + name + v1
_INS_CHALLENGE = const(0x10)
_CLA_PROPRIETARY = const(0x80)
_NONCE_BYTES = const(16)
_SW_OK = const(0x9000)


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
