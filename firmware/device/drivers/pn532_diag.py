"""PN532 commands for bring-up and diagnostics (NXP UM0701-02 §7): the blocking card search,
the RF field, the retry count, PowerDown, TgInitAsTarget from fixed parameters, whole frames as
bytes. The device never sends them in service (device.roles.reader searches with `acall`;
device.drivers.tag_mode builds its own target parameters), so they live apart from
device.drivers.pn532 and cost a tag no heap.

    from device.drivers import pn532_diag
    target = pn532_diag.list_passive_target(nfc)       # nfc: a device.drivers.pn532.PN532
    pn532_diag.power_down(nfc, pn532_diag.WAKE_I2C)
"""

from micropython import const

from device.drivers.pn532 import PN532Error, check_status, frame_into, parse_target_a

_CMD_POWER_DOWN = const(0x16)
_CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)
_CMD_TG_INIT_AS_TARGET = const(0x8C)
_CMD_RF_CONFIGURATION = const(0x32)
_RF_ITEM_FIELD = const(0x01)
_BRTY_106A = const(0x00)  # §7.3.5: 106 kbps type A (ISO/IEC 14443 Type A)

# PowerDown wake-up sources (§7.2.11)
WAKE_HSU = const(0x10)
WAKE_SPI = const(0x20)
WAKE_I2C = const(0x80)


def build_frame(body):
    """The whole frame (preamble to postamble) carrying `body` = TFI + data (the driver writes
    its frames into one buffer with frame_into; this copy is for bring-up and tests)."""
    buf = bytearray(len(body) + 10)
    return bytes(buf[: frame_into(buf, body, b"")])


def set_max_retries(nfc, atr=0xFF, psl=0x01, passive=0xFF):
    """RFConfiguration CfgItem 5 (§7.3.1); passive 0xFF = wait for a card forever."""
    nfc.call(_CMD_RF_CONFIGURATION, bytes((0x05, atr, psl, passive)))


def parse_tg_init(data):
    """(mode, first initiator command) from TgInitAsTarget (§7.3.14)."""
    if len(data) < 1:
        raise PN532Error("TgInitAsTarget: no mode")
    return data[0], bytes(data[1:])


def list_passive_target(nfc, timeout_ms=None):
    """InListPassiveTarget (§7.3.5), blocking: the first type A target, or None (no card)."""
    return parse_target_a(nfc.call(_CMD_IN_LIST_PASSIVE_TARGET, b"\x01\x00", timeout_ms))


def start_list_passive_target(nfc):
    """Non-blocking: start the search; `nfc.poll()` then gives data for `parse_target_a`."""
    nfc.start(_CMD_IN_LIST_PASSIVE_TARGET, bytes((0x01, _BRTY_106A)))


def rf_field(nfc, on):
    nfc.call(_CMD_RF_CONFIGURATION, bytes((_RF_ITEM_FIELD, 0x01 if on else 0x00)))


def power_down(nfc, wake_sources):
    # §7.2.11: the PN532 answers, then sleeps until a wake-up source fires
    check_status(nfc.call(_CMD_POWER_DOWN, bytes((wake_sources,))), "PowerDown")
    nfc.asleep = True


def wake_up(nfc):
    nfc.transport.wake()
    nfc.asleep = False


def init_as_target(nfc, mifare, felica, nfcid3, general=b"", historical=b"", mode=0x04):
    """TgInitAsTarget (§7.3.14); mode 0x04 = PICC only. Blocks until an initiator comes:
    use `start_init_as_target` + `nfc.poll()` to keep the loop running."""
    params = _tg_params(mode, mifare, felica, nfcid3, general, historical)
    return parse_tg_init(nfc.call(_CMD_TG_INIT_AS_TARGET, params))


def start_init_as_target(nfc, mifare, felica, nfcid3, general=b"", historical=b"", mode=0x04):
    params = _tg_params(mode, mifare, felica, nfcid3, general, historical)
    nfc.start(_CMD_TG_INIT_AS_TARGET, params)


def _tg_params(mode, mifare, felica, nfcid3, general, historical):
    if len(mifare) != 6 or len(felica) != 18 or len(nfcid3) != 10:
        raise PN532Error("TgInitAsTarget: MIFARE 6, FeliCa 18, NFCID3t 10 bytes")
    params = bytearray((mode,))
    params.extend(mifare)
    params.extend(felica)
    params.extend(nfcid3)
    params.append(len(general))
    params.extend(general)
    params.append(len(historical))
    params.extend(historical)
    return params
