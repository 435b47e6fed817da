"""Mosquitto configuration for kvitto: listeners, password file, per-device ACL, queue limits.

    from kvitto.install.broker_config import write_broker_config
    from kvitto.store.registry import DeviceAccount
    written = write_broker_config(Path("/etc/mosquitto/kvitto"), [DeviceAccount("tag-0042", h)])
    # mosquitto -c /etc/mosquitto/kvitto/mosquitto.conf

Each device logs in with its own username (its device id) and a random password made at
provisioning; the registry keeps only the password hash, in the PBKDF2-SHA512 `$7$` format that
`mosquitto_passwd` writes, so this module copies hashes and never sees a device's password.
The ACL gives every device only `kvitto/v1/<its id>/…` through `pattern` lines on `%u`.

Every listener takes the username as the MQTT client id (`use_username_as_clientid`): a client
id names a session, and a second connection with the same id closes the first, so a device
that could choose its client id could log the collector (or another device) off the broker.
The collector's username has an underscore, which no device id has; so has `kvitto ota push`'s
(`kvitto_ota`, issue #22), its own login so that it never takes the collector's session: it may
write commands and read the devices' state lines, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kvitto.errors import KvittoError
from kvitto.install.pki import TlsFiles
from kvitto.store.registry import DeviceAccount, check_device_id

# An underscore cannot occur in a device id, so no device can ever be named like the collector.
COLLECTOR_USER = "kvitto_collector"
OTA_USER = "kvitto_ota"  # `kvitto ota push` (kvitto.fleet.ota): offers and chunks, progress
TOPIC_ROOT = "kvitto/v1"
# mosquitto 2.0 `mosquitto_passwd`: PBKDF2-HMAC-SHA512, 12-byte salt, 101 iterations, 64 bytes.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_HASH_FORMAT = re.compile(r"\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


def new_password() -> str:
    """A fresh MQTT password: 32 random bytes (256 bits) as URL-safe text."""
    return secrets.token_urlsafe(32)


def password_hash(password: str, salt: bytes | None = None) -> str:
    """The `$7$` line mosquitto reads from its password file for this password."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS, 64)
    encode = base64.b64encode
    return f"$7${_PBKDF2_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def check_password(password: str, stored_hash: str) -> bool:
    match = _HASH_FORMAT.fullmatch(stored_hash)
    if not match:
        return False
    iterations, salt, digest = match.groups()
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
    )
    return hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass
class BrokerSettings:
    bind: str = "0.0.0.0"
    port: int = 1883
    tls: TlsFiles | None = None
    tls_port: int = 8883
    plain_listener: bool = True
    # TLS listener logs devices in by their `kvitto pki --device` certificate (CN = device id)
    # instead of a password; the same %u ACL then applies to the certificate's name.
    client_certificates: bool = False
    # A short autosave: a crash loses at most this many seconds of queued QoS 1 messages (the
    # devices keep everything until the collector acknowledges it, so nothing is lost for good).
    autosave_interval: int = 10
    # Per offline client. Devices resend from their journal, so the queue is a buffer, not storage.
    max_queued_messages: int = 10000
    max_queued_bytes: int = 16 * 1024 * 1024
    # Per client, broker to client. The collector acknowledges (PUBACK) a batch only once it is
    # committed to the store, so its window bounds the batch: with mosquitto's default of 20 a
    # broker that enforces it would hold the collector to one commit per 20 events. Devices
    # receive only commands, a few at a time, so a wide window costs them nothing.
    max_inflight_messages: int = 1000
    # Allowlist commands carry 16 bytes per credential: room for a few thousand staff.
    max_packet_size: int = 128 * 1024
    persistent_client_expiration: str = "30d"
    # Mosquitto started as root drops to this user (its default: `mosquitto`); the private files
    # are then given to that user so it can still read them.
    run_as: str | None = None


@dataclass
class BrokerConfig:
    """What `write_broker_config` wrote."""

    config: Path
    password_file: Path
    acl_file: Path
    collector_password_file: Path
    devices: list[str] = field(default_factory=list)
    ota_password_file: Path | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "config": str(self.config),
            "password_file": str(self.password_file),
            "acl_file": str(self.acl_file),
            "collector_user": COLLECTOR_USER,
            "collector_password_file": str(self.collector_password_file),
            "ota_user": OTA_USER,
            "ota_password_file": str(self.ota_password_file),
            "devices": self.devices,
        }


def render_acl() -> str:
    """The ACL: patterns for every device, named topics for the collector, nothing for others."""
    return (
        "# kvitto ACL, written by `kvitto broker-config`. Do not edit: it is regenerated.\n"
        "# Every device (username = device id, [a-z0-9-]) reaches only its own topics.\n"
        f"pattern write {TOPIC_ROOT}/%u/evt\n"
        f"pattern write {TOPIC_ROOT}/%u/state\n"
        f"pattern read {TOPIC_ROOT}/%u/cmd\n"
        "\n"
        "# The collector reads every device's events and state and writes commands.\n"
        f"user {COLLECTOR_USER}\n"
        f"topic read {TOPIC_ROOT}/+/evt\n"
        f"topic read {TOPIC_ROOT}/+/state\n"
        f"topic write {TOPIC_ROOT}/+/cmd\n"
        "\n"
        "# kvitto ota push writes update offers and chunks and reads the devices' progress.\n"
        f"user {OTA_USER}\n"
        f"topic read {TOPIC_ROOT}/+/state\n"
        f"topic write {TOPIC_ROOT}/+/cmd\n"
    )


def render_passwords(
    accounts: Iterable[DeviceAccount], collector_hash: str, ota_hash: str | None = None
) -> str:
    lines = [f"{COLLECTOR_USER}:{collector_hash}"]
    if ota_hash is not None:
        lines.append(f"{OTA_USER}:{ota_hash}")
    seen: set[str] = set()
    for number, account in enumerate(accounts, start=1):
        check_device_id(account.device_id, f"device account {number}")
        if account.device_id in seen:
            raise KvittoError(f"device account {number}: {account.device_id} appears twice")
        if not _HASH_FORMAT.fullmatch(account.password_hash):
            raise KvittoError(
                f"device account {account.device_id}: password hash is not in mosquitto's "
                "$7$ format"
            )
        seen.add(account.device_id)
        lines.append(f"{account.device_id}:{account.password_hash}")
    return "\n".join(lines) + "\n"


def render_config(
    settings: BrokerSettings, password_file: Path, acl_file: Path, data_dir: Path
) -> str:
    lines = [
        "# kvitto Mosquitto configuration, written by `kvitto broker-config`.",
        "# Regenerate it after provisioning or revoking a device; reload with SIGHUP.",
        "per_listener_settings false",
        *([f"user {settings.run_as}"] if settings.run_as else []),
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "",
        "# Persistence on with a short autosave: queued QoS 1 messages survive a broker restart.",
        "persistence true",
        f"persistence_location {data_dir}/",
        f"autosave_interval {settings.autosave_interval}",
        f"persistent_client_expiration {settings.persistent_client_expiration}",
        "",
        "# Queue limits per client (a PUBACK is not durability: devices keep their journal).",
        f"max_queued_messages {settings.max_queued_messages}",
        f"max_queued_bytes {settings.max_queued_bytes}",
        f"max_inflight_messages {settings.max_inflight_messages}",
        f"max_packet_size {settings.max_packet_size}",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
        "",
    ]
    # A listener option (mosquitto.conf(5)): on every listener, so that no login can take
    # another's client id and with it the other's session.
    same_id = "use_username_as_clientid true"
    if settings.plain_listener:
        lines += [f"listener {settings.port} {settings.bind}", "protocol mqtt", same_id, ""]
    if settings.tls is not None:
        lines += [
            f"listener {settings.tls_port} {settings.bind}",
            "protocol mqtt",
            same_id,
            f"cafile {settings.tls.ca}",
            f"certfile {settings.tls.certificate}",
            f"keyfile {settings.tls.key}",
            "tls_version tlsv1.2",
            *(
                ["require_certificate true", "use_identity_as_username true"]
                if settings.client_certificates
                else []
            ),
            "",
        ]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(text)


def collector_password(out_dir: Path, name: str = "collector") -> str:
    """The collector's (or `ota`'s) password: made once (256 bits) and kept beside the config,
    mode 0600."""
    path = out_dir / f"{name}.password"
    if path.exists():
        password = path.read_text().strip()
        if len(password) < 22:  # 22 URL-safe characters carry 128 bits
            raise KvittoError(f"{path}: the {name} password is shorter than 128 bits")
        return password
    password = new_password()
    _write_private(path, password + "\n")
    return password


def write_broker_config(
    out_dir: Path,
    accounts: Iterable[DeviceAccount],
    settings: BrokerSettings | None = None,
) -> BrokerConfig:
    """Write mosquitto.conf, passwords, acl and the collector's password into `out_dir`."""
    settings = settings or BrokerSettings()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = out_dir / "data"
    data_dir.mkdir(exist_ok=True)
    accounts = list(accounts)
    password = collector_password(out_dir)
    ota_password = collector_password(out_dir, "ota")
    password_file = out_dir / "passwords"
    acl_file = out_dir / "acl"
    config_file = out_dir / "mosquitto.conf"
    tls_copies: list[Path] = []
    if settings.tls is not None:
        settings, tls_copies = _copy_tls(settings, out_dir / "tls")
    _write_private(
        password_file,
        render_passwords(accounts, password_hash(password), password_hash(ota_password)),
    )
    _write_private(acl_file, render_acl())
    _write_private(config_file, render_config(settings, password_file, acl_file, data_dir))
    if settings.run_as and os.geteuid() == 0:
        _give_to(
            settings.run_as,
            [out_dir, data_dir, password_file, acl_file, config_file, *tls_copies],
        )
    return BrokerConfig(
        config=config_file,
        password_file=password_file,
        acl_file=acl_file,
        collector_password_file=out_dir / "collector.password",
        devices=[account.device_id for account in accounts],
        ota_password_file=out_dir / "ota.password",
    )


def _copy_tls(settings: BrokerSettings, tls_dir: Path) -> tuple[BrokerSettings, list[Path]]:
    """Copies of the CA, broker certificate and key beside the config, for Mosquitto to read
    after it dropped to `run_as` (the key 0600, handed to that user with the rest): the `pki`
    folder and its keys stay root's. Re-run `kvitto broker-config` after a new certificate."""
    import dataclasses

    assert settings.tls is not None
    sources = (settings.tls.ca, settings.tls.certificate, settings.tls.key)
    if not all(Path(source).exists() for source in sources):
        return settings, []  # named as given (`kvitto broker-config --pki` checks they exist)
    tls_dir.mkdir(exist_ok=True)
    os.chmod(tls_dir, 0o700)
    copies = TlsFiles(
        ca=tls_dir / "ca.crt", certificate=tls_dir / "broker.crt", key=tls_dir / "broker.key"
    )
    for source, target in (
        (settings.tls.ca, copies.ca),
        (settings.tls.certificate, copies.certificate),
        (settings.tls.key, copies.key),
    ):
        try:
            _write_private(target, Path(source).read_text())
        except OSError as error:
            raise KvittoError(f"{source}: cannot copy for the broker: {error}") from None
    return dataclasses.replace(settings, tls=copies), [
        tls_dir,
        copies.ca,
        copies.certificate,
        copies.key,
    ]


def _give_to(user: str, paths: list[Path]) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise KvittoError(f"--run-as: there is no user {user!r} on this machine") from None
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def accounts_from_registry(store_url: str) -> list[DeviceAccount]:
    """The MQTT accounts of every device that is not revoked, from the registry."""
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    with open_store(store_url, create=False) as store:
        return Registry(store).mqtt_accounts()


def accounts_from_file(path: Path) -> list[DeviceAccount]:
    """Accounts from a JSON list of {"device": id, "password_hash": "$7$…"}."""
    import json

    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KvittoError(f"{path}: cannot read the accounts: {error}") from None
    if not isinstance(rows, list):
        raise KvittoError(f"{path}: expected a JSON list of accounts")
    accounts = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "device" not in row or "password_hash" not in row:
            raise KvittoError(f"{path} item {number}: needs fields 'device' and 'password_hash'")
        device = check_device_id(row["device"], f"{path} item {number}, field device")
        accounts.append(DeviceAccount(device, str(row["password_hash"])))
    return accounts


def run_broker_config(
    out_dir: str,
    store_url: str | None,
    accounts_file: str | None,
    bind: str,
    port: int,
    pki_dir: str | None,
    tls_port: int,
    run_as: str | None,
    output_format: str,
    client_certificates: bool = False,
) -> BrokerConfig:
    """`kvitto broker-config`: accounts from the registry (or a file), then write everything."""
    import json

    import click

    if store_url and accounts_file:
        raise KvittoError("give either --store or --accounts, not both")
    if accounts_file:
        accounts = accounts_from_file(Path(accounts_file))
    elif store_url:
        accounts = accounts_from_registry(store_url)
    else:
        raise KvittoError("no devices: give --store URL (the registry) or --accounts FILE")
    tls = None
    if pki_dir:
        from kvitto.install.pki import broker_tls_files

        tls = broker_tls_files(Path(pki_dir))
    if client_certificates and tls is None:
        raise KvittoError("--client-certs needs --pki (the CA that signed the devices)")
    settings = BrokerSettings(
        bind=bind,
        port=port,
        tls=tls,
        tls_port=tls_port,
        run_as=run_as,
        client_certificates=client_certificates,
    )
    written = write_broker_config(Path(out_dir), accounts, settings)
    if output_format == "json":
        click.echo(json.dumps(written.as_dict()))
    else:
        click.echo(f"wrote {written.config} ({len(written.devices)} devices)")
        click.echo(
            f"collector login: {COLLECTOR_USER}, password in {written.collector_password_file}"
        )
        click.echo(f"kvitto ota push login: {OTA_USER}, password in {written.ota_password_file}")
        click.echo(f"run: mosquitto -c {written.config}")
    return written
