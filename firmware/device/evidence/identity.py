"""The device's Ed25519 identity: created on first boot from the board's RNG, kept in /key.bin,
never leaving the device. Provisioning reads the public key and asks for a proof of possession.

    from device.evidence import identity
    identity.load_or_create(board_hal.urandom)          # first boot: makes key.bin
    signer = ed25519.signer(identity.secret_for_signer())

Provisioning's questions over the serial port (the public key, a proof of possession) are
device.evidence.proof, which a running device never imports.
"""

import os

from micropython import const

KEY_FILE = "key.bin"
_SEED_BYTES = const(32)  # RFC 8032 §5.1.5: the private key is a 32-byte seed


class IdentityError(Exception):
    """The key file is unreadable or damaged; the device refuses to invent a new identity."""


_secret = None
_public = None


def _key_path(root):
    return root + "/" + KEY_FILE if root else KEY_FILE


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def load_or_create(rng=None, root=None):
    """Load key.bin, or create it from `rng(n) -> bytes` (the HAL's hardware RNG) when absent.
    Returns the 32-byte public key. `root`: the filesystem root (hal.fs_root), default cwd."""
    global _secret, _public
    path = _key_path(root if root is not None else _default_root())
    if _exists(path):
        with open(path, "rb") as file:
            secret = file.read()
        if len(secret) != _SEED_BYTES:
            # Never replace a damaged key silently: the registry holds the old public key.
            raise IdentityError("%s holds %d bytes, not a %d-byte Ed25519 seed"
                                % (path, len(secret), _SEED_BYTES))
    else:
        secret = (rng or os.urandom)(_SEED_BYTES)
        if len(secret) != _SEED_BYTES:
            raise IdentityError("the RNG returned %d bytes" % len(secret))
        temporary = path + ".new"
        with open(temporary, "wb") as file:
            file.write(secret)
        os.rename(temporary, path)  # littlefs rename is atomic: a power cut leaves old or new
    from device.evidence import ed25519

    _secret = secret
    _public = ed25519.public_key(secret)
    return _public


_root = None


def use_root(root):
    """Where the board's filesystem is (set by the app at boot: hal.fs_root)."""
    global _root
    _root = root


def _default_root():
    return _root if _root is not None else ""


def _loaded():
    if _secret is None:
        load_or_create()
    return _secret


def public_key():
    _loaded()
    if _public is None:
        raise IdentityError("no key loaded")
    return _public


def secret_for_signer():
    """The seed, for evidence.ed25519.Signer in this process only (never printed or sent)."""
    return _loaded()
