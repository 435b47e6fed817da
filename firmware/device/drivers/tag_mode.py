"""Tag mode: the PN532 as an NFC Forum Type 4 tag whose NDEF URL is signed by the device
(docs/nfc.md). Its own module, so a tag without `tag_mode` in config.json never loads it.

    from device.drivers.tag_mode import TagMode
    tag = TagMode("tag-0042", ed25519.signer(secret), counter=7, on_read=save_counter)
    Reader(nfc, on_tap, "tag-0042", tag_mode=tag)    # the reader serves it between searches
"""

import asyncio
import binascii
import hashlib
import time

from micropython import const

from device.drivers import pn532

_CMD_TG_GET_DATA = const(0x86)  # UM0701-02 §7.3.16
_CMD_TG_INIT_AS_TARGET = const(0x8C)  # §7.3.14
_CMD_TG_SET_DATA = const(0x8E)  # §7.3.17
_STATUS_RELEASED = const(0x29)
_STATUS_DESELECTED = const(0x25)
_T4T_AID = const(b"\xd2\x76\x00\x00\x85\x01\x01")  # NFC Forum Type 4 Tag §5.4.2: NDEF application
_CC_FILE = const(b"\xe1\x03")
_NDEF_FILE = const(b"\xe1\x04")
# NFC Forum T4T §5.1 CC: CCLEN 15, mapping 2.0, MLe 0x3B (the largest READ BINARY answer we
# offer: fits one PN532 frame easily), MLc 0x34, NDEF File Control TLV (T 04, L 06, file E104,
# max size 256, read free 00, write never FF)
_CC = const(b"\x00\x0f\x20\x00\x3b\x00\x34\x04\x06\xe1\x04\x01\x00\x00\xff")


class TagMode:
    """The PN532 as an NFC Forum Type 4 tag whose NDEF URL is signed by the device:
    https://HOST/t/DEVICE?c=COUNTER&t=UNIXTIME&s=SIG (docs/nfc.md). The next URL is signed
    ahead of time (`prepare_async`), so a phone's read never waits for Ed25519. `sign` is a
    device.evidence.ed25519.Signer: it signs in steps."""

    def __init__(self, device_id, sign, base="https://kvitto.invalid", counter=0,
                 clock=time.time, on_read=None, signing=None):
        self.device_id = device_id
        self.sign = sign
        # an asyncio.Lock shared with the other signer of this key (device.app: the link's), so
        # one signature runs at a time: two interleaved hold two SHA-512 schedules and two sets
        # of big-int temporaries on the heap at once
        self.signing = signing or asyncio.Lock()
        self.base = base
        self.counter = counter
        self.clock = clock
        self.on_read = on_read
        # TgInitAsTarget's parameters, the same every window: built once, not per search.
        # UM0701-02 §7.3.14: mode 0x04 = PICC only; SENS_RES 0x0004, NFCID1t (3 bytes; the
        # PN532 forces the first UID byte to 0x08), SEL_RES 0x20 = ISO/IEC 14443-4; FeliCa
        # (18 bytes) and NFCID3t (10) unused, no general bytes, no historical bytes
        uid = hashlib.sha256(device_id.encode()).digest()[:3]
        self._params = b"\x04\x04\x00" + uid + b"\x20" + bytes(18 + 10 + 2)
        self._file = None  # NLEN ‖ NDEF message for counter + 1

    async def prepare_async(self):
        """Sign the next URL in ≤ 20 ms slices (device.evidence.ed25519.Signer.sign_steps), letting
        taps and MQTT run between them."""
        async with self.signing:
            # the time as the signature starts, not as it waited
            url = "%s/t/%s?c=%d&t=%d" % (self.base, self.device_id, self.counter + 1,
                                         self.clock())
            for _ in self.sign.sign_steps(url.encode()):
                await asyncio.sleep_ms(0)
            signature = binascii.b2a_base64(self.sign.signature).decode().strip().rstrip("=")
        url += "&s=" + signature.replace("+", "-").replace("/", "_")  # base64url (docs/nfc.md)
        # a short NDEF well-known URI record (NFC Forum RTD URI), prefix 0x04 = "https://"
        prefix = 0x04 if url.startswith("https://") else 0x00
        raw = (url[8:] if prefix else url).encode()
        message = bytes((0xD1, 0x01, len(raw) + 1, 0x55, prefix)) + raw
        self._file = bytes((len(message) >> 8, len(message) & 0xFF)) + message  # NLEN ‖ NDEF

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
            content = _CC if state[0] == "cc" else (self._file or b"")
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
            data = await nfc.acall(_CMD_TG_INIT_AS_TARGET, self._params, window_ms, flag)
        except pn532.Timeout:
            return False  # nobody came; acall aborted the wait with an ACK
        command = bytes(data[1:])  # §7.3.14: Mode, then the initiator's first command
        state = [None, False]
        for _ in range(32):  # a T4T read is about 6 APDUs; bound the session
            pn532.check_status(nfc.call(_CMD_TG_SET_DATA, self._answer(command, state)),
                               "TgSetData")
            try:
                command = pn532.check_status(nfc.call(_CMD_TG_GET_DATA, b""), "TgGetData")
            except pn532.CommandError as error:
                if error.status in (_STATUS_RELEASED, _STATUS_DESELECTED, 0x01):
                    break
                raise
        if not state[1]:
            return False
        self.counter += 1
        self._file = None
        if self.on_read is not None:
            self.on_read(self.counter)
        return True
