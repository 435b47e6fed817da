"""The broker configuration `kvitto broker-config` writes, run in a real Mosquitto: each device
reaches only its own topics, anonymous and wrong logins are refused, the collector reads every
device's events and writes commands."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from collect_support import wait_for
from installer_support import MqttProbe, settle, unstarted_mosquitto

from kvitto.cli import cli
from kvitto.collect.collector import Collector
from kvitto.errors import KvittoError
from kvitto.install.broker_config import (
    COLLECTOR_USER,
    OTA_USER,
    BrokerSettings,
    check_password,
    new_password,
    password_hash,
    write_broker_config,
)
from kvitto.install.pki import TlsFiles
from kvitto.store.db import open_store
from kvitto.store.registry import DeviceAccount


def broker_user() -> str | None:
    """Mosquitto started as root drops to `mosquitto`; in a root test sandbox keep it root."""
    return "root" if os.geteuid() == 0 else None


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto running the generated config for devices tag-0001 (A) and tag-0002 (B)."""
    passwords = {"tag-0001": new_password(), "tag-0002": new_password()}
    accounts = [DeviceAccount(dev, password_hash(pw)) for dev, pw in passwords.items()]
    mosquitto = unstarted_mosquitto(tmp_path / "run")
    settings = BrokerSettings(bind="127.0.0.1", port=mosquitto.port, run_as=broker_user())
    written = write_broker_config(tmp_path / "etc", accounts, settings)
    mosquitto.config = written.config
    mosquitto.start()
    collector = written.collector_password_file.read_text().strip()
    yield mosquitto, passwords, collector, written
    mosquitto.stop()


def probe(mosquitto, user, password):
    client = MqttProbe(mosquitto.host, mosquitto.port, user, password)
    assert client.connect() == 0, f"{user} was refused"
    return client


def test_device_a_cannot_reach_device_b(broker):
    mosquitto, passwords, collector_password, _ = broker
    device_a = probe(mosquitto, "tag-0001", passwords["tag-0001"])
    device_b = probe(mosquitto, "tag-0002", passwords["tag-0002"])
    collector = probe(mosquitto, COLLECTOR_USER, collector_password)
    try:
        # A tries to eavesdrop on B's commands and events, by name and by wildcard.
        for topic in ("kvitto/v1/tag-0002/cmd", "kvitto/v1/tag-0002/evt", "kvitto/v1/#"):
            device_a.subscribe(topic)
        device_a.subscribe("kvitto/v1/tag-0001/cmd")
        device_b.subscribe("kvitto/v1/tag-0002/cmd")
        collector.subscribe("kvitto/v1/+/evt")
        collector.subscribe("kvitto/v1/+/state")

        # A forges events, state and commands under B's name.
        device_a.publish("kvitto/v1/tag-0002/evt", b"forged-event")
        device_a.publish("kvitto/v1/tag-0002/state", b"forged-state")
        device_a.publish("kvitto/v1/tag-0002/cmd", b"forged-command")
        # The legitimate traffic, which must arrive (so the zeros above mean something).
        device_a.publish("kvitto/v1/tag-0001/evt", b"a-event")
        device_b.publish("kvitto/v1/tag-0002/evt", b"b-event")
        collector.publish("kvitto/v1/tag-0002/cmd", b"b-command")
        collector.publish("kvitto/v1/tag-0001/cmd", b"a-command")
        settle(1.0)

        assert ("kvitto/v1/tag-0001/evt", b"a-event") in collector.messages
        assert ("kvitto/v1/tag-0002/evt", b"b-event") in collector.messages
        assert not [m for m in collector.messages if m[1].startswith(b"forged")]
        assert device_b.messages == [("kvitto/v1/tag-0002/cmd", b"b-command")]
        # A sees only its own command: nothing of B's, 0 delivered.
        assert device_a.messages == [("kvitto/v1/tag-0001/cmd", b"a-command")]
    finally:
        for client in (device_a, device_b, collector):
            client.close()


def test_the_ota_login_sends_commands_reads_state_and_leaves_the_collector_alone(broker):
    # issue #22: `kvitto ota push` has a login of its own, so it never takes the collector's
    # session (the broker names sessions by username), and may do only what an update needs
    mosquitto, passwords, collector_password, written = broker
    device_a = probe(mosquitto, "tag-0001", passwords["tag-0001"])
    collector = probe(mosquitto, COLLECTOR_USER, collector_password)
    pusher = probe(mosquitto, OTA_USER, written.ota_password_file.read_text().strip())
    try:
        device_a.subscribe("kvitto/v1/tag-0001/cmd")
        collector.subscribe("kvitto/v1/+/evt")
        pusher.subscribe("kvitto/v1/+/state")
        pusher.subscribe("kvitto/v1/+/evt")  # not its business: nothing arrives
        pusher.publish("kvitto/v1/tag-0001/cmd", b"KVO1-chunk")
        pusher.publish("kvitto/v1/tag-0001/evt", b"forged-event")
        device_a.publish("kvitto/v1/tag-0001/state", b"ota 3")
        device_a.publish("kvitto/v1/tag-0001/evt", b"a-event")
        settle(1.0)
        assert device_a.messages == [("kvitto/v1/tag-0001/cmd", b"KVO1-chunk")]
        assert pusher.messages == [("kvitto/v1/tag-0001/state", b"ota 3")]
        assert collector.messages == [("kvitto/v1/tag-0001/evt", b"a-event")]  # still on
    finally:
        for client in (device_a, collector, pusher):
            client.close()


def test_a_device_cannot_publish_commands_to_itself(broker):
    # One session per device (the broker names it by the username), so the device listens to
    # its own command topic itself; the collector's command shows the zero means something.
    mosquitto, passwords, collector_password, _ = broker
    device_a = probe(mosquitto, "tag-0001", passwords["tag-0001"])
    collector = probe(mosquitto, COLLECTOR_USER, collector_password)
    try:
        device_a.subscribe("kvitto/v1/tag-0001/cmd")
        device_a.publish("kvitto/v1/tag-0001/cmd", b"self-command")
        collector.publish("kvitto/v1/tag-0001/cmd", b"a-command")
        settle()
        assert device_a.messages == [("kvitto/v1/tag-0001/cmd", b"a-command")]
    finally:
        device_a.close()
        collector.close()


def test_no_login_can_take_another_clients_session(broker, tmp_path):
    """A client id names a session, and a second connection with the same id closes the first:
    device A tries the collector's ids and device B's, with clean and persistent sessions."""
    mosquitto, passwords, collector_password, _ = broker
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    url = f"mqtt://{COLLECTOR_USER}:{collector_password}@{mosquitto.host}:{mosquitto.port}"
    collector = Collector(store, url, None)
    collector.start()
    collector.wait_ready()
    device_b = MqttProbe(
        mosquitto.host, mosquitto.port, "tag-0002", passwords["tag-0002"], client_id="tag-0002"
    )
    try:
        assert device_b.connect() == 0
        device_b.subscribe("kvitto/v1/tag-0002/cmd")
        for taken in (COLLECTOR_USER, "kvitto-collector", "tag-0002"):
            for clean in (True, False):
                attacker = MqttProbe(
                    mosquitto.host, mosquitto.port, "tag-0001", passwords["tag-0001"],
                    client_id=taken, clean_session=clean,
                )  # fmt: skip
                attacker.connect()
                settle(0.3)
                attacker.close()
        device_b.publish("kvitto/v1/tag-0002/evt", b"b-event")
        wait_for(lambda: collector.stats().received == 1, what="B's message at the collector")
        stats = collector.stats()
        assert (stats.disconnects, stats.connected, stats.subscribed) == (0, True, True)
        assert device_b.disconnects == 0
        assert collector.error is None
    finally:
        device_b.close()
        collector.stop()
        store.close()


def test_every_listener_names_the_session_by_the_username(tmp_path):
    tls = TlsFiles(tmp_path / "ca.crt", tmp_path / "broker.crt", tmp_path / "broker.key")
    settings = BrokerSettings(tls=tls, client_certificates=True)
    written = write_broker_config(tmp_path / "etc", [], settings)
    listeners = written.config.read_text().split("\nlistener ")[1:]
    assert len(listeners) == 2
    assert all("\nuse_username_as_clientid true\n" in text for text in listeners)


@pytest.mark.parametrize(
    "user,password",
    [(None, None), ("tag-0001", "wrong"), ("tag-0009", "whatever"), (COLLECTOR_USER, "guess")],
    ids=["anonymous", "wrong-password", "unknown-device", "collector-guess"],
)
def test_logins_without_the_right_password_are_refused(broker, user, password):
    mosquitto, passwords, _, _ = broker
    client = MqttProbe(mosquitto.host, mosquitto.port, user, password)
    try:
        # 5 = not authorised; None = the broker closed the socket without accepting.
        assert client.connect() != 0
    finally:
        client.close()


def test_files_are_private_and_config_has_persistence(broker):
    _, _, _, written = broker
    for path in (written.password_file, written.acl_file, written.collector_password_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = written.config.read_text()
    assert "persistence true" in config
    assert "allow_anonymous false" in config
    assert "autosave_interval 10" in config
    assert "max_queued_messages" in config
    acl = written.acl_file.read_text()
    assert "pattern read kvitto/v1/%u/cmd" in acl


def test_hash_matches_mosquitto_passwd(tmp_path):
    """Our `$7$` lines verify the same way as those `mosquitto_passwd` writes, both ways."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "tag-0042", "s3cret"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert check_password("s3cret", theirs)
    assert not check_password("s3cret!", theirs)
    assert check_password("s3cret", password_hash("s3cret"))


def test_collector_password_is_kept_across_runs(tmp_path):
    first = write_broker_config(tmp_path, [])
    password = first.collector_password_file.read_text()
    second = write_broker_config(tmp_path, [])
    assert second.collector_password_file.read_text() == password
    assert len(password.strip()) >= 22


@pytest.mark.parametrize("bad", ["Tag-1", "tag/1", "t#", "ab", "tag+1", "a" * 33, "kvitto_x"])
def test_bad_device_ids_are_refused(tmp_path, bad):
    with pytest.raises(KvittoError, match="not a device id"):
        write_broker_config(tmp_path, [DeviceAccount(bad, password_hash("x"))])


def test_cli_writes_config_from_accounts_file(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"device": "tag-0001", "password_hash": password_hash("p")}]))
    result = CliRunner().invoke(
        cli,
        ["broker-config", "--out", str(tmp_path / "etc"), "--accounts", str(accounts)]
        + ["--format", "json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["devices"] == ["tag-0001"]
    assert (tmp_path / "etc" / "mosquitto.conf").exists()


def test_cli_takes_accounts_from_the_registry_and_leaves_revoked_devices_out(tmp_path):
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    with open_store(url) as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        for number, device in enumerate(("tag-0001", "tag-0002"), start=1):
            registry.add_device(device, "c-1001", "tag", bytes([number]) * 32)
            registry.set_mqtt_account(device, password_hash(new_password()))
        registry.revoke_device("tag-0002", "2000-01-01")
    result = CliRunner().invoke(
        cli, ["broker-config", "--out", str(tmp_path / "etc"), "--store", url, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["devices"] == ["tag-0001"]
    users = [line.split(":")[0] for line in (tmp_path / "etc" / "passwords").read_text().split()]
    assert users == [COLLECTOR_USER, OTA_USER, "tag-0001"]


def test_the_brokers_window_fits_the_collectors_batches(broker):
    # The collector sends a batch's PUBACKs only after its commit, so a broker that enforces
    # its in-flight window caps the batch: the window must hold at least the smallest batch
    # the collector aims for (collect.Collector._batch_limit's floor of 64), with room to spare.
    _, _, _, written = broker
    lines = dict(
        line.split(" ", 1) for line in written.config.read_text().splitlines() if " " in line
    )
    assert int(lines["max_inflight_messages"]) >= 4 * 64


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs root to hand files over")
def test_the_documented_tls_broker_starts_as_the_run_as_user(tmp_path):
    """#24 item 1: `kvitto broker-config --pki pki --run-as mosquitto`, then `mosquitto -c`,
    exactly as docs/installer.md says. The broker key stayed 0600 root in pki/ and Mosquitto,
    once it had dropped to its user, could not read it. Now the TLS files are copied beside
    the config, owned by the run-as user (the key 0600), and the broker starts and talks TLS."""
    import pwd
    import socket
    import ssl
    import tempfile
    import time

    from cli_support import run_kvitto

    from conftest import free_port, mosquitto_binary

    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("no mosquitto binary (make setup installs it)")
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user on this machine")
    pki = tmp_path / "pki"  # root-only, as the pki folder should be
    assert run_kvitto(["pki", "--dir", str(pki), "--broker-host", "127.0.0.1"])[0] == 0
    out = Path(tempfile.mkdtemp(prefix="kvitto-etc-"))  # a folder mosquitto can reach
    out.chmod(0o755)
    try:
        port, tls_port = free_port(), free_port()
        code, _, err = run_kvitto([
            "broker-config", "--accounts", str(_accounts_file(tmp_path)), "--out", str(out / "k"),
            "--pki", str(pki), "--run-as", "mosquitto", "--bind", "127.0.0.1",
            "--port", str(port), "--tls-port", str(tls_port),
        ])  # fmt: skip
        assert code == 0, err
        config = (out / "k" / "mosquitto.conf").read_text()
        key_line = next(line for line in config.splitlines() if line.startswith("keyfile "))
        key = Path(key_line.split(" ", 1)[1])
        assert key.parent != pki.resolve() and key.stat().st_uid == user.pw_uid
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        broker = subprocess.Popen(
            [binary, "-c", str(out / "k" / "mosquitto.conf")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            deadline = time.monotonic() + 10
            while True:
                assert broker.poll() is None, broker.stdout.read().decode()  # type: ignore[union-attr]
                try:
                    with socket.create_connection(("127.0.0.1", tls_port), timeout=1) as raw:
                        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                            assert tls.version() in ("TLSv1.2", "TLSv1.3")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the TLS listener did not come up"
                    time.sleep(0.1)
        finally:
            broker.terminate()
            broker.wait(5)
    finally:
        shutil.rmtree(out)


def _accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"device": "tag-0042", "password_hash": password_hash("x")}]))
    return path
