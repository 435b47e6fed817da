"""`kvitto pki`: the organisation's command key and salt, a CA and certificates — private files
0600, never overwritten, and a broker certificate a real Mosquitto serves TLS with."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from installer_support import MqttProbe, unstarted_mosquitto

from conftest import free_port
from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import split_sign1
from kvitto.install.broker_config import (
    BrokerSettings,
    new_password,
    password_hash,
    write_broker_config,
)
from kvitto.install.pki import (
    broker_tls_files,
    ensure_org,
    issue_broker_certificate,
    issue_device_certificate,
    write_private,
)
from kvitto.store.keys import load_command_key
from kvitto.store.registry import DeviceAccount


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_org_keys_are_private_stable_and_sign_commands(tmp_path):
    org = ensure_org(tmp_path)
    for name in ("org-command.key", "credential-salt"):
        assert mode(tmp_path / name) == 0o600, name
    assert ensure_org(tmp_path) == org  # re-running keeps the keys
    assert len(org.credential_salt) == 32
    # The stored key signs commands the public key (what devices get) verifies.
    command = sign_command(load_command_key(tmp_path), "tag-0042", 1, 2_000_000_000, "ack")
    _, protected, payload, signature = split_sign1(command)
    from kvitto.evidence.cose import sig_structure

    Ed25519PublicKey.from_public_bytes(org.command_public_key).verify(
        signature, sig_structure(protected, payload)
    )
    config = org.device_config()
    assert set(config) == {"salt", "org_public_key"}


def test_two_organisations_share_nothing(tmp_path):
    first = ensure_org(tmp_path / "a")
    second = ensure_org(tmp_path / "b")
    assert first.command_public_key != second.command_public_key
    assert first.credential_salt != second.credential_salt


def test_private_files_are_never_overwritten(tmp_path):
    write_private(tmp_path / "k", b"one")
    with pytest.raises(KvittoError, match="refusing to overwrite"):
        write_private(tmp_path / "k", b"two")
    assert (tmp_path / "k").read_bytes() == b"one"


def test_certificates_chain_to_the_ca(tmp_path):
    key, cert = issue_broker_certificate(tmp_path, ["mqtt.example.org", "127.0.0.1"])
    assert mode(key) == 0o600 and mode(tmp_path / "ca.key") == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.example.org" in names.get_values_for_type(x509.DNSName)
    device_key, device_cert = issue_device_certificate(tmp_path, "tag-0042")
    device = x509.load_pem_x509_certificate(device_cert.read_bytes())
    device.verify_directly_issued_by(ca)
    assert device.subject.rfc4514_string().startswith("CN=tag-0042")
    with pytest.raises(KvittoError, match="not a device id"):
        issue_device_certificate(tmp_path, "Tag 42")


def test_cli_json_report(tmp_path):
    result = CliRunner().invoke(
        cli, ["pki", "--dir", str(tmp_path / "pki"), "--broker-host", "localhost"]
        + ["--format", "json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(bytes.fromhex(report["org_public_key"])) == 32
    assert any(path.endswith("broker.crt") for path in report["issued"])


def test_mosquitto_serves_tls_with_the_broker_certificate(tmp_path):
    pki = tmp_path / "pki"
    issue_broker_certificate(pki, ["127.0.0.1"])
    password = new_password()
    mosquitto = unstarted_mosquitto(tmp_path / "run")
    settings = BrokerSettings(
        bind="127.0.0.1",
        port=mosquitto.port,
        tls=broker_tls_files(pki),
        tls_port=free_port(),
        plain_listener=False,
        run_as="root" if os.geteuid() == 0 else None,
    )
    written = write_broker_config(
        tmp_path / "etc", [DeviceAccount("tag-0001", password_hash(password))], settings
    )
    mosquitto.port = settings.tls_port
    mosquitto.config = written.config
    mosquitto.start()
    try:
        client = MqttProbe(
            "127.0.0.1", settings.tls_port, "tag-0001", password, tls_ca=pki / "ca.crt"
        )
        assert client.connect() == 0
        client.close()
    finally:
        mosquitto.stop()


def test_devices_log_in_by_certificate_and_reach_only_their_topics(tmp_path):
    """The client-certificate listener: the certificate's CN is the username the ACL uses."""
    import paho.mqtt.client as mqtt
    from installer_support import settle

    pki = tmp_path / "pki"
    issue_broker_certificate(pki, ["127.0.0.1"])
    key_a, cert_a = issue_device_certificate(pki, "tag-0001")
    mosquitto = unstarted_mosquitto(tmp_path / "run")
    settings = BrokerSettings(
        bind="127.0.0.1", port=mosquitto.port, tls=broker_tls_files(pki), tls_port=free_port(),
        client_certificates=True, run_as="root" if os.geteuid() == 0 else None,
    )  # fmt: skip
    written = write_broker_config(tmp_path / "etc", [], settings)
    collector_password = written.collector_password_file.read_text().strip()
    mosquitto.config = written.config
    mosquitto.start()
    try:
        collector = MqttProbe("127.0.0.1", mosquitto.port, "kvitto_collector", collector_password)
        assert collector.connect() == 0
        collector.subscribe("kvitto/v1/+/evt")
        # a client with the device certificate, no password
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tag-0001")
        client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(cert_a), keyfile=str(key_a))
        client.connect("127.0.0.1", settings.tls_port)
        client.loop_start()
        client.publish("kvitto/v1/tag-0001/evt", b"mine", qos=1).wait_for_publish(5)
        client.publish("kvitto/v1/tag-0002/evt", b"forged", qos=1).wait_for_publish(5)
        settle(0.5)
        client.loop_stop()
        client.disconnect()
        assert collector.messages == [("kvitto/v1/tag-0001/evt", b"mine")]
        # without a certificate the TLS listener refuses the client
        stranger = MqttProbe(
            "127.0.0.1", settings.tls_port, "tag-0001", "x", tls_ca=pki / "ca.crt"
        )
        try:
            accepted = stranger.connect(timeout=3) == 0
        except OSError:  # the TLS handshake fails at once
            accepted = False
        stranger.close()
        assert not accepted
        collector.close()
    finally:
        mosquitto.stop()


def test_re_running_the_documented_command_adds_what_is_missing(tmp_path):
    """#24 item 6: the guide's `kvitto pki --dir pki --broker-host H` failed the second time
    ("broker.crt: exists already") though the guide says a re-run adds what is missing."""
    from cli_support import run_kvitto

    pki = tmp_path / "pki"
    argv = ["pki", "--dir", str(pki), "--broker-host", "mqtt.example.org"]
    assert run_kvitto(argv)[0] == 0
    first = {p.name: p.read_bytes() for p in pki.iterdir() if p.is_file()}
    (pki / "credential-salt").unlink()  # something missing: the re-run adds it
    code, out, err = run_kvitto(argv)
    assert code == 0, err
    assert "kept" in out and (pki / "credential-salt").exists()
    again = {p.name: p.read_bytes() for p in pki.iterdir() if p.is_file()}
    assert {k: v for k, v in again.items() if k != "credential-salt"} == {
        k: v for k, v in first.items() if k != "credential-salt"
    }  # nothing replaced
    code, _, err = run_kvitto(["pki", "--dir", str(pki), "--broker-host", "other.example.org"])
    assert code == 2 and "other names" in err and len(err.strip().splitlines()) == 1
