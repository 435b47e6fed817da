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

_SEED_BYTES = const(32)  # RFC 8032 §5.1.5: the private key is a 32-byte seed

_secret = None
_public = None
_root = ""  # the board's filesystem root (hal.fs_root): use_root


def load_or_create(rng=None, root=None):
    """Load key.bin, or create it from `rng(n) -> bytes` (the HAL's hardware RNG) when absent.
    Returns the 32-byte public key. `root`: the filesystem root (hal.fs_root), default cwd.
    A damaged key file is a ValueError: the device never invents a new identity over it."""
    global _secret, _public
    root = _root if root is None else root
    path = root + "/key.bin" if root else "key.bin"
    try:
        os.stat(path)
    except OSError:  # first boot: no key yet
        secret = (rng or os.urandom)(_SEED_BYTES)
        if len(secret) != _SEED_BYTES:
            raise ValueError("the RNG returned %d bytes" % len(secret))
        temporary = path + ".new"
        with open(temporary, "wb") as file:
            file.write(secret)
        os.rename(temporary, path)  # littlefs rename is atomic: a power cut leaves old or new
    else:
        with open(path, "rb") as file:
            secret = file.read()
        if len(secret) != _SEED_BYTES:
            # Never replace a damaged key silently: the registry holds the old public key.
            raise ValueError("%s holds %d bytes, not a %d-byte Ed25519 seed"
                             % (path, len(secret), _SEED_BYTES))
    from device.evidence import ed25519

    _secret = secret
    _public = ed25519.public_key(secret)
    return _public


def use_root(root):
    """Where the board's filesystem is (set by the app at boot: hal.fs_root)."""
    global _root
    _root = root


def _default_root():
    return _root  # for provisioning's scripts over the serial console (kvitto.install)


def public_key():
    return _public if _public is not None else load_or_create()


def secret_for_signer():
    """The seed, for evidence.ed25519.Signer in this process only (never printed or sent)."""
    if _secret is None:
        load_or_create()
    return _secret
