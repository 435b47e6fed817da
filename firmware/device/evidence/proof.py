"""Provisioning's questions to a device over its serial port (kvitto.install.provision): its
public key, and a proof that it holds the matching secret. Only the installer's console imports
this module, so its code is never on a running device's heap.

    from device.evidence import proof
    print(proof.public_key_hex()); print(proof.prove_hex(nonce_hex))

`prove(nonce)` signs b"kvitto-provision" + nonce with the device key (device.evidence.identity),
so a proof can never be mistaken for an event signature (those sign a COSE Sig_structure, RFC
9052 §4.4, which starts with an array header).
"""

import binascii

from device.evidence import ed25519, identity

PROOF_CONTEXT = b"kvitto-provision"


def public_key_hex():
    """The device's public key as hex, for provisioning and the registry."""
    return binascii.hexlify(identity.public_key()).decode()


def prove(nonce):
    """Proof of possession for provisioning: Ed25519 over b"kvitto-provision" + nonce."""
    if not isinstance(nonce, (bytes, bytearray)) or not 8 <= len(nonce) <= 64:
        raise ValueError("the nonce must be 8 to 64 bytes")
    return ed25519.sign(identity.secret_for_signer(), PROOF_CONTEXT + bytes(nonce))


def prove_hex(nonce_hex):
    """prove() for a serial console: hex nonce in, hex signature out."""
    return binascii.hexlify(prove(binascii.unhexlify(nonce_hex))).decode()
