"""The organisation's key folder as kvitto reads it (`kvitto pki` and `kvitto enroll` write it).

    org = load_org(Path("pki"))        # public command key and credential salt
    secret = load_command_key(Path("pki"))

File names and readers only: creating keys and certificates is kvitto.install.pki's and
kvitto.install.enroll's business. Verifying and collecting read the folder through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.errors import KvittoError

COMMAND_KEY = "org-command.key"
COMMAND_PUBLIC = "org-command.pub"
CREDENTIAL_SALT = "credential-salt"
NTAG424_MASTER = "ntag424-master.key"  # diversifies application keys 0, 1, 3, 4
NTAG424_FILE_MASTER = "ntag424-file.key"  # diversifies the SDM file read key (key 2)
NTAG424_META = "ntag424-meta.key"  # SDM meta read key: shared, the UID is not known before it
RELEASE_KEY = "release.key"  # signs firmware releases (kvitto release); kept offline
RELEASE_PUBLIC = "release.pub"  # hex: devices hold it (config.json release_public_key)


@dataclass(frozen=True)
class OrgKeys:
    """The public half of the organisation's material, as devices are configured with it."""

    command_public_key: bytes
    credential_salt: bytes
    release_public_key: bytes | None = None

    def device_config(self) -> dict[str, str]:
        config = {
            "salt": self.credential_salt.hex(),
            "org_public_key": self.command_public_key.hex(),
        }
        if self.release_public_key is not None:
            config["release_public_key"] = self.release_public_key.hex()
        return config


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never briefly readable by others); refuse to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KvittoError(f"{path}: exists already; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as stream:
        os.fchmod(stream.fileno(), 0o600)  # umask could have narrowed it; never widened
        stream.write(data)


def load_ed25519_key(path: Path, what: str) -> bytes:
    """A raw 32-byte Ed25519 key from its PKCS#8 PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise KvittoError(f"{path}: cannot read the {what}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KvittoError(f"{path}: not an Ed25519 key")
    return key.private_bytes_raw()


def load_release_public(pki_dir: Path) -> bytes | None:
    """The release public key devices hold, or None before `kvitto release key`."""
    path = pki_dir / RELEASE_PUBLIC
    if not path.exists():
        return None
    try:
        public = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise KvittoError(f"{path}: cannot read the release public key: {error}") from None
    if len(public) != 32:
        raise KvittoError(f"{path}: an Ed25519 public key is 32 bytes, found {len(public)}")
    return public


def load_command_key(pki_dir: Path) -> bytes:
    """The raw 32-byte Ed25519 command key (what `evidence.sign_command` takes)."""
    path = pki_dir / COMMAND_KEY
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise KvittoError(f"{path}: cannot read the command key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KvittoError(f"{path}: not an Ed25519 key")
    return key.private_bytes_raw()


def load_org(pki_dir: Path) -> OrgKeys:
    """Public command key and credential salt from a `kvitto pki` folder."""
    secret = load_command_key(pki_dir)
    salt_path = pki_dir / CREDENTIAL_SALT
    try:
        salt = bytes.fromhex(salt_path.read_text().strip())
    except (OSError, ValueError) as error:
        raise KvittoError(f"{salt_path}: cannot read the credential salt: {error}") from None
    if len(salt) < 16:
        raise KvittoError(f"{salt_path}: the credential salt is shorter than 16 bytes")
    public = Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return OrgKeys(public, salt, load_release_public(pki_dir))


def read_ntag424_key(path: Path) -> bytes:
    """An NTAG 424 master or SDM key file (`kvitto pki` folder): 16 bytes as hex."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise KvittoError(f"{path}: cannot read the NTAG 424 key: {error}") from None
    if len(key) != 16:
        raise KvittoError(f"{path}: an AES-128 key is 16 bytes, found {len(key)}")
    return key
