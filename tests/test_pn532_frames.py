"""PN532 frames against the user manual's examples (UM0701-02 §6.2) and a fuzz of the parsers
under CPython: only the driver's own errors come out, never anything else, never a hang."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pn532_support import firmware_modules

pn532, pn532sim, buses = firmware_modules()
from device.drivers import cards, pn532_diag  # type: ignore[import-not-found]  # noqa: E402  (path set just above)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# UM0701-02 §7.2.2 (GetFirmwareVersion) and §6.2.1.3-5 (ACK, NACK, error frame)
GET_FIRMWARE_VERSION = h("00 00 FF 02 FE D4 02 2A 00")
FIRMWARE_RESPONSE = h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")
SAM_CONFIGURATION = h("00 00 FF 05 FB D4 14 01 14 01 02 00")
ERROR_FRAME = h("00 00 FF 01 FF 7F 81 00")


def test_get_firmware_version_frame_matches_the_manual():
    assert pn532_diag.build_frame(b"\xd4\x02") == GET_FIRMWARE_VERSION


def test_sam_configuration_frame():
    assert pn532_diag.build_frame(b"\xd4\x14\x01\x14\x01") == SAM_CONFIGURATION


def test_firmware_response_parses():
    body = pn532.parse_frame(FIRMWARE_RESPONSE)
    assert body == h("D5 03 32 01 06 07")
    assert body[2:] == h("32 01 06 07")


def test_ack_nack_error_frames():
    assert pn532.ACK == h("00 00 FF 00 FF 00")
    assert pn532.NACK == h("00 00 FF FF 00 00")
    assert pn532.parse_frame(pn532.ACK) == b""
    with pytest.raises(pn532.FrameError, match="NACK"):
        pn532.parse_frame(pn532.NACK)
    # a NACK behind garbage is still the other side's answer, not garbage to skip
    with pytest.raises(pn532.FrameError, match="NACK"):
        pn532.parse_frame(h("55 AA") + pn532.NACK)
    with pytest.raises(pn532.PN532Error, match="error frame") as error:
        pn532.parse_frame(ERROR_FRAME)
    assert not isinstance(error.value, pn532.FrameError)  # not sent again: the PN532 said no


def test_extended_frame_round_trip_and_layout():
    body = b"\xd4\x40\x01" + bytes(range(256)) + b"\x00\x01\x02"
    frame = pn532_diag.build_frame(body)
    n = len(body)
    # §6.2.1.2: 00 00 FF FF FF LENM LENL LCS TFI ... DCS 00
    assert frame[:5] == h("00 00 FF FF FF")
    assert frame[5:7] == bytes((n >> 8, n & 0xFF))
    assert (frame[5] + frame[6] + frame[7]) & 0xFF == 0
    assert frame[-1] == 0 and (sum(body) + frame[-2]) & 0xFF == 0
    assert pn532.parse_frame(frame) == body


def test_normal_frame_up_to_254_bytes():
    body = b"\xd4" + bytes(253)
    frame = pn532_diag.build_frame(body)
    assert frame[3] == 254 and len(frame) == 254 + 7
    assert pn532.parse_frame(frame) == body


def test_checksum_errors_are_named():
    bad_dcs = bytearray(FIRMWARE_RESPONSE)
    bad_dcs[-2] ^= 1
    with pytest.raises(pn532.FrameError, match="DCS"):
        pn532.parse_frame(bytes(bad_dcs))
    bad_lcs = bytearray(FIRMWARE_RESPONSE)
    bad_lcs[4] ^= 1
    with pytest.raises(pn532.FrameError, match="LCS"):
        pn532.parse_frame(bytes(bad_lcs))


def test_garbage_before_the_frame_is_skipped():
    assert pn532.parse_frame(h("55 AA 13 00 FF 00") + FIRMWARE_RESPONSE)[:2] == h("D5 03")


def test_truncated_and_empty():
    for cut in range(len(FIRMWARE_RESPONSE) - 1):
        with pytest.raises(pn532.FrameError):
            pn532.parse_frame(FIRMWARE_RESPONSE[:cut])


def test_build_frame_refuses_empty_and_oversized_bodies():
    with pytest.raises(pn532.FrameError):
        pn532_diag.build_frame(b"")
    with pytest.raises(pn532.FrameError):
        pn532_diag.build_frame(bytes(266))


def test_simulator_frames_agree_with_the_driver():
    # two independent readings of §6.2.1 must produce the same bytes
    for n in (1, 2, 100, 254, 255, 265):
        body = bytes((0xD5,)) + bytes((i * 7) & 0xFF for i in range(n - 1))
        assert pn532sim.frame(body) == pn532_diag.build_frame(body)


def test_target_parser_for_iso_dep_with_ats():
    data = h("01 01 03 44 20 07 04 DE 5F 1E AC C0 40 06 77 77 71 02 80")
    target = pn532.parse_target_a(data)
    assert target.uid == h("04 DE 5F 1E AC C0 40")
    assert target.iso_dep and target.number == 1 and target.sel_res == 0x20
    assert pn532.parse_target_a(b"\x00") is None


def test_status_byte_errors():
    with pytest.raises(pn532.CommandError) as error:
        pn532.check_status(b"\x01", "InDataExchange")
    assert error.value.status == 0x01
    assert pn532.check_status(b"\x40\xaa", "x") == b"\xaa"  # MI bit is not an error


def test_ndef_uri_record():
    message = pn532sim.uri_record("https://kvitto.invalid/sun?e=00&c=11")
    memory = bytes((0x03, len(message))) + message + b"\xfe"
    assert cards.parse_ndef_uri(cards.parse_ndef_tlv(memory)) == (
        "https://kvitto.invalid/sun?e=00&c=11"
    )


DRIVER_ERRORS = (pn532.PN532Error,)
PARSERS = (
    lambda b: pn532.parse_frame(b),
    lambda b: pn532.parse_target_a(b),
    lambda b: pn532.check_status(b, "x"),
    lambda b: pn532_diag.parse_tg_init(b),
    lambda b: cards.parse_apdu_response(b),
    lambda b: cards.parse_ndef_tlv(b),
    lambda b: cards.parse_ndef_uri(b),
    lambda b: pn532.frame_end(b, len(b)),
)


def mutated_frames():
    """Valid frames with bytes flipped, cut, or garbage in front: close to real faults."""
    bodies = st.binary(min_size=1, max_size=300).map(lambda b: b[:265])
    return st.tuples(bodies, st.binary(max_size=8), st.integers(0, 400), st.integers(0, 255)).map(
        _mutate
    )


def _mutate(parts):
    body, prefix, position, value = parts
    frame = bytearray(prefix + pn532_diag.build_frame(body))
    if position < len(frame):
        frame[position] = value
    else:
        del frame[position % len(frame) :]
    return bytes(frame)


@settings(max_examples=5000)
@given(st.one_of(st.binary(max_size=300), mutated_frames()))
def test_fuzz_parsers_raise_only_driver_errors(data):
    for parse in PARSERS:
        try:
            parse(data)
        except DRIVER_ERRORS:
            pass


@settings(max_examples=1000)
@given(st.binary(min_size=1, max_size=265))
def test_fuzz_build_parse_round_trip(body):
    if body == b"\x7f":  # the one body that is the error frame (§6.2.1.5)
        with pytest.raises(pn532.PN532Error, match="error frame"):
            pn532.parse_frame(pn532_diag.build_frame(body))
    else:
        assert pn532.parse_frame(pn532_diag.build_frame(body)) == body
