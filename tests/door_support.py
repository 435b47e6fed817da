"""Staff phones at the door (issue #20) for tests: door URLs from the real firmware and the
NTAG 424 simulator, and a software passkey for the tests that do not run a browser.

    urls = device_urls(micropython, secret, "tag-1001", base, when, count=3)   # firmware TagMode
    url = sticker_url(sticker, base)                 # firmware/sim/pn532sim.Ntag424, one read
    phone = SoftPasskey("testserver", "http://testserver")
    client.post("/telefon/…", data={"credential": phone.register(options_json), …})

The browser tests use Chromium's virtual authenticator instead (CDP WebAuthn domain);
SoftPasskey stands in for a phone's authenticator only where no browser runs (ES256, "none"
attestation, user present and verified), the way the PN532 simulator stands in for the chip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pn532_support import DEVICE_PRELUDE, firmware_modules


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def device_urls(
    micropython, secret: bytes, device: str, base: str, when: int, count: int = 1, counter: int = 0
) -> list[str]:  # noqa: ANN001
    """URLs a phone reads from a door device in tag mode: the firmware's Reader and TagMode
    under the unix port, signing with the device's Ed25519 `secret`, read by the PN532
    simulator's TagReaderPhone."""
    out = micropython(
        DEVICE_PRELUDE
        + "\nimport asyncio, json\nfrom device.roles.reader import Reader\n"
        + "from device.drivers.tag_mode import TagMode\nfrom device.evidence import ed25519\n"
        + "model, bus, nfc = make('spi')\n"
        + f"""
signer = ed25519.Signer(bytes.fromhex("{secret.hex()}"))
tag = TagMode({device!r}, signer, base={base!r}, counter={counter}, clock=lambda: {when})
reader = Reader(nfc, lambda tap: None, {device!r}, interval_ms=5, tag_mode=tag,
                tag_window_ms=30)
async def cycles(n):
    for _ in range(n):
        await reader.step()
urls = []
for _ in range({count}):
    phone = TagReaderPhone()
    model.phone_reads(phone)
    asyncio.run(cycles(1))
    urls.append(phone.url)
print(json.dumps(urls))
"""
    )
    return json.loads(out.strip().splitlines()[-1])


class Sticker:
    """A passive NTAG 424 DNA sticker: the firmware simulator's Ntag424, read by a phone."""

    def __init__(
        self,
        sticker_id: str,
        base: str,
        uid: bytes = bytes.fromhex("04A1B2C3D4E5F6"),
        meta_key: bytes = bytes(range(16)),
        file_key: bytes = bytes(range(16, 32)),
    ):
        _, sim, _ = firmware_modules()
        self.sim = sim
        self.id = sticker_id
        self.meta_key, self.file_key = meta_key, file_key
        self.chip = sim.Ntag424(uid, meta_key=meta_key, file_key=file_key,
                                base=f"{base}/t/s/{sticker_id}")  # fmt: skip

    def read(self) -> str:
        """One read by a phone: SELECT the NDEF application and file, READ BINARY."""
        chip, sim = self.chip, self.sim
        chip.activate()
        chip.apdu(0, 0xA4, 4, 0, b"\x07" + sim.NDEF_AID + b"\x00")
        chip.apdu(0, 0xA4, 0, 0x0C, b"\x02\xe1\x04")
        head = chip.apdu(0, 0xB0, 0, 0, b"\x02")
        length = int.from_bytes(head[:2], "big")
        body = chip.apdu(0, 0xB0, 0, 2, bytes([length]))[:-2]
        # a short well-known URI record: D1 01 len 55 prefix, then the URL
        prefix = {0: "", 4: "https://", 3: "http://"}[body[4]]
        return prefix + body[5:].decode()


def _cose_es256(public: ec.EllipticCurvePublicKey) -> bytes:
    numbers = public.public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                        -3: numbers.y.to_bytes(32, "big")})  # fmt: skip


class SoftPasskey:
    """A phone's platform authenticator in software: one resident ES256 passkey."""

    def __init__(self, rp_id: str, origin: str):
        self.rp_id, self.origin = rp_id, origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.raw_id = os.urandom(16)
        self.count = 0
        self.cose = _cose_es256(self.key.public_key())
        self.user_verified = True  # False: a phone that skipped its screen lock (UV unset)

    def _auth_data(self, attested: bool) -> bytes:
        self.count += 1
        flags = 0x01 | (0x04 if self.user_verified else 0) | (0x40 if attested else 0)  # UP UV AT
        data = hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags])
        data += struct.pack(">I", self.count)
        if attested:
            data += bytes(16) + struct.pack(">H", len(self.raw_id)) + self.raw_id + self.cose
        return data

    def _client(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode()  # fmt: skip

    def register(self, options_json: str) -> str:
        options = json.loads(options_json)
        client = self._client("webauthn.create", options["challenge"])
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {},
                                   "authData": self._auth_data(True)})  # fmt: skip
        return json.dumps({
            "id": b64url(self.raw_id), "rawId": b64url(self.raw_id), "type": "public-key",
            "clientExtensionResults": {},
            "response": {"clientDataJSON": b64url(client),
                         "attestationObject": b64url(attestation), "transports": ["internal"]},
        })  # fmt: skip

    def assert_(self, options_json: str) -> str:
        options = json.loads(options_json)
        client = self._client("webauthn.get", options["challenge"])
        auth = self._auth_data(False)
        signature = self.key.sign(auth + hashlib.sha256(client).digest(),
                                  ec.ECDSA(hashes.SHA256()))  # fmt: skip
        return json.dumps({
            "id": b64url(self.raw_id), "rawId": b64url(self.raw_id), "type": "public-key",
            "clientExtensionResults": {},
            "response": {"clientDataJSON": b64url(client), "authenticatorData": b64url(auth),
                         "signature": b64url(signature)},
        })  # fmt: skip


def options_of(html: str) -> str:
    start = html.index('id="webauthn-options">') + len('id="webauthn-options">')
    return html[start : html.index("</script>", start)]
