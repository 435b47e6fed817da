"""Virtual boards: the real firmware under the unix port with the sim board, a pty serial port
that mpremote drives as a real board, a control channel for the door, power cuts that keep the
journal, `kvitto sim` from another program, and delivery to a real Mosquitto."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from app_support import missing_firmware
from board_support import MPREMOTE, mpremote

from kvitto.sim.board import SimError, VirtualBoard
from kvitto.sim.fleet import Fleet

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

SALT = bytes(range(16, 32))
UID = "04a1b2c3"


def credential(uid: str) -> str:
    return hmac.new(SALT, bytes.fromhex(uid), hashlib.sha256).digest()[:16].hex()


@pytest.fixture
def board(tmp_path):
    with VirtualBoard(tmp_path / "b1", "tag-0001", "tag", salt=SALT) as virtual:
        virtual.wait_ready()
        yield virtual


def test_tap_through_the_control_channel_lands_in_the_journal(board):
    board.tap("badge", UID)
    events = board.wait_events(2)
    assert [e["type"] for e in events] == ["boot", "arrive"]
    assert events[1]["cred"] == credential(UID)
    assert events[1]["x"] == {"via": "badge"}
    assert board.led() == "green"


def test_mpremote_resume_exec_works_against_the_pty(board):
    assert mpremote(board.serial_port, "exec", "print(1+1)") == "2\n"
    # the installer's provisioning path: the device key and a proof of possession
    out = mpremote(
        board.serial_port,
        "exec",
        "from device.evidence import proof; print(proof.public_key_hex());"
        " print(proof.prove_hex('00112233445566778899'))",
    )
    public_hex, proof_hex = out.split()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
        bytes.fromhex(proof_hex), b"kvitto-provision" + bytes.fromhex("00112233445566778899")
    )
    # an error comes back as mpremote's error, and the board runs on
    failed = subprocess.run(
        [MPREMOTE, "connect", board.serial_port, "resume", "exec", "1 // 0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode != 0 and "ZeroDivisionError" in failed.stdout + failed.stderr
    board.tap("badge", UID)
    assert board.wait_events(2)[1]["type"] == "arrive"


def test_power_cut_keeps_the_journal_and_counts_the_boot(board):
    board.tap("badge", UID)
    board.wait_events(2)
    board.power_cut()
    with pytest.raises(SimError):
        board.control("ping", timeout=0.5)
    board.power_restore()
    status = board.wait_ready()
    assert status["boot"] == 2
    events = board.wait_events(3)
    assert [(e["type"], e["boot"]) for e in events] == [("boot", 1), ("arrive", 1), ("boot", 2)]
    assert events[2]["x"]["reset"] == "power"


def test_unprovisioned_board_blinks_red_and_keeps_its_serial_console(tmp_path):
    with VirtualBoard(tmp_path / "new", "tag-0009", provision=False) as fresh:
        fresh.wait_ready(app=False)
        colours = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and colours != {"red", "off"}:
            colours.add(fresh.led())
            time.sleep(0.1)
        assert colours == {"red", "off"}
        assert mpremote(fresh.serial_port, "exec", "print('console ok')") == "console ok\n"


def test_fleet_and_the_kvitto_sim_socket(tmp_path):
    env = dict(os.environ)
    listen = tmp_path / "sim.sock"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "kvitto", "sim", "--boards", "2", "--roles", "tag,lock",
            "--workdir", str(tmp_path / "fleet"), "--listen", str(listen), "--no-prompt",
            "--salt", SALT.hex(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its boards too can be stopped as one group if it hangs
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60  # two boards booting on a loaded machine
        client = socket.socket(socket.AF_UNIX)
        while True:  # the socket appears once both boards are up
            try:
                client.connect(str(listen))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, "kvitto sim did not open its socket"
                time.sleep(0.1)
        with client:
            stream = client.makefile("rw")

            def ask(line: str) -> str:
                stream.write(line + "\n")
                stream.flush()
                return stream.readline().strip()

            def types(board: int, want: list[str]) -> list[str]:
                """The board's journaled event types once `want` are there (or 30 s passed)."""
                until = time.monotonic() + 30
                while True:
                    got = [e["type"] for e in json.loads(ask(f"events {board}"))]
                    if got == want or time.monotonic() > until:
                        return got
                    time.sleep(0.2)

            assert ask("tap 1 badge " + UID) == "ok"
            assert ask("door 2 open") == "ok"
            assert types(1, ["boot", "arrive"]) == ["boot", "arrive"]
            assert types(2, ["boot", "door_open"]) == ["boot", "door_open"]
            assert ask("power 3 cut").startswith("error: no board 3")
            assert ask("wave 1").startswith("error: unknown command 'wave'")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # never leave it and its boards behind
            out, err = process.communicate()
            raise AssertionError(f"kvitto sim did not stop on Ctrl-C: {err[-2000:]}") from None
    assert "board 1: tag-0001 (tag) serial /dev/pts/" in out
    assert "board 2: lock-0002 (lock)" in out
    assert process.returncode == 0, err


def test_fleet_command_lines(tmp_path):
    fleet = Fleet(tmp_path, 1, roles=("alarm",), salt=SALT)
    fleet.start()
    try:
        assert fleet.command("alarm 1") == "ok"
        time.sleep(0.6)
        assert fleet.command("press 1 green") == "ok"
        time.sleep(0.6)
        types = [e["type"] for e in json.loads(fleet.command("events 1"))]
        assert types == ["boot", "alarm_call", "alarm_checkin"]
        assert fleet.command("power 1 cut") == "ok"
        assert '"power": "off"' in fleet.command("status")
        assert fleet.command("power 1 restore") == "ok"
        fleet.boards[0].wait_ready()
        assert json.loads(fleet.command("status"))[0]["boot"] == 2
    finally:
        fleet.stop()


needs_link = pytest.mark.skipif(
    not all(
        (Path(__file__).parent.parent / "firmware/device" / name).exists()
        for name in (
            "link/collector.py",
            "link/mqtt.py",
            "evidence/event.py",
            "evidence/ed25519.py",
        )
    ),
    reason="device.link.collector / mqtt / event / ed25519 not landed yet",
)


@needs_link
def test_board_publishes_signed_events_to_a_real_mosquitto(tmp_path, mosquitto):
    from board_support import PublishedEvents, board_public_key

    from kvitto.evidence.events import verify_event

    with PublishedEvents(mosquitto, "test-collector") as published:
        with VirtualBoard(
            tmp_path / "b1",
            "tag-0001",
            broker=(mosquitto.host, mosquitto.port),
            salt=SALT,
            org_public_key=bytes(range(32)),
            proxy=False,
        ) as board:
            board.wait_ready()
            board.tap("badge", UID)
            public = board_public_key(board.serial_port)
            assert published.wait(2, 60), board.log_tail()
    received = published.messages
    events = sorted((verify_event(m, public) for m in received), key=lambda e: e.seq)
    assert [(e.seq, e.type) for e in events[:2]] == [(1, "boot"), (2, "arrive")]
    assert events[1].cred == bytes.fromhex(credential(UID))


@needs_link
@pytest.mark.skipif(
    not (Path(__file__).parent.parent / "host/kvitto/sim/netproxy.py").exists(),
    reason="kvitto.sim.netproxy not landed yet",
)
def test_network_cut_holds_events_until_restore(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from kvitto.evidence.cose import split_sign1
    from kvitto.evidence.events import decode_payload

    types: list[str] = []
    lock = threading.Lock()

    def on_message(client, userdata, message):
        payload = split_sign1(message.payload)[2]
        with lock:
            types.append(decode_payload(payload).type)

    def wait_for(count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if len(types) >= count:
                    return list(types)
            time.sleep(0.1)
        with lock:
            return list(types)

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-collector-net")
    subscriber.on_connect = lambda c, *a: c.subscribe("kvitto/v1/+/evt", qos=1)
    subscriber.on_message = on_message
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    try:
        with VirtualBoard(
            tmp_path / "b1",
            "tag-0001",
            broker=(mosquitto.host, mosquitto.port),
            salt=SALT,
            org_public_key=bytes(range(32)),
        ) as board:
            board.wait_ready()
            assert board.proxy is not None
            board.tap("badge", UID)
            assert wait_for(2, 60)[:2] == ["boot", "arrive"]
            board.network_cut()
            time.sleep(0.5)
            board.tap("badge", "04d4e5f6")
            board.wait_events(3)
            time.sleep(1.5)
            assert len(wait_for(3, 0.1)) == 2, "nothing crosses a cut network"
            board.network_restore()
            assert wait_for(3, 60)[2] == "arrive"
    finally:
        subscriber.loop_stop()


@needs_link
def test_signed_commands_set_the_clock_and_the_allowlist(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from paho.mqtt.enums import CallbackAPIVersion

    from kvitto.evidence.commands import sign_command

    org = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
    org_secret = org.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    org_public = org.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    now = int(time.time())
    with VirtualBoard(
        tmp_path / "lock",
        "lock-0001",
        "lock",
        broker=(mosquitto.host, mosquitto.port),
        salt=SALT,
        org_public_key=org_public,
        proxy=False,
    ) as board:
        board.wait_ready()
        board.tap("badge", UID)
        assert board.wait_events(2)[1]["type"] == "deny"
        sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-org")
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        try:
            topic = "kvitto/v1/lock-0001/cmd"
            commands = [
                sign_command(org_secret, "lock-0001", 1, now + 600, "allow",
                             {"creds": [bytes.fromhex(credential(UID))]}),
                sign_command(org_secret, "lock-0001", 2, now + 600, "time", {"t": now}),
                # replayed sequence and a forged signature: both refused
                sign_command(org_secret, "lock-0001", 2, now + 600, "time", {"t": now - 9999}),
                sign_command(bytes(32), "lock-0001", 3, now + 600, "revoke",
                             {"creds": [bytes.fromhex(credential(UID))]}),
            ]  # fmt: skip
            for message in commands:
                sender.publish(topic, message, qos=1).wait_for_publish(5)
            events = board.wait_events(4, timeout=30)
            assert events[3]["type"] == "clock_sync"
            time.sleep(2)  # the card was away longer than the reader's gone_ms (a new tap)
            board.tap("badge", UID)
            events = board.wait_events(5, timeout=30)
        finally:
            sender.loop_stop()
    # the allowlist change is journaled (the host closes its command on it), once: the forged
    # revoke is not obeyed
    assert [e["type"] for e in events] == ["boot", "deny", "health", "clock_sync", "unlock"]
    assert events[2]["x"] == {"allow": 1}
    assert events[3]["x"]["src"] == "cmd"
    assert events[1]["t"] is None  # before the time command: no device time
    assert abs(events[4]["t"] - now) < 30  # after it: Unix time, and the forged revoke ignored


def test_the_image_kvitto_image_builds_boots_a_virtual_board(tmp_path):
    from kvitto.install.image import build_image

    config = {
        "device": "tag-0042",
        "role": "tag",
        "board": "sim",
        "broker": {"host": "127.0.0.1", "port": 1},
        "salt": SALT.hex(),
        "org_public_key": "11" * 32,
    }
    build_image("sim", tmp_path / "fs.bin", config=config)
    with VirtualBoard(tmp_path / "b", "tag-0042", flash=tmp_path / "fs.bin") as board:
        status = board.wait_ready()
        assert (status["device"], status["role"], status["boot"]) == ("tag-0042", "tag", 1)
        board.tap("badge", UID)
        assert board.wait_events(2)[1]["cred"] == credential(UID)


def test_a_hung_board_is_reset_by_its_watchdog_and_keeps_its_journal(board):
    board.tap("badge", UID)
    board.wait_events(2)
    # the whole interpreter stuck in a loop: only the (simulated) hardware watchdog helps
    subprocess.run(
        [MPREMOTE, "connect", board.serial_port, "resume", "exec", "--no-follow",
         "while True: pass"],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + 40
    while "wdt" not in board.resets and time.monotonic() < deadline:
        time.sleep(0.2)
    assert board.resets == ["wdt"]
    board.wait_ready()
    events = board.wait_events(3)
    assert [(e["type"], e["boot"]) for e in events] == [("boot", 1), ("arrive", 1), ("boot", 2)]
    assert events[2]["x"]["reset"] == "wdt"


def test_the_prompt_refuses_what_the_board_cannot_do(tmp_path):
    """#24 item 16: `press 1 green` on a tag board and `tap 1 phone 1234` answered "ok" and
    recorded nothing; `press 2 purple` printed a raw HalError(…)."""
    fleet = Fleet(tmp_path, 3, roles=("tag", "lock", "alarm"), salt=SALT)
    try:  # refused before anything reaches a board: none is started
        replies = {
            line: fleet.command(line)
            for line in ("press 1 green", "tap 1 phone 1234", "press 2 purple", "door 1 open",
                         "alarm 2", "tap 3 badge zz", "tap 1 ntag424 04a1b2c3",
                         "tap 1 card 04a1b2c3")
        }  # fmt: skip
    finally:
        fleet.stop()
    assert all(reply.startswith("error: ") for reply in replies.values()), replies
    assert "HalError" not in "".join(replies.values())
    assert "tag-0001 (tag) has no input 'green' (no buttons" in replies["press 1 green"]
    assert "2 bytes; expected 32 or 16" in replies["tap 1 phone 1234"]
    assert "has no input 'purple' (door, exit)" in replies["press 2 purple"]


def test_kvitto_sim_takes_a_relative_workdir_and_sigterm_stops_its_boards(tmp_path):
    """#24 items 3 and 4: `kvitto sim --workdir simwd2` failed after 30 s with an empty log
    (the board process resolved the path in its own folder); SIGTERM left the MicroPython
    board processes running."""
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "kvitto", "sim", "--boards", "2", "--workdir", "simwd2",
         "--no-prompt"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("control socket"):
                break
        assert any(line.startswith("board 2: tag-0002") for line in lines), lines
        boards = _children(process.pid)
        assert len(boards) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    left = [pid for pid in boards if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]
    assert left == [], f"board processes left running: {left}"
    assert (tmp_path / "simwd2" / "tag-0001" / "flash.img").exists()


def _children(pid: int) -> list[int]:
    """The MicroPython processes started by `pid` (from /proc: no psutil here)."""
    from pathlib import Path as P

    found = []
    for status in P("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and "micropython" in fields.get("Name", ""):
            found.append(int(status.parent.name))
    return found


def _zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in open(f"/proc/{pid}/status").read()
    except OSError:
        return True
