"""Helpers for the installer tests: MQTT clients that report what the broker did to them.

client = MqttProbe(host, port, "tag-0001", password)
assert client.connect() == 0
client.subscribe("kvitto/v1/tag-0001/cmd"); client.messages  # what arrived
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import Mosquitto, mosquitto_binary


class MqttProbe:
    """A paho-mqtt 2 client that records its CONNACK, SUBACKs and received messages."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        tls_ca: Path | None = None,
        clean_session: bool = True,
    ):
        self.host = host
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{username}-{time.monotonic_ns()}",
            clean_session=clean_session,
        )
        self.disconnects = 0  # times the broker closed the connection before close()
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.connack: int | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects += 1

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code.value
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subscribed.set()

    def _on_message(self, client, userdata, message):
        self.messages.append((message.topic, message.payload))

    def connect(self, timeout: float = 5) -> int | None:
        """The CONNACK return code (0 accepted), or None when the broker closed the socket."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.connected.wait(timeout)
        return self.connack

    def subscribe(self, topic: str, timeout: float = 5) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(timeout), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, timeout: float = 5) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.on_disconnect = None
        self.client.loop_stop()
        self.client.disconnect()


def unstarted_mosquitto(workdir: Path) -> Mosquitto:
    """A real Mosquitto with a free port chosen but not started: the test writes its config."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    return Mosquitto(binary, workdir)


def settle(seconds: float = 0.5) -> None:
    """Give the broker time to route what it would deliver (a negative test needs a wait)."""
    time.sleep(seconds)


class _FakeSerial:
    """What esptool touches of a serial port once a chip object exists."""

    timeout = 3
    baudrate = 460800
    port = "fake://esp32"

    def setRTS(self, value):  # noqa: N802 - pyserial's names
        pass

    def setDTR(self, value):  # noqa: N802
        pass

    def close(self):
        pass

    def reset_input_buffer(self):
        pass

    def read(self, count=1):
        return b""

    def write(self, data):
        return len(data)


def fake_esp32(flash_size: int = 4 * 1024 * 1024):
    """An ESP32 running esptool's flasher stub, faked at esptool's command boundary
    (`ESPLoader.command`): esptool's own write, compression, erase and MD5 verification run for
    real against 4 MiB of simulated NOR flash (erase sets 0xFF, a write can only clear bits)."""
    import hashlib
    import struct
    import zlib

    from esptool.targets.esp32 import ESP32StubLoader

    class FakeEsp32(ESP32StubLoader):
        def __init__(self):
            self.flash = bytearray(b"\x5a" * flash_size)  # not erased: erasing must happen
            self._port = _FakeSerial()
            self.secure_download_mode = False
            self._trace_enabled = False
            self._warn_usb_no_vid = False
            self.cache = {"flash_id": None, "usb_vid": 0x10C4, "usb_pid": 0xEA60,
                          "security_info": None}  # fmt: skip
            self.in_bootloader = True
            self.ops: list[str] = []
            self._offset = 0
            self._inflate = zlib.decompressobj()

        def flush_input(self):
            pass

        def run_stub(self, stub=None):
            self.ops.append("run_stub")
            return self  # the stub is already running on this fake

        def flash_id(self, cache=True):
            return 0x1640EF  # Winbond W25Q32: 4 MiB

        def read_reg(self, addr, timeout=3):
            return 0

        def hard_reset(self, *args, **kwargs):
            self.ops.append("hard_reset")

        def soft_reset(self, *args, **kwargs):
            self.ops.append("soft_reset")

        def program(self, offset: int, data: bytes) -> None:
            old = self.flash[offset : offset + len(data)]
            self.flash[offset : offset + len(data)] = bytes(a & b for a, b in zip(old, data))

        def command(self, op=None, data=b"", chk=0, wait_response=True, timeout=3):
            name = next((k for k, v in self.ESP_CMDS.items() if v == op), hex(op or 0))
            self.ops.append(name)
            ok = b"\x00\x00"  # stub status: success
            if name in ("WRITE_REG", "SPI_SET_PARAMS", "SPI_ATTACH", "CHANGE_BAUDRATE"):
                return 0, ok
            if name == "READ_REG":
                return 0, ok
            if name == "ERASE_FLASH":
                self.flash[:] = b"\xff" * len(self.flash)
                return 0, ok
            if name == "FLASH_DEFL_BEGIN":
                self._offset = struct.unpack("<IIII", data[:16])[3]
                self._inflate = zlib.decompressobj()
                return 0, ok
            if name == "FLASH_DEFL_DATA":
                length = struct.unpack("<I", data[:4])[0]
                plain = self._inflate.decompress(data[16 : 16 + length])
                self.program(self._offset, plain)
                self._offset += len(plain)
                return 0, ok
            if name == "FLASH_DEFL_END":
                return 0, ok
            if name == "SPI_FLASH_MD5":
                address, size = struct.unpack("<II", data[:8])
                return 0, hashlib.md5(self.flash[address : address + size]).digest() + ok
            raise AssertionError(f"the fake ESP32 does not know {name}")

    return FakeEsp32()
