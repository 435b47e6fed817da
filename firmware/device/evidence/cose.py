"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519 (alg -8): events out, commands in.

    from device.evidence import cose
    to_sign = cose.sig_structure(cose.protected_header(b"tag-0042"), payload)  # Ed25519 signs it
    message = cose.assemble(payload, b"tag-0042", signature)   # tagged, deterministic bytes
    kid, payload = cose.verify1(message, public)               # raises COSEError

The device signs in slices (device.link.collector.journal_signer, device.drivers.tag_mode), so
whole-message signing in one call lives with the tests (tests/fakes/device_signing.py), off the
device heap.
"""

from micropython import const

from device.evidence import cbor, ed25519

_COSE_SIGN1 = const(18)  # RFC 9052 §2: CBOR tag of COSE_Sign1
_HEADER_ALG = const(1)  # RFC 9052 §3.1: header label "alg"
_HEADER_KID = const(4)  # RFC 9052 §3.1: header label "kid"
_ALG_EDDSA = const(-8)  # RFC 9053 §2.2: EdDSA
_MAX_MESSAGE = const(4096)  # commands carry at most a few hundred credential ids


class COSEError(ValueError):
    """A message that is not a valid, Ed25519-signed COSE_Sign1 in the kvitto profile."""


def protected_header(kid):
    """The protected header bytes: {1: -8, 4: kid}, deterministic (FORMATS.md §1)."""
    kid = kid.encode("utf-8") if isinstance(kid, str) else bytes(kid)
    return cbor.encode({_HEADER_ALG: _ALG_EDDSA, _HEADER_KID: kid})


def sig_structure(protected, payload):
    # RFC 9052 §4.4: ["Signature1", body_protected, external_aad (empty), payload].
    return cbor.encode(["Signature1", protected, b"", payload])


def assemble(payload, kid, signature):
    """The tagged message from a payload and its signature (a resend needs no re-signing)."""
    if len(signature) != 64:
        raise COSEError("the signature must be 64 bytes")
    return cbor.encode(cbor.Tag(_COSE_SIGN1, [protected_header(kid), {}, payload, signature]))


def verify1(message, public):
    """(kid, payload) of a COSE_Sign1 that verifies under `public`, or COSEError.

    Strict: CBOR tag 18, exactly {1: -8, 4: kid} protected, an empty unprotected map, a byte
    string payload, a 64-byte signature, and deterministic encoding throughout (the decoder
    refuses anything else), so one message has one byte form.
    """
    if len(message) > _MAX_MESSAGE:
        raise COSEError("message larger than %d bytes" % _MAX_MESSAGE)
    try:
        outer = cbor.decode(message)
    except cbor.CBORError as error:
        raise COSEError("not deterministic CBOR: %s" % error)
    parts = outer.value if isinstance(outer, cbor.Tag) and outer.tag == _COSE_SIGN1 else None
    # RFC 9052 §4.2: [protected (bytes), unprotected (a map: empty here), payload, signature]
    if not isinstance(parts, list) or len(parts) != 4:
        raise COSEError("not a COSE_Sign1 (CBOR tag 18, four items)")
    protected, unprotected, payload, sig = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or unprotected != {}:
        raise COSEError("COSE_Sign1 needs byte strings and an empty unprotected map")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise COSEError("the signature must be 64 bytes")
    try:
        header = cbor.decode(protected)
    except cbor.CBORError as error:
        raise COSEError("protected header: %s" % error)
    if not isinstance(header, dict) or len(header) != 2 or header.get(_HEADER_ALG) != _ALG_EDDSA:
        raise COSEError("protected header must be {1: -8 (EdDSA), 4: kid}")
    kid = header.get(_HEADER_KID)
    if not isinstance(kid, bytes):
        raise COSEError("protected header must be {1: -8 (EdDSA), 4: kid}")
    if not ed25519.verify(public, sig_structure(protected, payload), sig):
        raise COSEError("signature does not verify")
    return kid, payload
