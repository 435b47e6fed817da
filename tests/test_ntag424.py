"""NTAG 424 DNA SUN on the host: NXP's published example values, AN10922 diversification, the
simulator's SUN messages verify, and a replayed or decreased counter is refused."""

from __future__ import annotations

import pytest
from pn532_support import firmware_modules

from kvitto.errors import KvittoError
from kvitto.evidence.ntag424 import (
    MemoryCounters,
    SunFormatError,
    SunMacError,
    SunReplayError,
    an10922_diversify,
    badge_file_key,
    decrypt_picc_data,
    parse_sun_url,
    sdm_mac,
    verify_sun,
)

ZERO = bytes(16)
# NXP AN12196 §3.4 example (factory keys, all zero)
AN12196_URL = (
    "https://choose.url.com/ntag424?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086"
)
AN12196_UID = bytes.fromhex("04DE5F1EACC040")


def test_an12196_example_decrypts_and_verifies():
    sun = parse_sun_url(AN12196_URL)
    result = decrypt_picc_data(ZERO, sun[:16])
    assert result.uid == AN12196_UID
    assert result.counter == 61  # SDMReadCtr 3D 00 00, LSB first
    assert sdm_mac(ZERO, AN12196_UID, 61) == bytes.fromhex("94EED9EE65337086")
    assert verify_sun(sun, ZERO, file_key=ZERO).counter == 61


def test_an10922_example():
    # AN10922 §2.2.1: AES-128 master key, UID 04782E21801D80, AID 3042F5, "NXP Abu"
    master = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    m = bytes.fromhex("04782E21801D803042F54E585020416275")
    assert an10922_diversify(master, m) == bytes.fromhex("A8DD63A3B89D54B37CA802473FDA9175")


def test_altered_mac_or_wrong_key_is_refused():
    sun = parse_sun_url(AN12196_URL)
    with pytest.raises(SunMacError):
        verify_sun(sun[:-1] + bytes([sun[-1] ^ 1]), ZERO, file_key=ZERO)
    with pytest.raises(SunMacError):
        verify_sun(sun, ZERO, file_key=bytes(15) + b"\x01")
    with pytest.raises(SunFormatError):
        verify_sun(sun, bytes(15) + b"\x01", file_key=ZERO)  # wrong meta key: no C7 tag
    with pytest.raises(SunFormatError):
        verify_sun(sun[:20], ZERO, file_key=ZERO)
    assert issubclass(SunMacError, KvittoError)


def test_replayed_and_decreased_counters_are_refused():
    counters = MemoryCounters()
    sun = parse_sun_url(AN12196_URL)
    verify_sun(sun, ZERO, file_key=ZERO, counters=counters)
    with pytest.raises(SunReplayError, match="61"):
        verify_sun(sun, ZERO, file_key=ZERO, counters=counters)
    counters.advance(AN12196_UID, 70)
    _, sim, _ = firmware_modules()
    picc, mac = sim.sun_message(ZERO, ZERO, AN12196_UID, 65)
    with pytest.raises(SunReplayError, match="65"):
        verify_sun(picc + mac, ZERO, file_key=ZERO, counters=counters)


def test_simulator_badges_with_diversified_keys_verify():
    _, sim, _ = firmware_modules()
    meta = bytes(range(16))
    file_master = bytes(range(16, 32))
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    badge = sim.Ntag424(uid, meta_key=meta, file_key=badge_file_key(file_master, uid), counter=7)
    counters = MemoryCounters()
    seen = []
    for _ in range(3):
        badge.activate()
        content = badge.apdu(0, 0xA4, 4, 0, b"\x07" + sim.NDEF_AID + b"\x00")
        assert content == b"\x90\x00"
        badge.apdu(0, 0xA4, 0, 0x0C, b"\x02\xe1\x04")
        badge.apdu(0, 0xB0, 0, 0, b"\x02")
        sun = badge.last_sun
        seen.append(verify_sun(sun, meta, file_master=file_master, counters=counters).counter)
    assert seen == [8, 9, 10]
    # the simulator's CMAC agrees with cryptography's
    from kvitto.evidence.ntag424 import aes_cmac

    for n in (0, 1, 15, 16, 17, 32, 40):
        assert sim.aes_cmac(meta, bytes(range(n))) == aes_cmac(meta, bytes(range(n)))
    assert sim.an10922_diversify(file_master, uid + b"kvitto") == badge_file_key(file_master, uid)


def test_sun_event_checks_credential_and_counter():
    import hashlib
    import hmac

    from kvitto.evidence.ntag424 import SunError, verify_sun_event

    _, sim, _ = firmware_modules()
    salt = b"s" * 32
    master = bytes(range(16, 32))
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    picc, mac = sim.sun_message(ZERO, badge_file_key(master, uid), uid, 5)
    x = {"via": "ntag424", "sun": picc + mac}
    cred = hmac.new(salt, uid, hashlib.sha256).digest()[:16]
    counters = MemoryCounters()
    assert verify_sun_event(x, cred, ZERO, master, counters, salt).counter == 5
    with pytest.raises(SunReplayError):
        verify_sun_event(x, cred, ZERO, master, counters, salt)
    with pytest.raises(SunError, match="is not badge"):
        verify_sun_event(x, bytes(16), ZERO, master, None, salt)
