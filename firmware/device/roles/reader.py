"""Taps: the async PN532 loop that turns cards and phones into credentials.

    reader = Reader(nfc, on_tap, device_id="tag-0042", irq=irq_pin, rng=hal.urandom, salt=salt)
    asyncio.create_task(reader.run())            # on_tap(Tap) per tap; never raises
    # Tap.kind: "badge" | "ntag424" | "phone" | "unknown"; Tap.cred = credential id (16 bytes)

A card held still is one tap (debounce by UID and by credential until it has been gone for
`gone_ms`). A reader that stops answering is reset through RSTPD_N and re-initialised while the
rest of the device runs on; each reset is reported through `on_health`. Phones (kvitto AID,
CHALLENGE: docs/nfc.md) and NTAG 424 SUN URLs are read by device.drivers.cards, loaded on the first
ISO-DEP card; tag mode (`tag_mode=`, a device.drivers.tag_mode.TagMode) is its own module,
loaded only when config.json turns it on.
"""

import asyncio
import time

from micropython import const

from device.drivers import pn532

_CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)  # UM0701-02 §7.3.5
_FAILED_BACKOFF_MS = const(60000)  # resets keep failing: try once a minute (health: "failed")
_FAIL_LIMIT = const(2)  # failed searches in a row before the PN532 is reset


def credential_id(salt, raw):
    """FORMATS.md §1 key 8: HMAC-SHA256(org credential salt, raw credential)[:16], computed by
    device.evidence.event (one implementation of the contract; the app has it loaded already)."""
    from device.evidence import event

    return event.credential_id(salt, raw)


class Tap:
    """One credential read: kind, raw credential bytes, kind-specific extra, credential id."""

    def __init__(self, kind, raw, extra):
        self.kind = kind
        self.raw = raw
        self.extra = extra
        self.read_us = time.ticks_us()  # when the credential was read (feedback deadline base)
        self.cred = None


class Reader:
    """The tap loop. `on_tap(tap)` is called synchronously and must return quickly (journal,
    feedback); `on_health(fields)` gets a small dict for a `health` event."""

    def __init__(self, nfc, on_tap, device_id, irq=None, rng=None, salt=None, on_health=None,
                 interval_ms=50, gone_ms=800, timeout_ms=500, tag_mode=None,
                 tag_window_ms=300):
        self.nfc = nfc
        self.on_tap = on_tap
        self.device_id = device_id.encode() if isinstance(device_id, str) else device_id
        self.rng = rng
        self.salt = salt
        self.on_health = on_health
        self.interval_ms = interval_ms
        self.gone_ms = gone_ms
        self.timeout_ms = timeout_ms
        self.tag_mode = tag_mode
        self.tag_window_ms = tag_window_ms
        self.ready = False
        self.failures = 0
        self.resets = 0
        self.backoff_ms = 0  # between resets; device.roles.health reports its state from it
        self._last_uid = None
        self._last_raw = None
        self._last_seen = 0
        self._flag = None
        if irq is not None:
            self._flag = asyncio.ThreadSafeFlag()
            # bound once, here, and held by the pin: the handler does not allocate
            irq.irq(self._on_irq, trigger=2)  # Pin.IRQ_FALLING: P70_IRQ goes low

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
            self.backoff_ms = min(_FAILED_BACKOFF_MS, max(1000, self.backoff_ms * 2))
            self._health({"reader": "down", "resets": self.resets, "error": str(error)[:40]})
            return False
        self.backoff_ms = 0
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
            if self.backoff_ms:
                await asyncio.sleep_ms(self.backoff_ms)
            try:
                self.start()
            except pn532.PN532Error as error:
                self.recover("init: " + str(error))
                return
        try:
            data = await self.nfc.acall(_CMD_IN_LIST_PASSIVE_TARGET, b"\x01\x00",
                                        self.timeout_ms, self._flag)
            target = pn532.parse_target_a(data)
        except pn532.PN532Error as error:
            self.failures += 1
            if self.failures >= _FAIL_LIMIT:
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
        tap = None
        if target.iso_dep:
            # phones and NTAG 424 DNA: their protocols load with the first such card
            from device.drivers.cards import read_iso_dep

            found = read_iso_dep(self.nfc, target, self.rng, self.device_id)
            if found is not None:
                tap = Tap(*found)  # kind, raw, extra
        if tap is None:
            tap = Tap("badge", target.uid, {})  # a badge by UID, or a card we cannot read
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
        self.on_tap(tap)
