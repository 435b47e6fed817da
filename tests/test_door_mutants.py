"""Mutation test of stored door proofs (issue #20): bit flips in the door's URL, the passkey
assertion (authenticator data, client data JSON, signature) and the keys (the passkey's COSE
key, the device's Ed25519 key, the sticker's AES keys): of 2,400 mutants (fixed seed) none is
accepted by kvitto.evidence.door.verify_door_proof, the check an offline auditor runs. The same
for an away registration (RULES E2): bit flips in its canonical text, the assertion over it and
the passkey's key, none accepted by verify_away_proof."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from door_support import SoftPasskey, Sticker

from kvitto.evidence.door import (
    AwayProof,
    DoorError,
    DoorProof,
    away_challenge,
    away_registration,
    door_challenge,
    passkey_credential_id,
    unb64url,
    verify_away_proof,
    verify_door_proof,
)
from kvitto.evidence.phone import PhoneError

SEED = 20261207
RP, ORIGIN = "kvitto.example.se", "https://kvitto.example.se"


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _proof(kind: str, url: str, passkey: SoftPasskey) -> DoorProof:
    options = json.dumps({"challenge": _b64(door_challenge(url))})
    answer = json.loads(passkey.assert_(options))["response"]
    return DoorProof(
        kind=kind, url=url, credential=passkey_credential_id(passkey.cose),
        public_key=passkey.cose, raw_id=passkey.raw_id,
        authenticator_data=unb64url(answer["authenticatorData"]),
        client_data_json=unb64url(answer["clientDataJSON"]),
        signature=unb64url(answer["signature"]), rp_id=RP, origin=ORIGIN,
    )  # fmt: skip


def originals():  # noqa: ANN201
    device = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tag-0042").digest())
    signed = f"{ORIGIN}/t/tag-0042?c=7&t=1796029200"
    signature = _b64(device.sign(signed.encode()))
    passkey = SoftPasskey(RP, ORIGIN)
    device_proof = _proof("device", f"{signed}&s={signature}", passkey)
    sticker = Sticker("st-0042", ORIGIN)
    sticker_proof = _proof("sticker", sticker.read(), passkey)
    keys = {"device_key": device.public_key().public_bytes_raw(),
            "sticker_keys": (sticker.meta_key, sticker.file_key)}  # fmt: skip
    return [(device_proof, {"device_key": keys["device_key"]}),
            (sticker_proof, {"sticker_keys": keys["sticker_keys"]})]  # fmt: skip


def _flip(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data) * 8)
    out = bytearray(data)
    out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def mutants(count: int, seed: int):  # noqa: ANN201
    """(what was flipped, proof, keys) × count: one bit flipped in one field."""
    rng = random.Random(seed)
    base = originals()
    fields = ("url", "authenticator_data", "client_data_json", "signature", "public_key",
              "key")  # fmt: skip
    for _ in range(count):
        proof, keys = base[rng.randrange(len(base))]
        field = fields[rng.randrange(len(fields))]
        if field == "url":
            flipped = _flip(proof.url.encode(), rng).decode("latin-1")
            yield field, dataclasses.replace(proof, url=flipped), keys
        elif field == "key":
            if "device_key" in keys:
                yield "device_key", proof, {"device_key": _flip(keys["device_key"], rng)}
            else:
                meta, file_key = keys["sticker_keys"]
                if rng.random() < 0.5:
                    yield "meta_key", proof, {"sticker_keys": (_flip(meta, rng), file_key)}
                else:
                    yield "file_key", proof, {"sticker_keys": (meta, _flip(file_key, rng))}
        else:
            value = getattr(proof, field)
            yield field, dataclasses.replace(proof, **{field: _flip(value, rng)}), keys


def test_the_originals_verify():
    checked = [verify_door_proof(proof, **keys) for proof, keys in originals()]
    assert checked == ["device", "sticker"]


def test_none_of_2400_mutants_of_stored_proofs_is_accepted():
    accepted, per_field = [], {}
    for field, proof, keys in mutants(2400, SEED):
        per_field[field] = per_field.get(field, 0) + 1
        try:
            verify_door_proof(proof, **keys)
        except (DoorError, PhoneError):
            continue
        accepted.append((field, proof.url))
    assert accepted == []
    assert sum(per_field.values()) == 2400
    assert {"url", "authenticator_data", "client_data_json", "signature", "public_key",
            "device_key", "meta_key", "file_key"} <= set(per_field)  # fmt: skip
    assert min(per_field.values()) > 50


@pytest.mark.parametrize("other", ["url", "credential"])
def test_an_assertion_is_bound_to_its_url_and_its_credential(other):
    (proof, keys), _ = originals()
    if other == "url":
        # a valid URL of the same device, one read later: the assertion was for the other
        changed = dataclasses.replace(proof, url=proof.url.replace("c=7", "c=8"))
    else:
        changed = dataclasses.replace(proof, credential="0" * 32)
    with pytest.raises(DoorError):
        verify_door_proof(changed, **keys)


def away_original() -> AwayProof:
    passkey = SoftPasskey(RP, ORIGIN)
    credential = passkey_credential_id(passkey.cose)
    text = away_registration(
        provider="p-1", customer="c-1003", activities=["ledsagning"],
        start="2026-11-30T08:00+01:00", end="2026-11-30T09:30+01:00", credential=credential,
        nonce="bm9uY2Utbm9uY2Utbm9uYw",
    )  # fmt: skip
    options = json.dumps({"challenge": _b64(away_challenge(text))})
    answer = json.loads(passkey.assert_(options))["response"]
    return AwayProof(
        kind="away", registration=text, credential=credential, public_key=passkey.cose,
        raw_id=passkey.raw_id, authenticator_data=unb64url(answer["authenticatorData"]),
        client_data_json=unb64url(answer["clientDataJSON"]),
        signature=unb64url(answer["signature"]), rp_id=RP, origin=ORIGIN,
    )  # fmt: skip


def away_mutants(count: int, seed: int):  # noqa: ANN201
    """(what was flipped, proof) × count: one bit flipped in the registration's text, the
    assertion or the key (raw_id is the authenticator's handle, not evidence: not flipped)."""
    rng = random.Random(seed)
    proof = away_original()
    fields = ("registration", "authenticator_data", "client_data_json", "signature",
              "public_key")  # fmt: skip
    for _ in range(count):
        field = fields[rng.randrange(len(fields))]
        if field == "registration":
            flipped = _flip(proof.registration.encode(), rng).decode("latin-1")
            yield field, dataclasses.replace(proof, registration=flipped)
        else:
            yield field, dataclasses.replace(proof, **{field: _flip(getattr(proof, field), rng)})


def test_none_of_2400_mutants_of_stored_away_registrations_is_accepted():
    assert verify_away_proof(away_original())["customer"] == "c-1003"
    accepted, per_field = [], {}
    for field, proof in away_mutants(2400, SEED):
        per_field[field] = per_field.get(field, 0) + 1
        try:
            verify_away_proof(proof)
        except DoorError:
            continue
        accepted.append((field, proof.registration))
    assert accepted == []
    assert set(per_field) == {"registration", "authenticator_data", "client_data_json",
                              "signature", "public_key"}  # fmt: skip
    assert min(per_field.values()) > 300


def test_an_away_assertion_is_bound_to_its_registration_and_credential():
    proof = away_original()
    # the same registration, an hour longer, still canonical: the passkey signed the other
    longer = proof.registration.replace("T09:30", "T10:30")
    with pytest.raises(DoorError, match="challenge"):
        verify_away_proof(dataclasses.replace(proof, registration=longer))
    # the same fields spelled otherwise (spaces): one reading only
    spaced = json.dumps(json.loads(proof.registration), sort_keys=True)
    with pytest.raises(DoorError, match="canonical"):
        verify_away_proof(dataclasses.replace(proof, registration=spaced))
    with pytest.raises(DoorError):
        verify_away_proof(dataclasses.replace(proof, credential="0" * 32))
