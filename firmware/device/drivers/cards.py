"""Card protocols on top of the PN532's InDataExchange: ISO/IEC 7816-4 APDUs over ISO-DEP (a
kvitto phone, an NTAG 424 DNA's SUN URL) and NDEF reads from NFC Forum Type 2 and Type 4 tags.

    from device.drivers import cards
    found = cards.read_iso_dep(nfc, target, rng, b"tag-0042")  # (kind, raw, extra) or None
    url = cards.parse_ndef_uri(cards.read_type4_ndef(nfc, target.number))

Its own module: device.roles.reader imports it on the first ISO-DEP card, so a tag that only ever
sees UID badges never has this code on its heap. The parsers are pure (fuzzed under CPython).
"""

from micropython import const

from device.drivers.pn532 import PN532Error, check_status

KVITTO_AID = b"\xf0kvitto\x01"  # docs/nfc.md: proprietary RID 0xF0 (ISO/IEC 7816-5) + name + v1
_CMD_IN_DATA_EXCHANGE = const(0x40)  # UM0701-02 §7.3.8
_INS_CHALLENGE = const(0x10)
_CLA_PROPRIETARY = const(0x80)
_NONCE_BYTES = const(16)
_SW_OK = const(0x9000)


class CardError(PN532Error):
    """A card answered, but not as the protocol says (APDU status, NDEF layout)."""


# --- parsers (pure: fuzzed under CPython) ----------------------------------------------------


def parse_apdu_response(response):
    """(data, SW1SW2) of an ISO/IEC 7816-4 response APDU."""
    if len(response) < 2:
        raise CardError("response APDU of %d bytes" % len(response))
    return bytes(response[:-2]), (response[-2] << 8) | response[-1]


def apdu(cla, ins, p1, p2, data=b"", le=None):
    """A short command APDU (ISO/IEC 7816-4 §5.1)."""
    out = bytearray((cla, ins, p1, p2))
    if data:
        out.append(len(data))
        out.extend(data)
    if le is not None:
        out.append(le & 0xFF)
    return bytes(out)


def parse_ndef_tlv(memory):
    """The NDEF message inside Type 2 tag memory from page 4 (NFC Forum T2T §2.3: TLVs)."""
    i = 0
    n = len(memory)
    while i < n:
        tag = memory[i]
        if tag == 0x00:  # NULL TLV
            i += 1
            continue
        if tag == 0xFE:  # terminator before any NDEF TLV
            break
        if i + 1 >= n:
            break
        length = memory[i + 1]
        i += 2
        if length == 0xFF:
            if i + 2 > n:
                break
            length = (memory[i] << 8) | memory[i + 1]
            i += 2
        if i + length > n:
            raise CardError("TLV runs past the read memory")
        if tag == 0x03:
            return bytes(memory[i : i + length])
        i += length
    raise CardError("no NDEF TLV")


_URI_PREFIXES = ("", "http://www.", "https://www.", "http://", "https://")


def parse_ndef_uri(message):
    """The URI of the first record if it is a well-known "U" record (NFC Forum RTD URI)."""
    if len(message) < 4:
        raise CardError("NDEF message too short")
    header = message[0]
    type_length = message[1]
    i = 2
    if header & 0x10:  # SR: one payload-length byte
        payload_length = message[i]
        i += 1
    else:
        if len(message) < 7:
            raise CardError("NDEF record header")
        payload_length = (
            (message[2] << 24) | (message[3] << 16) | (message[4] << 8) | message[5]
        )
        i += 4
    id_length = 0
    if header & 0x08:  # IL
        if i >= len(message):
            raise CardError("NDEF record header")
        id_length = message[i]
        i += 1
    if header & 0x07 != 0x01 or type_length != 1 or i >= len(message) or message[i] != 0x55:
        raise CardError("not a well-known URI record")
    i += 1 + id_length
    payload = message[i : i + payload_length]
    if len(payload) != payload_length or payload_length < 1:
        raise CardError("URI record payload truncated")
    prefix = _URI_PREFIXES[payload[0]] if payload[0] < len(_URI_PREFIXES) else ""
    try:
        return prefix + bytes(payload[1:]).decode()
    except UnicodeError:
        raise CardError("URI is not UTF-8")


def sun_from_url(url):
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
        raise CardError("NDEF URL carries no SUN (e=, c=)")
    try:
        return bytes.fromhex(picc + mac)
    except ValueError:
        raise CardError("SUN parameters are not hex")


# --- exchanges with a target (nfc: a device.drivers.pn532.PN532) ---------------------------------


def data_exchange(nfc, target, data):
    """InDataExchange (UM0701-02 §7.3.8): send `data` to the target, return its answer. Only
    card protocols send it, so it lives here and not on every tag's heap in the driver."""
    return check_status(nfc.call(_CMD_IN_DATA_EXCHANGE, data, None, target), "InDataExchange")


def transceive_apdu(nfc, target, command):
    """ISO-DEP: one command APDU to `target`, (data, SW). The PN532 does the 14443-4
    chaining and the WTX itself (UM0701-02 §7.3.8)."""
    return parse_apdu_response(data_exchange(nfc, target, command))


def select_aid(nfc, target, aid):
    return transceive_apdu(nfc, target, apdu(0x00, 0xA4, 0x04, 0x00, aid, 0x00))


def read_ntag21x_ndef(nfc, target, pages=36):
    """NTAG 21x: READ (0x30) returns 4 pages (16 bytes) from page 4 on; the NDEF TLV
    starts at page 4 (NFC Forum Type 2 Tag §2.3)."""
    memory = bytearray()
    page = 4
    while page < 4 + pages:
        chunk = data_exchange(nfc, target, bytes((0x30, page)))
        if len(chunk) != 16:
            raise CardError("NTAG READ returned %d bytes" % len(chunk))
        memory.extend(chunk)
        try:
            return parse_ndef_tlv(memory)
        except CardError:
            pass
        page += 4
    return parse_ndef_tlv(memory)


def read_type4_ndef(nfc, target):
    """NFC Forum Type 4 Tag: NDEF application, NDEF file E104 (NTAG 424 DNA default),
    NLEN then the message, in plain mode (no authentication: the SUN needs none)."""
    _, sw = select_aid(nfc, target, b"\xd2\x76\x00\x00\x85\x01\x01")
    if sw != 0x9000:
        raise CardError("no NDEF application (SW %04x)" % sw)
    _, sw = transceive_apdu(nfc, target, apdu(0x00, 0xA4, 0x00, 0x0C, b"\xe1\x04"))
    if sw != 0x9000:
        raise CardError("no NDEF file (SW %04x)" % sw)
    head, sw = transceive_apdu(nfc, target, apdu(0x00, 0xB0, 0x00, 0x00, b"", 2))
    if sw != 0x9000 or len(head) != 2:
        raise CardError("NLEN read failed (SW %04x)" % sw)
    length = (head[0] << 8) | head[1]
    message = bytearray()
    offset = 2
    while len(message) < length:
        chunk = min(0x3A, length - len(message))
        part, sw = transceive_apdu(
            nfc, target, apdu(0x00, 0xB0, offset >> 8, offset & 0xFF, b"", chunk)
        )
        if sw != 0x9000 or not part:
            raise CardError("NDEF read failed (SW %04x)" % sw)
        message.extend(part)
        offset += len(part)
    return bytes(message[:length])


# --- credentials (device.roles.reader) -----------------------------------------------------------


def read_iso_dep(nfc, target, rng, device_id):
    """What an ISO-DEP target carries, as (kind, raw, extra): a kvitto phone, an NTAG 424
    with SUN, or a phone without the app ("unknown"); None: read it as a badge by UID.

    CommandError (the card left mid-read, §7.1 status 01) propagates: no tap at all rather
    than a weaker one; CardError (an APDU refused) tries the next kind."""
    _, sw = select_aid(nfc, target.number, KVITTO_AID)
    if sw == _SW_OK:
        return _phone(nfc, target, rng, device_id)
    try:
        url = parse_ndef_uri(read_type4_ndef(nfc, target.number))
        return "ntag424", target.uid, {"sun": sun_from_url(url)}
    except CardError:
        pass
    if len(target.uid) == 4 and target.uid[0] == 0x08:
        # ISO/IEC 14443-3 random UID (a phone without the app): identifies nobody
        return "unknown", target.uid, {}
    return None


def _phone(nfc, target, rng, device_id):
    if rng is None:
        import os

        rng = os.urandom
    nonce = rng(_NONCE_BYTES)
    command = apdu(_CLA_PROPRIETARY, _INS_CHALLENGE, 0x00, 0x00, nonce + device_id, 0x00)
    data, sw = transceive_apdu(nfc, target.number, command)
    if sw != _SW_OK or len(data) != 80:
        raise CardError("phone answer: SW %04x, %d bytes" % (sw, len(data)))
    # key id 16 ‖ Ed25519 signature 64 over nonce ‖ device id; the host verifies
    return "phone", bytes(data[:16]), {"nonce": nonce, "sig": bytes(data[16:])}
