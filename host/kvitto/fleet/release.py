"""Signed firmware releases: the organisation's offline release key and `kvitto release`.

    public = make_release_key(Path("pki"))                                   # once, offline
    release = sign_image(Path("pki"), Path("fw.bin"), "0.2.0", "esp32", Path("fw.bin.release"))

The release key is kept like the PKI's other keys (PKCS#8 PEM, mode 0600, never overwritten);
its public half goes into every device's config.json (`release_public_key`) at provisioning.
A device boots an image only with a manifest signed by it, for its chip, with a version above
the one it runs (device.evidence.release).
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.errors import KvittoError
from kvitto.evidence.cose import EvidenceError
from kvitto.evidence.release import Release, sign_release, verify_release
from kvitto.store.keys import (
    RELEASE_KEY,
    RELEASE_PUBLIC,
    load_ed25519_key,
    load_release_public,
    write_private,
)

MANIFEST_SUFFIX = ".release"


def make_release_key(pki_dir: Path) -> bytes:
    """Create the release key in `pki_dir` (refuses to replace one: devices trust it)."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    write_private(pki_dir / RELEASE_KEY, pem)
    public = key.public_key().public_bytes_raw()
    (pki_dir / RELEASE_PUBLIC).write_text(public.hex() + "\n")
    return public


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise KvittoError(f"{path}: cannot read the {what}: {error.strerror}") from None


def sign_image(pki_dir: Path, image_path: Path, version: str, chip: str,
               out: Path | None = None) -> tuple[Release, Path]:  # fmt: skip
    """Sign `image_path`; the manifest goes beside it (IMAGE.release) unless `out` names it."""
    secret = load_ed25519_key(pki_dir / RELEASE_KEY, "release key (kvitto release key)")
    image = _read(image_path, "image")
    try:
        manifest = sign_release(secret, image, version, chip)
    except EvidenceError as error:
        raise KvittoError(f"{image_path}: {error}") from None
    target = out or image_path.with_name(image_path.name + MANIFEST_SUFFIX)
    target.write_bytes(manifest)
    public = load_release_public(pki_dir)
    return verify_release(manifest, public or bytes(32)), target


def check_release(pki_dir: Path, image_path: Path, manifest_path: Path) -> Release:
    """The release a manifest signs, checked against the image and the release public key."""
    public = load_release_public(pki_dir)
    if public is None:
        raise KvittoError(f"{pki_dir / RELEASE_PUBLIC}: missing; run `kvitto release key`")
    image = _read(image_path, "image")
    manifest = _read(manifest_path, "release manifest")
    try:
        release = verify_release(manifest, public)
        release.check_image(image)
    except EvidenceError as error:
        raise KvittoError(f"{manifest_path}: {error}") from None
    return release


def run_release_key(pki_dir: str, output_format: str) -> None:
    public = make_release_key(Path(pki_dir))
    if output_format == "json":
        print(json.dumps({"release_public_key": public.hex()}))
    else:
        print(f"release key created in {pki_dir}; devices provisioned from now on hold "
              f"{public.hex()}")  # fmt: skip


def run_release_sign(pki_dir: str, image: str, version: str, chip: str, out: str | None,
                     output_format: str) -> None:  # fmt: skip
    release, target = sign_image(Path(pki_dir), Path(image), version, chip,
                                 Path(out) if out else None)  # fmt: skip
    if output_format == "json":
        print(json.dumps({**release.as_dict(), "manifest": str(target)}))
    else:
        print(f"signed {image} as {release.version} for {release.chip} "
              f"({release.size} bytes): {target}")  # fmt: skip
