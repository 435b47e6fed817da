"""Phone challenge-response and tag-mode URLs on the host (docs/nfc.md)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.evidence.phone import PhoneError, answer, phone_key_id, verify_answer, verify_tag_url

PHONE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PHONE_PUBLIC = PHONE.public_key().public_bytes_raw()
NONCE = bytes(range(100, 116))


def test_phone_answer_verifies_with_the_enrolled_key():
    reply = answer(PHONE, NONCE, "tag-0042")
    key_id, signature = reply[:16], reply[16:]
    assert key_id == phone_key_id(PHONE_PUBLIC)
    verify_answer(PHONE_PUBLIC, NONCE, "tag-0042", key_id, signature)


@pytest.mark.parametrize(
    "change",
    ["other device", "other nonce", "other phone", "flipped signature", "short signature"],
)
def test_phone_answer_refusals(change):
    reply = answer(PHONE, NONCE, "tag-0042")
    key_id, signature = reply[:16], reply[16:]
    public, nonce, device = PHONE_PUBLIC, NONCE, "tag-0042"
    if change == "other device":
        device = "tag-0043"
    elif change == "other nonce":
        nonce = bytes(16)
    elif change == "other phone":
        public = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()
    elif change == "flipped signature":
        signature = signature[:-1] + bytes([signature[-1] ^ 1])
    else:
        signature = signature[:10]
    with pytest.raises(PhoneError):
        verify_answer(public, nonce, device, key_id, signature)


def sign_url(key: Ed25519PrivateKey, signed: str) -> str:
    sig = base64.urlsafe_b64encode(key.sign(signed.encode())).rstrip(b"=").decode()
    return signed + "&s=" + sig


def test_tag_url_verifies_and_names_device_counter_time():
    device = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    url = sign_url(device, "https://kvitto.invalid/t/tag-0042?c=17&t=1790000000")
    read = verify_tag_url(url, device.public_key().public_bytes_raw())
    assert (read.device, read.counter, read.time) == ("tag-0042", 17, 1790000000)
    tampered = url.replace("c=17", "c=18")
    with pytest.raises(PhoneError, match="does not verify"):
        verify_tag_url(tampered, device.public_key().public_bytes_raw())
    with pytest.raises(PhoneError, match="no signature"):
        verify_tag_url("https://kvitto.invalid/t/tag-0042?c=1&t=2", PHONE_PUBLIC)


def test_phone_event_proof_and_credential_id():
    from kvitto.evidence.phone import credential_id, verify_phone_event

    salt = b"s" * 32
    reply = answer(PHONE, NONCE, "tag-0042")
    x = {"via": "phone", "nonce": NONCE, "sig": reply[16:]}
    cred = credential_id(salt, phone_key_id(PHONE_PUBLIC))
    verify_phone_event(x, cred, "tag-0042", PHONE_PUBLIC, salt=salt)
    with pytest.raises(PhoneError, match="is not the phone"):
        verify_phone_event(x, bytes(16), "tag-0042", PHONE_PUBLIC, salt=salt)
    with pytest.raises(PhoneError, match="lacks"):
        verify_phone_event({"via": "phone"}, cred, "tag-0042", PHONE_PUBLIC)
