"""Every PN532 command against the simulator on the unix port, over I2C, SPI and HSU; faults
(garbage, dropped ACK, checksum errors, clock stretching) and exact bytes on the bus."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pn532_support import DEVICE_PRELUDE, TRANSPORTS


def run(micropython, kind: str, body: str) -> dict[str, str]:
    out = micropython(DEVICE_PRELUDE + f"\nmodel, bus, nfc = make({kind!r})\n" + body)
    result = {}
    for line in out.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            result[key] = value
    return result


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_every_command_over_each_transport(micropython, kind):
    got = run(
        micropython,
        kind,
        """
from device.drivers import cards, pn532_diag
print("fw=%r" % (nfc.begin(),))
print("sam=%r" % model.sam)
print("retries=%d" % model.retries)
print("none=%r" % (pn532_diag.list_passive_target(nfc),))
model.place(UidCard(b"\\x04\\x11\\x22\\x33"))
t = pn532_diag.list_passive_target(nfc)
print("uid=%s sel=%02x iso=%r" % (t.uid.hex(), t.sel_res, t.iso_dep))
try:
    cards.data_exchange(nfc, t.number, b"\\x30\\x04")
except pn532.CommandError as e:
    print("classic=status %02x" % e.status)
nfc.release(t.number)
model.place(Ntag213(b"\\x04\\xa1\\xb2\\xc3\\xd4\\xe5\\xf6", uri_record("https://kvitto.invalid/x")))
t = pn532_diag.list_passive_target(nfc)
ndef = cards.read_ntag21x_ndef(nfc, t.number)
print("ntag213=%s" % cards.parse_ndef_uri(ndef))
nfc.release(t.number)
model.place(Ntag424(bytes.fromhex("04DE5F1EACC040"), counter=60))
t = pn532_diag.list_passive_target(nfc)
print("ntag424_iso_dep=%r" % t.iso_dep)
print("ntag424=%s" % cards.parse_ndef_uri(cards.read_type4_ndef(nfc, t.number)))
nfc.release(t.number)
model.remove()
pn532_diag.set_max_retries(nfc, 0xff, 0x01, 0xff)
pn532_diag.start_list_passive_target(nfc)
print("waiting=%r" % (nfc.poll(),))
model.place(UidCard(b"\\x04\\x99\\x88\\x77"))
print("arrived=%s" % pn532.parse_target_a(nfc.poll()).uid.hex())
nfc.release(1)
# PowerDown: the PN532 answers, sleeps, and takes no command until woken (§7.2.11)
wake = pn532_diag.WAKE_I2C | pn532_diag.WAKE_SPI | pn532_diag.WAKE_HSU
pn532_diag.power_down(nfc, wake)
print("asleep=%r" % model.asleep)
try:
    nfc.firmware_version()
    print("sleeping_answered=yes")
except pn532.PN532Error as e:
    print("sleeping_answered=no")
pn532_diag.wake_up(nfc)
print("woken=%r fw2=%r" % (model.asleep, nfc.firmware_version()))
# tag mode: a phone reads the PN532 as an NFC Forum Type 4 tag
phone = TagReaderPhone()
model.phone_reads(phone)
mifare = b"\\x04\\x00\\x12\\x34\\x56\\x20"
mode, first = pn532_diag.init_as_target(nfc, mifare, bytes(18), bytes(10))
print("tg_mode=%02x first=%s nfcid1=%s" % (mode, first.hex(), model.nfcid1.hex()))
pn532.check_status(nfc.call(0x8E, b"\\x6a\\x82"), "TgSetData")
try:
    pn532.check_status(nfc.call(0x86, b""), "TgGetData")
except pn532.CommandError as e:
    print("tg_end=%02x" % e.status)
print("phone_error=%s" % phone.error)
print("commands=%s" % ",".join("%02x" % c for c in sorted(set(model.commands))))
""",
    )
    assert got["fw"] == "(50, 1, 6, 7)"
    assert got["sam"] == "True"
    assert got["retries"] == "5"
    assert got["none"] == "None"
    assert got["uid"] == "04112233 sel=08 iso=False"
    assert got["classic"] == "status 01"
    assert got["ntag213"] == "https://kvitto.invalid/x"
    assert got["ntag424_iso_dep"] == "True"
    assert got["ntag424"].startswith("https://kvitto.invalid/sun?e=")
    assert got["waiting"] == "None"
    assert got["arrived"] == "04998877"
    assert got["asleep"] == "True"
    # I2C NAKs the waking access, HSU needs the 0x55 preamble; SPI's NSS wakes it and the
    # driver's resend (no ACK the first time) carries the command
    assert got["sleeping_answered"] == ("yes" if kind == "spi" else "no")
    assert got["woken"] == "False fw2=(50, 1, 6, 7)"
    assert got["tg_mode"] == "04 first=00a4040007d276000085010100 nfcid1=08123456"
    assert got["tg_end"] == "29"
    assert got["phone_error"] == "SELECT NDEF application failed: 6A82"
    assert got["commands"] == "02,14,16,32,40,4a,52,86,8c,8e"


@pytest.mark.parametrize("kind", ["i2c", "spi", "hsu"])
def test_exact_bytes_on_the_bus(micropython, kind):
    got = run(
        micropython,
        kind,
        """
nfc.firmware_version()
for op, data in bus.log:
    if data:
        print("%s=%s" % (op, data.hex()))
""",
    )
    if kind == "i2c":
        # §6.2.4: the frame as written, reads start with the status byte 01
        assert got["w"] == "0000ff02fed4022a00"
        assert got["r"].startswith("010000ff06fad50332010607e800")
    elif kind == "spi":
        assert got["dw"] == "0000ff02fed4022a00"  # DW prefix 01 is the SPI command, not data
    else:
        assert got["w"] == "0000ff02fed4022a00"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_faults_are_survived(micropython, kind):
    got = run(
        micropython,
        kind,
        """
nfc.begin()
model.fault_garbage()
print("garbage=%r" % (nfc.firmware_version(),))
model.fault_drop_ack()
print("dropped_ack=%r" % (nfc.firmware_version(),))
model.fault_checksum()
print("checksum=%r" % (nfc.firmware_version(),))
model.fault_drop_ack(2)  # both tries of one command
try:
    nfc.firmware_version()
except pn532.Timeout:
    print("lost=timeout")
model.fault_checksum(5)
try:
    nfc.firmware_version()
except pn532.FrameError as e:
    print("corrupt=%s" % e)
print("after=%r" % (nfc.firmware_version(),))
""",
    )
    assert got["garbage"] == "(50, 1, 6, 7)"
    assert got["dropped_ack"] == "(50, 1, 6, 7)"
    assert got["checksum"] == "(50, 1, 6, 7)"
    assert got["lost"] == "timeout"
    assert got["corrupt"] == "DCS"
    assert got["after"] == "(50, 1, 6, 7)"


def test_i2c_clock_stretching_beyond_the_bus_timeout_is_named(micropython):
    got = run(
        micropython,
        "i2c",
        """
model.stretch_us = 30000
print("long_timeout=%r" % (nfc.firmware_version(),))
short = PN532(I2CTransport(SimI2C(model, timeout_us=10000)))
try:
    short.firmware_version()
except pn532.PN532Error as e:
    print("short_timeout=%s" % e)
""",
    )
    assert got["long_timeout"] == "(50, 1, 6, 7)"
    assert "clock stretching" in got["short_timeout"]


def test_spi_with_msb_first_fails_as_on_real_hardware(micropython):
    got = run(
        micropython,
        "spi",
        """
wrong = SimSPI(model, firstbit=SimSPI.MSB)
nfc = PN532(SPITransport(wrong, wrong.cs), ack_timeout_ms=5)
try:
    nfc.firmware_version()
except pn532.PN532Error as e:
    print("msb=%s" % type(e).__name__)
""",
    )
    assert got["msb"] in ("Timeout", "FrameError")


def test_long_response_over_i2c_is_read_again_after_nack(micropython):
    got = run(
        micropython,
        "i2c",
        """
from device.drivers import cards, pn532_diag
nfc.begin()
phone = HcePhone(bytes(range(16)), lambda m: bytes(64))
model.place(phone)
t = pn532_diag.list_passive_target(nfc)
print("select=%r" % (cards.select_aid(nfc, t.number, b"\\xf0kvitto\\x01"),))
challenge = cards.apdu(0x80, 0x10, 0, 0, bytes(16) + b"tag-0042", 0)
data, sw = cards.transceive_apdu(nfc, t.number, challenge)
print("answer=%d sw=%04x" % (len(data), sw))
print("nacks=%d" % sum(1 for op, d in bus.log if d == pn532.NACK))
""",
    )
    assert got["select"] == "(b'\\x01', 36864)"
    assert got["answer"] == "80 sw=9000"
    assert got["nacks"] == "1"


@pytest.mark.parametrize("kind", ["i2c", "spi", "hsu"])
def test_driver_and_simulator_under_cpython(kind):
    """The same driver and simulator run under CPython; the SUN read verifies on the host."""
    from pn532_support import firmware_modules

    from kvitto.evidence.ntag424 import verify_sun

    pn532, sim, buses = firmware_modules()
    from device.drivers import cards, pn532_i2c, pn532_spi, pn532_uart  # type: ignore[import-not-found]
    from device.drivers.pn532_diag import list_passive_target  # type: ignore[import-not-found]

    model = sim.PN532Sim()
    if kind == "i2c":
        transport = pn532_i2c.I2CTransport(buses.SimI2C(model), irq=model.irq)
    elif kind == "spi":
        spi = buses.SimSPI(model)
        transport = pn532_spi.SPITransport(spi, spi.cs)
    else:
        transport = pn532_uart.UARTTransport(buses.SimUART(model))
    nfc = pn532.PN532(transport, reset=model.rstpd)
    assert nfc.begin() == (0x32, 0x01, 0x06, 0x07)
    model.place(sim.Ntag424(bytes.fromhex("04DE5F1EACC040"), counter=60))
    target = list_passive_target(nfc)
    url = cards.parse_ndef_uri(cards.read_type4_ndef(nfc, target.number))
    picc, mac = url.split("e=")[1].split("&c=")
    result = verify_sun(bytes.fromhex(picc + mac), bytes(16), file_key=bytes(16))
    assert (result.uid.hex(), result.counter) == ("04de5f1eacc040", 61)
    assert mac == "94EED9EE65337086"  # AN12196's MAC: it depends only on UID and counter


def test_present_holds_a_credential_then_takes_it_away(micropython):
    got = run(
        micropython,
        "i2c",
        """
import time
from device.drivers import cards, pn532_diag
nfc.begin()
model.present("badge", b"\\x04\\x10\\x20\\x30", hold_ms=40)
print("held=%s" % pn532_diag.list_passive_target(nfc).uid.hex())
nfc.release(1)
time.sleep_ms(60)
print("gone=%r" % (pn532_diag.list_passive_target(nfc),))
model.present("phone", bytes(16), hold_ms=1000)
t = pn532_diag.list_passive_target(nfc)
print("phone=%r" % (cards.select_aid(nfc, t.number, b"\\xf0kvitto\\x01")[1] == 0x9000,))
""",
    )
    assert got == {"held": "04102030", "gone": "None", "phone": "True"}


def test_open_transport_for_each_board_bus(micropython):
    got = run(
        micropython,
        "i2c",
        """
from device.drivers import pn532_bus
from sim import pn532sim
for kind in ("i2c", "spi", "uart"):
    model = PN532Sim()
    transport = pn532_bus.open_transport(kind, pn532sim.bus(kind, model), irq=None)
    print("%s=%r" % (kind, PN532(transport).firmware_version()))
try:
    pn532_bus.open_transport("can", None)
except pn532.PN532Error as e:
    print("can=%s" % e)
""",
    )
    assert got["i2c"] == got["spi"] == got["uart"] == "(50, 1, 6, 7)"
    assert "no PN532 transport" in got["can"]


def test_a_board_loads_only_its_own_bus_transport(micropython):
    """pn532_bus.open_transport imports the one transport module the board file names: an I2C board
    never has the SPI, HSU or stream code on its heap."""
    out = micropython(
        """
import sys
from device.drivers import pn532, pn532_bus
from sim import pn532sim
TRANSPORT = ("device.drivers.pn532_i2c", "device.drivers.pn532_spi", "device.drivers.pn532_uart",
             "device.drivers.pn532_stream")
loaded = lambda: sorted(m for m in sys.modules if m in TRANSPORT)
print("before=%r" % (loaded(),))
model = pn532sim.PN532Sim()
pn532.PN532(pn532_bus.open_transport("i2c", pn532sim.bus("i2c", model))).firmware_version()
print("i2c=%r" % (loaded(),))
pn532_bus.open_transport("uart", pn532sim.bus("uart", pn532sim.PN532Sim()))
print("uart=%r" % (loaded(),))
"""
    )
    got = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    assert got["before"] == "[]"
    assert got["i2c"] == "['device.drivers.pn532_i2c']"
    assert got["uart"] == (
        "['device.drivers.pn532_i2c', 'device.drivers.pn532_stream', 'device.drivers.pn532_uart']"
    )


FAULTS = ["garbage", "drop_ack", "checksum", "silent", "none"]


@settings(max_examples=150, deadline=None)
@given(
    transport=st.sampled_from(["i2c", "spi", "hsu"]),
    faults=st.lists(st.sampled_from(FAULTS), min_size=1, max_size=6),
)
def test_fault_sequences_raise_only_driver_errors_and_reset_recovers(transport, faults):
    """Under CPython: any sequence of line faults gives a correct answer or a PN532Error, and
    after an RSTPD_N pulse the reader answers again."""
    from pn532_support import firmware_modules

    pn532, sim, buses = firmware_modules()
    from device.drivers import pn532_i2c, pn532_spi, pn532_uart  # type: ignore[import-not-found]

    model = sim.PN532Sim()
    if transport == "i2c":
        link = pn532_i2c.I2CTransport(buses.SimI2C(model))
    elif transport == "spi":
        spi = buses.SimSPI(model)
        link = pn532_spi.SPITransport(spi, spi.cs)
    else:
        link = pn532_uart.UARTTransport(buses.SimUART(model), timeout_ms=5)
    nfc = pn532.PN532(link, reset=model.rstpd, ack_timeout_ms=3, timeout_ms=10)
    for fault in faults:
        if fault == "silent":
            model.fault_silent()
        elif fault != "none":
            getattr(model, "fault_" + fault)()
        try:
            assert nfc.firmware_version() == (0x32, 0x01, 0x06, 0x07)
        except pn532.PN532Error:
            pass
    if transport == "hsu":
        link.drain()
    model.clear_faults()
    nfc.hard_reset()
    assert nfc.firmware_version() == (0x32, 0x01, 0x06, 0x07)
