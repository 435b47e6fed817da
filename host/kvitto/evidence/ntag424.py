"""NTAG 424 DNA SUN verification on the host (NXP AN12196, keys per AN10922), one step a function.

    counters = MemoryCounters()
    result = verify_sun(sun, meta_key=org_meta_key, file_master=org_file_key, counters=counters)
    print(result.uid.hex(), result.counter)      # raises SunError on a bad MAC or replay

The device forwards the mirrored PICC data (16 bytes) and SDMMAC (8 bytes) as the event's
`x.sun` (PICC data ‖ MAC); it holds no keys. The host decrypts the PICC data with the SDM meta
read key, derives the badge's file read key from the UID, checks the MAC, and refuses a read
counter that does not increase for that badge.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from kvitto.errors import KvittoError

PICC_DATA_TAG_UID_CTR = 0xC7  # AN12196 §3.4.2: UID and SDMReadCtr mirrored, 7-byte UID
SV2_PREFIX = bytes.fromhex("3CC300010080")  # AN12196 §3.4.4: session vector for the MAC key
SYSTEM_IDENTIFIER = b"kvitto"  # AN10922 §2.2: our diversification input after the UID


class SunError(KvittoError):
    """An NTAG 424 SUN message that does not prove a fresh tap."""


class SunFormatError(SunError):
    """Not 16 + 8 bytes, or PICC data that does not decrypt to a UID-and-counter block."""


class SunMacError(SunError):
    """The SDMMAC does not verify: wrong key, or the data was altered."""


class SunReplayError(SunError):
    """The read counter did not increase for this badge: a copied or replayed message."""


@dataclass(frozen=True)
class SunResult:
    uid: bytes
    counter: int


class CounterStore(Protocol):
    """The last accepted read counter per badge; the collector persists it."""

    def last(self, uid: bytes) -> int | None: ...

    def advance(self, uid: bytes, counter: int) -> None: ...


class MemoryCounters:
    """CounterStore in memory (tests, one-shot verification)."""

    def __init__(self) -> None:
        self.values: dict[bytes, int] = {}

    def last(self, uid: bytes) -> int | None:
        return self.values.get(uid)

    def advance(self, uid: bytes, counter: int) -> None:
        self.values[uid] = counter


def _ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _double(block: bytes) -> bytes:
    value = int.from_bytes(block, "big") << 1
    if block[0] & 0x80:
        value ^= 0x87
    return (value & ((1 << 128) - 1)).to_bytes(16, "big")


def an10922_diversify(master: bytes, diversification_input: bytes) -> bytes:
    """AN10922 §2.2.1 AES-128: CMAC over 0x01 ‖ M where the block pair is always padded to
    32 bytes (so it differs from plain CMAC for short M). M is 1..31 bytes."""
    if not 1 <= len(diversification_input) <= 31:
        raise SunError("AN10922 diversification input must be 1..31 bytes")
    data = b"\x01" + diversification_input
    k1 = _double(_ecb(master, bytes(16)))
    k2 = _double(k1)
    if len(data) == 32:
        last = k1
    else:
        data = data + b"\x80" + bytes(31 - len(data))
        last = k2
    data = data[:16] + bytes(a ^ b for a, b in zip(data[16:], last, strict=True))
    encryptor = Cipher(algorithms.AES(master), modes.CBC(bytes(16))).encryptor()
    return (encryptor.update(data) + encryptor.finalize())[-16:]


def badge_file_key(file_master: bytes, uid: bytes) -> bytes:
    """The badge's SDM file read key: AN10922 with M = UID ‖ "kvitto"."""
    return an10922_diversify(file_master, uid + SYSTEM_IDENTIFIER)


def split_sun(sun: bytes) -> tuple[bytes, bytes]:
    if len(sun) != 24:
        raise SunFormatError(f"SUN data is {len(sun)} bytes, expected 16 PICC data + 8 MAC")
    return sun[:16], sun[16:]


def parse_sun_url(url: str) -> bytes:
    """PICC data ‖ MAC from an SDM URL with e=/c= (or picc_data=/cmac=) parameters."""
    query = parse_qs(urlsplit(url).query)
    picc = (query.get("e") or query.get("picc_data") or [""])[0]
    mac = (query.get("c") or query.get("cmac") or [""])[0]
    try:
        sun = bytes.fromhex(picc) + bytes.fromhex(mac)
    except ValueError:
        raise SunFormatError(f"SUN URL parameters are not hex: {url!r}") from None
    split_sun(sun)
    return sun


def decrypt_picc_data(meta_key: bytes, picc: bytes) -> SunResult:
    """AN12196 §3.4.2: AES-CBC (zero IV, one block) with K_SDMMetaRead gives
    PICCDataTag ‖ UID(7) ‖ SDMReadCtr(3, LSB first) ‖ padding."""
    plain = _ecb(meta_key, picc, decrypt=True)
    if plain[0] != PICC_DATA_TAG_UID_CTR:
        raise SunFormatError(f"PICCDataTag 0x{plain[0]:02x}: wrong meta read key or layout")
    return SunResult(uid=plain[1:8], counter=int.from_bytes(plain[8:11], "little"))


def session_mac_key(file_key: bytes, uid: bytes, counter: int) -> bytes:
    """AN12196 §3.4.4: KSesSDMFileReadMAC = CMAC(K_SDMFileRead, SV2)."""
    return aes_cmac(file_key, SV2_PREFIX + uid + counter.to_bytes(3, "little"))


def sdm_mac(file_key: bytes, uid: bytes, counter: int, mac_input: bytes = b"") -> bytes:
    """AN12196 §3.4.4: MACt = the odd-indexed bytes of CMAC(session key, input)."""
    full = aes_cmac(session_mac_key(file_key, uid, counter), mac_input)
    return full[1::2]


def check_counter(counters: CounterStore | None, uid: bytes, counter: int) -> None:
    if counters is None:
        return
    last = counters.last(uid)
    if last is not None and counter <= last:
        raise SunReplayError(
            f"badge {uid.hex()}: read counter {counter} is not above the last accepted {last}"
        )


def accept_counter(counters: CounterStore | None, result: SunResult) -> None:
    """A replay check that passes moves the badge's last accepted counter up to this read."""
    check_counter(counters, result.uid, result.counter)
    if counters is not None:
        counters.advance(result.uid, result.counter)


def verify_sun(
    sun: bytes,
    meta_key: bytes,
    file_key: bytes | None = None,
    file_master: bytes | None = None,
    counters: CounterStore | None = None,
    mac_input: bytes = b"",
) -> SunResult:
    """Decrypt, derive, check the MAC, check and advance the counter. Give `file_key` for a
    badge with a fixed key, or `file_master` to diversify it per badge (AN10922)."""
    picc, mac = split_sun(sun)
    result = decrypt_picc_data(meta_key, picc)
    if file_key is None:
        if file_master is None:
            raise SunError("verify_sun needs file_key or file_master")
        file_key = badge_file_key(file_master, result.uid)
    if sdm_mac(file_key, result.uid, result.counter, mac_input) != mac:
        raise SunMacError(f"badge {result.uid.hex()}: SDMMAC does not verify")
    accept_counter(counters, result)
    return result


def verify_sun_event(
    x: dict,
    cred: bytes,
    meta_key: bytes,
    file_master: bytes,
    counters: CounterStore | None = None,
    salt: bytes | None = None,
) -> SunResult:
    """Check an arrive/depart event's NTAG 424 proof (x["sun"]); with `salt`, also that the
    event's credential id is HMAC(salt, the UID inside the SUN)."""
    sun = x.get("sun")
    if not isinstance(sun, bytes):
        raise SunFormatError("event x lacks sun (bstr of PICC data and MAC)")
    result = verify_sun(sun, meta_key, file_master=file_master, counters=None)
    if salt is not None and hmac.new(salt, result.uid, hashlib.sha256).digest()[:16] != cred:
        raise SunError(f"event credential {cred.hex()} is not badge {result.uid.hex()}")
    accept_counter(counters, result)
    return result
