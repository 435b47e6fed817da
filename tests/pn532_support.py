"""Load the PN532 driver and simulator under CPython: the shims MicroPython provides natively.

from pn532_support import firmware_modules
pn532, sim, buses = firmware_modules()
assert pn532.parse_frame(pn532.ACK) == b""
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def install_shims() -> None:
    """`micropython.const` and the `time.ticks_*` family, as the unix port has them."""
    if "micropython" not in sys.modules:
        shim = types.ModuleType("micropython")
        shim.const = lambda value: value  # type: ignore[attr-defined]
        sys.modules["micropython"] = shim
    if not hasattr(time, "ticks_ms"):
        time.ticks_ms = lambda: int(time.monotonic() * 1000) & 0x3FFFFFFF  # type: ignore[attr-defined]
        time.ticks_diff = lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000  # type: ignore[attr-defined]
        time.ticks_add = lambda a, b: (a + b) & 0x3FFFFFFF  # type: ignore[attr-defined]
        time.sleep_ms = lambda ms: time.sleep(ms / 1000)  # type: ignore[attr-defined]
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))


def firmware_modules():
    install_shims()
    from device.drivers import pn532  # type: ignore[import-not-found]
    from sim import buses, pn532sim  # type: ignore[import-not-found]

    return pn532, pn532sim, buses


# A prelude for unix-port snippets: `make(kind)` gives (model, bus, driver) over one transport.
DEVICE_PRELUDE = """
from device.drivers import pn532
from device.drivers.pn532 import PN532
from device.drivers.pn532_i2c import I2CTransport
from device.drivers.pn532_spi import SPITransport
from device.drivers.pn532_uart import UARTTransport
from sim.buses import SimI2C, SimSPI, SimUART
from sim.pn532sim import (PN532Sim, UidCard, Ntag213, Ntag424, HcePhone, TagReaderPhone,
                          uri_record, sun_message)

def make(kind):
    model = PN532Sim()
    if kind == "i2c":
        bus = SimI2C(model, timeout_us=pn532.I2C_TIMEOUT_US)
        transport = I2CTransport(bus)
    elif kind == "i2c-irq":
        bus = SimI2C(model, timeout_us=pn532.I2C_TIMEOUT_US)
        transport = I2CTransport(bus, irq=model.irq)
    elif kind == "spi":
        bus = SimSPI(model)
        transport = SPITransport(bus, bus.cs)
    else:
        bus = SimUART(model)
        transport = UARTTransport(bus)
    return model, bus, PN532(transport, reset=model.rstpd)
"""

TRANSPORTS = ["i2c", "i2c-irq", "spi", "hsu"]
