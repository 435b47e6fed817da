"""`kvitto provision` end to end: fresh virtual boards provisioned through mpremote over their
pty, registered (bound once, revocation kept), then — with the broker config written from the
registry — they boot, tap and publish events signed by the key they made themselves. Two
provisioned devices share no secret."""

from __future__ import annotations

import json
import os
import threading
import xml.etree.ElementTree as ElementTree

import pytest
from cli_support import run_kvitto
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from installer_support import MqttProbe, unstarted_mosquitto

from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.evidence.events import verify_event
from kvitto.install.broker_config import (
    COLLECTOR_USER,
    BrokerSettings,
    accounts_from_registry,
    check_password,
    write_broker_config,
)
from kvitto.install.console import ProvisionError
from kvitto.install.pki import ensure_org
from kvitto.install.provision import Provisioning, label_svg, provision, read_identity
from kvitto.sim.board import VirtualBoard, read_flash_file
from kvitto.store.db import open_store
from kvitto.store.registry import Registry

UID = "04a1b2c3"


def request_for(board, device, customer, setup, **extra):
    pki, url, broker, labels = setup
    return Provisioning(
        port=board.serial_port, device=device, customer=customer, role="tag", board="sim",
        store_url=url, pki_dir=pki, broker_host=broker.host, broker_port=broker.port,
        household="h-17", ntp=[], label_dir=labels, **extra,
    )  # fmt: skip


@pytest.fixture
def setup(tmp_path):
    pki = tmp_path / "pki"
    ensure_org(pki)
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(url).close()  # `kvitto init`
    broker = unstarted_mosquitto(tmp_path / "mosq")
    yield pki, url, broker, tmp_path / "labels"
    broker.stop()


@pytest.fixture
def fresh_boards(tmp_path):
    """Two boards fresh from `kvitto flash`: no config, blinking red, console open."""
    boards = [
        VirtualBoard(tmp_path / name, name, provision=False, proxy=False)
        for name in ("board-a", "board-b")
    ]
    for board in boards:
        board.start()
    for board in boards:
        board.wait_ready(60, app=False)
    yield boards
    for board in boards:
        board.stop()


class Collector:
    """The collector's MQTT account: everything on kvitto/v1/+/evt."""

    def __init__(self, broker, password):
        self.probe = MqttProbe(broker.host, broker.port, COLLECTOR_USER, password)
        assert self.probe.connect() == 0
        self.probe.subscribe("kvitto/v1/+/evt")
        self.arrived = threading.Event()

    def events_of(self, device, public_key, count, timeout=60):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [
                verify_event(payload, public_key)
                for topic, payload in list(self.probe.messages)
                if topic == f"kvitto/v1/{device}/evt"
            ]
            if len(mine) >= count:
                return mine
            time.sleep(0.2)
        raise AssertionError(f"{device}: {len(mine)} events, expected {count}")


def test_provisioned_boards_publish_with_their_new_identity(setup, fresh_boards):
    pki, url, broker, labels = setup
    board_a, board_b = fresh_boards
    first = provision(request_for(board_a, "tag-0101", "c-1001", setup))
    second = provision(request_for(board_b, "tag-0102", "c-1002", setup))
    assert (first.mark, second.mark) == ("A", "B")  # cohabitants in h-17
    assert first.public_key != second.public_key

    registry = Registry(open_store(url))
    row = registry.device("tag-0101")
    assert row is not None and (row.customer, row.role, row.public_key) == (
        "c-1001", "tag", first.public_key
    )  # fmt: skip

    # The broker learns the logins from the registry; the boards restart (reset button).
    written = write_broker_config(
        pki.parent / "etc",
        accounts_from_registry(url),
        BrokerSettings(bind="127.0.0.1", port=broker.port,
                       run_as="root" if os.geteuid() == 0 else None),
    )  # fmt: skip
    broker.config = written.config
    broker.start()
    collector = Collector(broker, written.collector_password_file.read_text().strip())
    try:
        for board in fresh_boards:
            board.reset()
        assert board_a.wait_ready(60)["device"] == "tag-0101"
        board_a.tap("badge", UID)
        events = collector.events_of("tag-0101", first.public_key, 2)
        assert [event.type for event in events[:2]] == ["boot", "arrive"]
        assert {event.dev for event in events} == {"tag-0101"}
        # board B also came up under its own name and key
        assert collector.events_of("tag-0102", second.public_key, 1)[0].type == "boot"
    finally:
        collector.probe.close()

    # (d) no secret shared between the two devices: keys, passwords, hashes, config files.
    for board in fresh_boards:
        board.power_cut()
    configs = [json.loads(read_flash_file(b.flash, "config.json")) for b in fresh_boards]
    keys = [read_flash_file(b.flash, "key.bin") for b in fresh_boards]
    assert len(keys[0]) == 32 and keys[0] != keys[1]
    passwords = [config["broker"]["password"] for config in configs]
    assert passwords[0] != passwords[1] and min(len(p) for p in passwords) >= 22  # ≥128 bits
    assert [config["broker"]["user"] for config in configs] == ["tag-0101", "tag-0102"]
    accounts = {a.device_id: a.password_hash for a in registry.mqtt_accounts()}
    assert accounts["tag-0101"] != accounts["tag-0102"]
    assert check_password(passwords[0], accounts["tag-0101"])
    assert not check_password(passwords[0], accounts["tag-0102"])
    rows = [registry.device("tag-0101"), registry.device("tag-0102")]
    assert rows[0].public_key != rows[1].public_key
    # Organisation-wide by design, never device secrets: the command key's public half, and the
    # credential salt (every door must turn the same badge into the same credential id).
    differing = {k for k in configs[0] if configs[0][k] != configs[1][k]}
    assert differing == {"device", "broker"}
    assert configs[0]["salt"] == configs[1]["salt"]
    # Byte-level: neither board's image holds the other's key or password anywhere.
    images = [b.flash.read_bytes() for b in fresh_boards]
    for mine, other in ((0, 1), (1, 0)):
        assert keys[mine] not in images[other]
        assert passwords[mine].encode() not in images[other]
    # the device's private key is on the board only: nowhere in the registry or the config
    secret_hex = keys[0].hex()
    assert secret_hex not in json.dumps(configs[0])
    assert keys[0] not in (rows[0].public_key, rows[1].public_key)


def test_binding_is_once_and_revocation_is_kept(setup, fresh_boards):
    pki, url, broker, labels = setup
    board_a, _ = fresh_boards
    result = CliRunner().invoke(
        cli,
        ["provision", "--port", board_a.serial_port, "--device", "tag-0201", "--customer",
         "c-1001", "--role", "tag", "--board", "sim", "--store", url, "--pki", str(pki),
         "--broker-host", broker.host, "--broker-port", str(broker.port), "--label-dir",
         str(labels), "--no-reset", "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["device"] == "tag-0201" and report["mark"] == ""
    assert (labels / "tag-0201.svg").exists()
    # the same board, same customer again: harmless (new MQTT password, same binding)
    provision(request_for(board_a, "tag-0201", "c-1001", setup, reset=False))
    with pytest.raises(KvittoError, match="cannot be re-bound"):
        provision(request_for(board_a, "tag-0201", "c-1002", setup, reset=False))
    Registry(open_store(url)).revoke_device("tag-0201", "2026-01-01")
    with pytest.raises(KvittoError, match="revoked"):
        provision(request_for(board_a, "tag-0201", "c-1001", setup, reset=False))
    assert Registry(open_store(url)).device("tag-0201").revoked == "2026-01-01"


class LyingConsole:
    """A console whose board reports one key and signs with another."""

    port = "fake"

    def __init__(self):
        self.reported = Ed25519PrivateKey.generate()
        self.signer = Ed25519PrivateKey.generate()
        self.nonce = b""

    def run(self, code, timeout=60):
        if "public_key_hex" in code:
            return {"public_key": self.reported.public_key().public_bytes_raw().hex()}
        if "prove_hex" in code:
            nonce = bytes.fromhex(code.split("prove_hex(")[1].split(")")[0].strip("'\""))
            return {"proof": self.signer.sign(b"kvitto-provision" + nonce).hex()}
        raise AssertionError("nothing else should run after a failed proof")


def test_a_board_without_its_private_key_is_refused_before_registration(setup):
    pki, url, broker, labels = setup
    console = LyingConsole()
    with pytest.raises(ProvisionError, match="proof of possession failed"):
        read_identity(console)  # type: ignore[arg-type]
    # no memory pre-flight: the lying console answers only the identity questions
    request = Provisioning(
        port="fake", device="tag-0301", customer="c-1001", role="tag", board="sim",
        store_url=url, pki_dir=pki, broker_host="127.0.0.1", preflight=False,
    )  # fmt: skip
    with pytest.raises(ProvisionError):
        provision(request, console=console)  # type: ignore[arg-type]
    assert Registry(open_store(url)).device("tag-0301") is None


def test_label_carries_id_qr_and_mark_only():
    svg = label_svg("tag-0042", "B")
    root = ElementTree.fromstring(svg)
    texts = [element.text for element in root.iter() if element.tag.endswith("text")]
    assert texts == ["B", "tag-0042"]
    assert "c-10" not in svg and "h-17" not in svg
    assert svg.count("<path") >= 1  # the QR code's modules
    plain = label_svg("tag-0043", "")
    assert [e.text for e in ElementTree.fromstring(plain).iter() if e.tag.endswith("text")] == [
        "tag-0043"
    ]
    with pytest.raises(KvittoError):
        label_svg("Tag 42", "")


def test_tls_board_pins_the_organisation_ca_and_publishes(setup, fresh_boards):
    """--tls: the config carries the CA from `kvitto pki`; the board reaches a TLS-only broker."""
    from conftest import free_port
    from kvitto.install.pki import broker_tls_files, issue_broker_certificate

    pki, url, broker, labels = setup
    issue_broker_certificate(pki, ["localhost", "127.0.0.1"])
    tls_port = free_port()
    board_a, _ = fresh_boards
    request = request_for(board_a, "tag-0401", "c-1001", setup, broker_tls=True)
    request.broker_host, request.broker_port = "localhost", tls_port
    result = provision(request)
    written = write_broker_config(
        pki.parent / "etc-tls",
        accounts_from_registry(url),
        BrokerSettings(bind="127.0.0.1", plain_listener=False, tls=broker_tls_files(pki),
                       tls_port=tls_port, run_as="root" if os.geteuid() == 0 else None),
    )  # fmt: skip
    broker.config = written.config
    broker.port = tls_port
    broker.start()
    collector = MqttProbe(
        "127.0.0.1", tls_port, COLLECTOR_USER,
        written.collector_password_file.read_text().strip(), tls_ca=pki / "ca.crt",
    )  # fmt: skip
    assert collector.connect() == 0
    collector.subscribe("kvitto/v1/+/evt")
    try:
        board_a.reset()
        board_a.wait_ready(60)
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not collector.messages:
            time.sleep(0.2)
        topic, payload = collector.messages[0]
        assert topic == "kvitto/v1/tag-0401/evt"
        assert verify_event(payload, result.public_key).type == "boot"
    finally:
        collector.close()
    board_a.power_cut()
    config = json.loads(read_flash_file(board_a.flash, "config.json"))
    assert config["broker"]["tls"] is True
    assert config["broker"]["ca"] == (pki / "ca.crt").read_text()


def test_events_journaled_under_another_identity_never_block_the_acks(setup, tmp_path):
    """#24 item 5: a simulator lock journals its first events under its default id; once
    provisioned under a new id those events could never verify (kid ≠ payload device) and, as
    acks cover only an unbroken run, nothing behind them would ever be acknowledged.
    Provisioning clears such a journal and says how many events it discarded; the board's
    events under its new identity are then stored and acknowledged, nothing quarantined."""
    from collect_support import wait_for

    from conftest import free_port
    from kvitto.collect.collector import Collector
    from kvitto.store.keys import load_command_key

    pki, url, broker, labels = setup
    board = VirtualBoard(
        tmp_path / "lock-0002", "lock-0002", "lock",
        broker=("127.0.0.1", free_port()), proxy=False,
    )  # fmt: skip
    board.start()
    try:
        assert board.wait_ready(60)["device"] == "lock-0002"
        board.tap("badge", UID)  # journaled under the simulator's default id
        status = lambda: json.loads(board.control("status"))  # noqa: E731
        wait_for(lambda: status()["next_seq"] > 1, 30, what="journaled events")
        request = request_for(board, "lock-0201", "c-2001", setup)
        request.role = "lock"
        result = provision(request)
        assert result.discarded == (status()["next_seq"] - 1, "lock-0002")
        written = write_broker_config(
            pki.parent / "etc",
            accounts_from_registry(url),
            BrokerSettings(bind="127.0.0.1", port=broker.port,
                           run_as="root" if os.geteuid() == 0 else None),
        )  # fmt: skip
        broker.config = written.config
        broker.start()
        password = written.collector_password_file.read_text().strip()
        store = open_store(url)
        collector = Collector(
            store,
            f"mqtt://{COLLECTOR_USER}:{password}@127.0.0.1:{broker.port}",
            load_command_key(pki),
        )
        collector.start()
        try:
            board.reset()
            assert board.wait_ready(60)["device"] == "lock-0201"
            board.tap("badge", UID)
            wait_for(
                lambda: (s := status())["acked"] == s["next_seq"] - 1 >= 2,
                60,
                what="the board's journal acknowledged up to its newest event",
            )
        finally:
            collector.stop()
        assert store.quarantined() == []
    finally:
        board.stop()


def test_unacknowledged_events_of_a_registered_device_are_not_dropped_silently(
    setup, fresh_boards
):
    """Re-provisioning under a new id a board whose registered identity still has events
    waiting: refused (they are evidence) unless the installer says --discard-journal."""
    board, _ = fresh_boards
    provision(request_for(board, "tag-0101", "c-1001", setup))
    board.reset()
    assert board.wait_ready(60)["device"] == "tag-0101"  # its boot event waits for an ack
    with pytest.raises(KvittoError, match="unacknowledged events of registered device tag-0101"):
        provision(request_for(board, "tag-0109", "c-1009", setup))
    assert Registry(open_store(setup[1])).device("tag-0109") is None  # nothing changed
    again = provision(request_for(board, "tag-0109", "c-1009", setup, discard_journal=True))
    assert again.discarded[0] >= 1 and again.discarded[1] == "tag-0101"
    # the same identity again keeps its journal (reset as the installer is told: on a real
    # board the provisioning resets it, the unix port has no machine.reset)
    board.reset()
    assert board.wait_ready(60)["device"] == "tag-0109"
    assert provision(request_for(board, "tag-0109", "c-1009", setup)).discarded == (0, None)


def test_a_wifi_network_without_a_password_must_be_declared_open(setup, tmp_path):
    """#24 item 2: --wifi-ssid without KVITTO_WIFI_PASSWORD wrote an empty password."""
    pki, url, broker, labels = setup
    runner = CliRunner()
    base = [
        "provision", "--port", "/dev/null", "--device", "tag-0301", "--customer", "c-3001",
        "--role", "tag", "--board", "sim", "--store", url, "--pki", str(pki),
        "--broker-host", "127.0.0.1", "--wifi-ssid", "care-net",
    ]  # fmt: skip
    code, out, err = run_kvitto(base, env={"KVITTO_WIFI_PASSWORD": ""})
    assert code == 2 and "KVITTO_WIFI_PASSWORD" in err and "--wifi-open" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert Registry(open_store(url)).device("tag-0301") is None
    help_text = runner.invoke(cli, ["provision", "--help"]).output
    assert "KVITTO_WIFI_PASSWORD" in help_text and "--wifi-open" in help_text
    config = __import__("kvitto.install.provision", fromlist=["device_config"]).device_config(
        Provisioning(port="", device="tag-0301", customer="c", role="tag", board="sim",
                     store_url=url, pki_dir=pki, broker_host="h", wifi_ssid="guest",
                     wifi_open=True),
        "pw",
    )  # fmt: skip
    assert config["wifi"] == {"ssid": "guest", "password": ""}


def test_the_label_qr_code_keeps_a_quiet_zone_of_four_modules():
    """#24 item 23: the QR spec asks for 4 light modules around the symbol; the label drew 2
    at its left and top edge, and scanners at a slant miss such codes."""
    import re

    import segno

    svg = label_svg("tag-0042", "A")
    modules = segno.make("kvitto:tag-0042", error="m").symbol_size(scale=1, border=0)[0]
    inner = re.search(r'<svg width="(\d+)" height="(\d+)" class="segno"><path '
                      r'transform="scale\((\d+)\)"[^>]* d="M(\d+) (\d+)\.5h', svg)  # fmt: skip
    assert inner is not None, svg[:300]
    width, height, scale, x, y = map(int, inner.groups())
    assert (x, y) == (4, 4)  # the first dark module, top-left finder pattern
    assert width == height == (modules + 8) * scale


def test_a_lock_gets_the_fallback_and_door_limit_of_its_customers_profile(setup, tmp_path):
    """Issue #23: `kvitto provision --role lock` writes the [lock] fallback and door_open_s of
    the profile of the customer's provider into config.json (not the firmware's defaults); an
    option given overrides its setting only."""
    from kvitto.verify.rules import PROFILES
    from kvitto.web.accounts import add_provider, assign_customers

    pki, url, broker, labels = setup
    profile = tmp_path / "shut.toml"
    text = (PROFILES / "haninge.toml").read_text(encoding="utf-8")
    text = text.replace('\nfallback = "open_for_allowed"\n', '\nfallback = "deny"\n')
    profile.write_text(text.replace("\ndoor_open_s = 300\n", "\ndoor_open_s = 120\n"), "utf-8")
    with open_store(url) as store:
        Registry(store).add_customer("c-2001")
        add_provider(store, "p-2", str(profile))
        assign_customers(store, "p-2", ["c-2001"])
    board = VirtualBoard(tmp_path / "board-l", "board-l", provision=False, proxy=False)
    board.start()
    try:
        board.wait_ready(60, app=False)
        base = ["provision", "--port", board.serial_port, "--device", "lock-0201", "--customer",
                "c-2001", "--role", "lock", "--board", "sim", "--store", url, "--pki", str(pki),
                "--broker-host", broker.host, "--broker-port", str(broker.port), "--label-dir",
                str(labels), "--no-reset"]  # fmt: skip
        code, out, err = run_kvitto(base)
        assert code == 0, err
        config = json.loads(read_flash_file(board.flash, "config.json"))
        assert config["lock"] == {"fallback": "deny", "door_open_s": 120}
        said = f"lock: fallback deny, a door held open 120 s is reported (profile {profile})"
        assert said in out
        code, out, err = run_kvitto([*base, "--fallback", "open_for_allowed"])
        assert code == 0, err
        config = json.loads(read_flash_file(board.flash, "config.json"))
        assert config["lock"] == {"fallback": "open_for_allowed", "door_open_s": 120}
        assert f"(--fallback; profile {profile})" in out
    finally:
        board.stop()
