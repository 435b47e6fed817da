"""Whole COSE_Sign1 messages signed in one call, for tests under the unix port and CPython alike.
The device signs in slices (device.link.collector.journal_signer, device.drivers.tag_mode) and never needs these,
so they stay off its heap.

    from device_signing import sign1, signature
    message = sign1(payload, "tag-0042", secret)   # == cose.assemble(payload, kid, signature(...))
"""

from device.evidence import cose, ed25519


def signature(payload, kid, secret):
    """The 64-byte Ed25519 signature over the Sig_structure of this payload and kid."""
    return ed25519.sign(secret, cose.sig_structure(cose.protected_header(kid), payload))


def sign1(payload, kid, secret):
    """The tagged COSE_Sign1 message, byte for byte what the device publishes."""
    return cose.assemble(payload, kid, signature(payload, kid, secret))
