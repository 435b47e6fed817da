"""Signed firmware releases (issue #22, docs/fleet.md): the manifest a device checks before it
boots an image, made and checked here as the firmware's `device.evidence.release` checks it.

    manifest = sign_release(release_secret, image, "0.2.0", "esp32")     # COSE_Sign1 bytes
    release = verify_release(manifest, release_public)                  # Release or EvidenceError
    release.check_image(image)                                         # size and SHA-256

Payload: deterministic CBOR {0: 1, 1: version, 2: image size, 3: SHA-256(image), 4: chip},
kid "release", signed with the organisation's offline release key (Ed25519).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import cbor2

from kvitto.evidence.cose import (
    BadSignature,
    FieldType,
    KidMismatch,
    _check_signature,
    canonical,
    sign1,
    split_sign1,
)

RELEASE_KID = b"release"
VERSION = re.compile(r"\d{1,5}(\.\d{1,5}){0,3}")
MAX_IMAGE = 0x400000  # the device's limit too (device.evidence.release._MAX_IMAGE)


@dataclass(frozen=True)
class Release:
    version: str
    size: int
    sha256: bytes
    chip: str

    def check_image(self, image: bytes) -> None:
        if len(image) != self.size:
            raise FieldType(f"image of {len(image)} bytes, the release signs {self.size}")
        if hashlib.sha256(image).digest() != self.sha256:
            raise BadSignature("the image's SHA-256 is not the one the release signs")

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "size": self.size, "sha256": self.sha256.hex(),
                "chip": self.chip}  # fmt: skip


def version_tuple(text: str) -> tuple[int, ...]:
    if not isinstance(text, str) or not VERSION.fullmatch(text):
        raise FieldType(f"version {text!r}: numbers with dots, e.g. 0.2.0")
    return tuple(int(part) for part in text.split("."))


def sign_release(secret: bytes, image: bytes, version: str, chip: str) -> bytes:
    """The signed manifest of `image` (raw 32-byte Ed25519 release key)."""
    version_tuple(version)
    if not 0 < len(image) <= MAX_IMAGE:
        raise FieldType(f"an image of {len(image)} bytes (1 to {MAX_IMAGE})")
    if not chip:
        raise FieldType("the image's chip is missing")
    payload = canonical({0: 1, 1: version, 2: len(image), 3: hashlib.sha256(image).digest(),
                         4: chip})  # fmt: skip
    return sign1(secret, RELEASE_KID, payload)


def verify_release(message: bytes, public_key: bytes) -> Release:
    """The Release a manifest signs under `public_key`, or an EvidenceError naming why."""
    protected, protected_bytes, payload, signature = split_sign1(message)
    if protected[4] != RELEASE_KID:
        raise KidMismatch(f"kid {protected[4]!r} is not {RELEASE_KID!r}")
    _check_signature(public_key, protected_bytes, payload, signature)
    fields = cbor2.loads(payload)
    if not isinstance(fields, dict) or fields.get(0) != 1 or set(fields) != {0, 1, 2, 3, 4}:
        raise FieldType("not a version 1 release manifest")
    release = Release(fields[1], fields[2], fields[3], fields[4])
    version_tuple(release.version)
    if not isinstance(release.size, int) or not 0 < release.size <= MAX_IMAGE:
        raise FieldType(f"image size {release.size!r}")
    if not isinstance(release.sha256, bytes) or len(release.sha256) != 32:
        raise FieldType("sha256 must be 32 bytes")
    if not isinstance(release.chip, str) or not release.chip:
        raise FieldType("chip must be text")
    return release
