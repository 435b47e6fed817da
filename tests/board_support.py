"""What tests read off a virtual board from outside: the signed events it publishes to a real
Mosquitto, and its public key over the serial port (as provisioning reads it)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


class PublishedEvents:
    """A subscriber to every device's `evt` topic; `messages` in arrival order.

    with PublishedEvents(mosquitto, "test-x") as published:
        ...
        assert published.wait(3, 60)
    """

    def __init__(self, mosquitto, client_id: str):
        self.messages: list[bytes] = []
        self._arrived = threading.Condition()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = lambda c, *a: c.subscribe("kvitto/v1/+/evt", qos=1)
        self._client.on_message = self._on_message
        self._client.connect(mosquitto.host, mosquitto.port)

    def _on_message(self, client, userdata, message) -> None:
        with self._arrived:
            self.messages.append(message.payload)
            self._arrived.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def __enter__(self) -> PublishedEvents:
        self._client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.loop_stop()


def mpremote(port: str, *args: str) -> str:
    result = subprocess.run(
        [MPREMOTE, "connect", port, "resume", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def board_public_key(port: str) -> bytes:
    """The board's Ed25519 public key, read over its serial port."""
    script = "from device.evidence import proof; print(proof.public_key_hex())"
    return bytes.fromhex(mpremote(port, "exec", script).strip())
