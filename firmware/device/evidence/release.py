"""A signed firmware release (issue #22; docs/fleet.md): the manifest `kvitto release sign`
makes with the organisation's offline release key, and the checks a device makes before it
boots an image: signature, version floor (no downgrade), chip, and the image's SHA-256.

    manifest = release.parse(message, release_public, floor="0.1.0", chip="esp32")
    check = release.Digest(manifest)          # feed it the image as it is written, chunk by chunk
    check.update(chunk); check.verify()       # ReleaseRefused unless size and hash match

The manifest is a COSE_Sign1 (RFC 9052) with kid "release" over the deterministic CBOR map
{0: 1, 1: version text, 2: image size, 3: SHA-256 of the image, 4: chip}. Loaded only when an
update arrives: never on a tag's heap otherwise.
"""

import hashlib

from micropython import const

from device.evidence import cbor

_KEY_V = const(0)
_KEY_VERSION = const(1)
_KEY_SIZE = const(2)
_KEY_SHA256 = const(3)
_KEY_CHIP = const(4)
_MAX_IMAGE = const(0x400000)  # 4 MiB: no app slot of a supported board is larger


class ReleaseRefused(Exception):
    """An image the device will not boot; `reason` is one word for the `health` event."""

    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def version_tuple(text):
    """"0.2.0" -> (0, 2, 0); ReleaseRefused("version") for anything else."""
    parts = text.split(".") if isinstance(text, str) else ()
    if not 1 <= len(parts) <= 4:
        raise ReleaseRefused("version", "not a dotted version: %r" % (text,))
    out = []
    for part in parts:
        if not part or not part.isdigit():
            raise ReleaseRefused("version", "not a dotted version: %r" % (text,))
        out.append(int(part))
    return tuple(out)


class Manifest:
    def __init__(self, version, size, sha256, chip):
        self.version = version
        self.size = size
        self.sha256 = sha256
        self.chip = chip


def parse(message, release_public, floor, chip):
    """The Manifest of a release this device may install, or ReleaseRefused: a signature that
    is not the release key's, a version not above `floor` (the running firmware's, or higher),
    another chip's image, a malformed map."""
    from device.evidence import cose

    if release_public is None or len(release_public) != 32:
        raise ReleaseRefused("key", "no release key in config.json")
    try:
        kid, payload = cose.verify1(message, release_public)
    except cose.COSEError as error:
        raise ReleaseRefused("signature", str(error))
    if kid != b"release":
        raise ReleaseRefused("signature", "kid is not release")
    try:
        fields = cbor.decode(payload)
    except cbor.CBORError as error:
        raise ReleaseRefused("malformed", str(error))
    if not isinstance(fields, dict) or fields.get(_KEY_V) != 1 or len(fields) != 5:
        raise ReleaseRefused("malformed", "not a version 1 release manifest")
    version = fields.get(_KEY_VERSION)
    size = fields.get(_KEY_SIZE)
    digest = fields.get(_KEY_SHA256)
    target = fields.get(_KEY_CHIP)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= _MAX_IMAGE:
        raise ReleaseRefused("malformed", "image size %r" % (size,))
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise ReleaseRefused("malformed", "sha256 must be 32 bytes")
    if not isinstance(target, str):
        raise ReleaseRefused("malformed", "chip must be text")
    if version_tuple(version) <= version_tuple(floor):
        raise ReleaseRefused("version", "%s is not above %s" % (version, floor))
    if target != chip:
        raise ReleaseRefused("chip", "image for %s, this is %s" % (target, chip))
    return Manifest(version, size, digest, target)


class Digest:
    """The image's size and SHA-256 as it arrives, checked against the manifest."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, chunk):
        self.received += len(chunk)
        if self.received > self.manifest.size:
            raise ReleaseRefused("size", "more than the %d bytes signed" % self.manifest.size)
        self._hash.update(chunk)

    def verify(self):
        if self.received != self.manifest.size:
            raise ReleaseRefused("truncated", "%d of %d bytes" % (self.received,
                                                                 self.manifest.size))
        if self._hash.digest() != self.manifest.sha256:
            raise ReleaseRefused("hash", "the image is not the one signed")
