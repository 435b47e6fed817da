"""The organisation's keys: command-signing key, credential salt, a CA and TLS certificates.

    from kvitto.install.pki import ensure_org, issue_broker_certificate
    org = ensure_org(Path("pki"))                       # created once, then reused
    issue_broker_certificate(Path("pki"), ["mqtt.example.org", "127.0.0.1"])

Every private file is written with mode 0600 and never overwritten: re-running `kvitto pki`
adds what is missing and leaves existing keys alone (a new command key would orphan every
provisioned device).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvitto.errors import KvittoError
from kvitto.store.keys import (
    COMMAND_KEY,
    COMMAND_PUBLIC,
    CREDENTIAL_SALT,
    OrgKeys,
    load_org,
    write_private,
)

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
BROKER_KEY = "broker.key"
BROKER_CERT = "broker.crt"
_SALT_BYTES = 32
_CA_DAYS = 3650
_LEAF_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener (from `kvitto pki`)."""

    ca: Path
    certificate: Path
    key: Path


def _pkcs8_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM: its file's protection is its mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_org(pki_dir: Path) -> OrgKeys:
    """The command key and credential salt in `pki_dir`, created on first use."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    key_path = pki_dir / COMMAND_KEY
    if not key_path.exists():
        key = Ed25519PrivateKey.generate()
        write_private(key_path, _pkcs8_pem(key))
        public = key.public_key().public_bytes_raw()
        (pki_dir / COMMAND_PUBLIC).write_text(public.hex() + "\n")
    salt_path = pki_dir / CREDENTIAL_SALT
    if not salt_path.exists():
        write_private(salt_path, (secrets.token_bytes(_SALT_BYTES).hex() + "\n").encode())
    return load_org(pki_dir)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kvitto"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    # P-256: what mbedTLS on the ESP32 and every Mosquitto build handle.
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(path, _pkcs8_pem(key))
    return key


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KvittoError(f"{path}: not an EC key")
    return key


def ensure_ca(pki_dir: Path, common_name: str = "kvitto CA") -> Path:
    """The CA certificate path, creating CA key and self-signed certificate on first use."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_path = pki_dir / CA_CERT
    if cert_path.exists():
        return cert_path
    key = _write_key(pki_dir / CA_KEY)
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path


class _Kept(Exception):  # noqa: N818 - a signal within this module, not an error
    """The certificate asked for exists already, unchanged: nothing to write."""

    def __init__(self, key_path: Path, cert_path: Path):
        super().__init__(str(cert_path))
        self.paths = (key_path, cert_path)


def _issue(
    pki_dir: Path, stem: str, common_name: str, hosts: list[str], usage: x509.ObjectIdentifier
) -> tuple[Path, Path]:
    ensure_ca(pki_dir)
    ca_key = _load_ec_key(pki_dir / CA_KEY)
    ca_cert = x509.load_pem_x509_certificate((pki_dir / CA_CERT).read_bytes())
    key_path = pki_dir / f"{stem}.key"
    cert_path = pki_dir / f"{stem}.crt"
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    if cert_path.exists():
        # A re-run adds what is missing: the same certificate again is kept as it is.
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            had = list(existing.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                       .value)  # fmt: skip
        except x509.ExtensionNotFound:
            had = []
        same_name = existing.subject == _name(common_name)
        if same_name and set(had) == set(alt_names) and key_path.exists():
            raise _Kept(key_path, cert_path)
        raise KvittoError(
            f"{cert_path}: exists already for other names; remove it (and {key_path.name}) "
            "first to reissue"
        )
    key = _write_key(key_path)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def issue_broker_certificate(pki_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Broker server key and certificate for the given host names and addresses."""
    if not hosts:
        raise KvittoError("the broker certificate needs at least one --broker-host")
    return _issue(pki_dir, "broker", hosts[0], hosts, ExtendedKeyUsageOID.SERVER_AUTH)


def issue_device_certificate(pki_dir: Path, device_id: str) -> tuple[Path, Path]:
    """A TLS client certificate whose common name is the device id (Mosquitto's
    `use_identity_as_username`); the default login is the per-device password instead."""
    from kvitto.store.registry import check_device_id

    check_device_id(device_id)
    (pki_dir / "devices").mkdir(parents=True, exist_ok=True)
    return _issue(pki_dir, f"devices/{device_id}", device_id, [], ExtendedKeyUsageOID.CLIENT_AUTH)


def broker_tls_files(pki_dir: Path):
    """CA, broker certificate and key for a TLS listener, or a KvittoError naming what is missing."""

    files = TlsFiles(
        ca=(pki_dir / CA_CERT).resolve(),
        certificate=(pki_dir / BROKER_CERT).resolve(),
        key=(pki_dir / BROKER_KEY).resolve(),
    )
    for path in (files.ca, files.certificate, files.key):
        if not path.exists():
            raise KvittoError(f"{path}: missing; run `kvitto pki --dir {pki_dir} --broker-host H`")
    return files


def run_pki(
    pki_dir: str, broker_hosts: list[str], devices: list[str], output_format: str
) -> dict[str, object]:
    """`kvitto pki`: create what is missing, issue the asked-for certificates, report."""
    import json

    import click

    directory = Path(pki_dir)
    org = ensure_org(directory)
    ca = ensure_ca(directory)
    issued: list[str] = []
    kept: list[str] = []
    requests = [lambda: issue_broker_certificate(directory, list(broker_hosts))]
    requests = requests if broker_hosts else []
    requests += [lambda d=device: issue_device_certificate(directory, d) for device in devices]
    for issue in requests:
        try:
            issued += [str(p) for p in issue()]
        except _Kept as same:
            kept += [str(p) for p in same.paths]
    report = {
        "dir": str(directory),
        "org_public_key": org.command_public_key.hex(),
        "ca": str(ca),
        "issued": issued,
        "kept": kept,
    }
    if output_format == "json":
        click.echo(json.dumps(report))
    else:
        click.echo(f"organisation command key: {org.command_public_key.hex()}")
        click.echo(f"CA certificate: {ca}")
        for path in issued:
            click.echo(f"wrote {path}")
        for path in kept:
            click.echo(f"kept {path} (already there)")
    return report
