"""The tap loop on the unix port against the PN532 simulator: badges, NTAG 424 SUN, phones,
debounce, recovery of a silent reader by RSTPD_N, and tag mode read by a phone. The host side
(kvitto.evidence.ntag424, kvitto.evidence.phone) verifies what the device forwarded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pn532_support import DEVICE_PRELUDE

from kvitto.evidence.ntag424 import MemoryCounters, SunReplayError, badge_file_key, verify_sun
from kvitto.evidence.phone import answer, phone_key_id, verify_answer, verify_tag_url

SALT = bytes(range(32))

READER_PRELUDE = (
    DEVICE_PRELUDE
    + """
import asyncio, json, time
from device.roles.reader import Reader, credential_id
from device.drivers.tag_mode import TagMode

def hexed(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexed(v) for k, v in value.items()}
    return value

taps = []
health = []
def on_tap(tap):
    taps.append({"kind": tap.kind, "raw": tap.raw.hex(), "cred": hexed(tap.cred),
                 "extra": hexed(tap.extra)})

async def cycles(reader, n):
    for _ in range(n):
        await reader.step()

def report():
    print(json.dumps({"taps": taps, "health": health}))
"""
)


def run(micropython, kind: str, body: str) -> dict:
    out = micropython(
        READER_PRELUDE
        + f"\nmodel, bus, nfc = make({kind!r})\nKIND = {kind!r}\n"
        + "SALT = bytes(range(32))\n"
        + body
        + "\nreport()\n"
    )
    return json.loads(out.strip().splitlines()[-1])


def cred(raw: bytes) -> str:
    return hmac.new(SALT, raw, hashlib.sha256).digest()[:16].hex()


@pytest.mark.parametrize("kind", ["i2c-irq", "spi", "hsu"])
def test_badge_held_is_one_tap_and_comes_back_after_it_left(micropython, kind):
    got = run(
        micropython,
        kind,
        """
reader = Reader(nfc, on_tap, "tag-0042", irq=model.irq if "irq" in KIND else None, salt=SALT,
                interval_ms=5, gone_ms=1500, on_health=health.append)
model.place(UidCard(b"\\x04\\x11\\x22\\x33"))
asyncio.run(cycles(reader, 10))        # held still: one tap
model.remove()
asyncio.run(cycles(reader, 3))
time.sleep_ms(1600)                    # gone longer than gone_ms
model.place(UidCard(b"\\x04\\x11\\x22\\x33"))
asyncio.run(cycles(reader, 3))
""",
    )
    assert [t["kind"] for t in got["taps"]] == ["badge", "badge"]
    assert got["taps"][0]["cred"] == cred(bytes.fromhex("04112233"))
    assert got["health"] == []


def test_ntag424_sun_is_forwarded_and_verifies_on_the_host(micropython):
    meta = bytes(range(16))
    master = bytes(range(16, 32))
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    file_key = badge_file_key(master, uid)
    got = run(
        micropython,
        "i2c",
        f"""
reader = Reader(nfc, on_tap, "tag-0042", salt=SALT, interval_ms=5, gone_ms=1500)
badge = Ntag424(bytes.fromhex("{uid.hex()}"), meta_key=bytes.fromhex("{meta.hex()}"),
                file_key=bytes.fromhex("{file_key.hex()}"), counter=41)
for _ in range(2):
    model.place(badge)
    asyncio.run(cycles(reader, 2))
    model.remove()
    asyncio.run(cycles(reader, 1))
    time.sleep_ms(1600)
""",
    )
    assert [t["kind"] for t in got["taps"]] == ["ntag424", "ntag424"]
    assert got["taps"][0]["cred"] == cred(uid)
    counters = MemoryCounters()
    seen = []
    for tap in got["taps"]:
        sun = bytes.fromhex(tap["extra"]["sun"])
        seen.append(verify_sun(sun, meta, file_master=master, counters=counters).counter)
    assert seen == [42, 43]
    with pytest.raises(SunReplayError):
        verify_sun(bytes.fromhex(got["taps"][0]["extra"]["sun"]), meta, file_master=master,
                   counters=counters)  # fmt: skip


def test_phone_challenge_over_iso_dep_verifies_on_the_host(micropython):
    phone = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
    public = phone.public_key().public_bytes_raw()
    nonce = bytes(range(16))  # the test's RNG; on a board it is hal.urandom
    reply = answer(phone, nonce, "tag-0042")
    got = run(
        micropython,
        "spi",
        f"""
REPLY = bytes.fromhex("{reply.hex()}")
EXPECTED = bytes(range(16)) + b"tag-0042"
phone = HcePhone(REPLY[:16], lambda m: REPLY[16:] if m == EXPECTED else bytes(64))
reader = Reader(nfc, on_tap, "tag-0042", rng=lambda n: bytes(range(n)), salt=SALT,
                interval_ms=5, gone_ms=1500)
model.place(phone)
asyncio.run(cycles(reader, 6))   # held: its UID changes per activation, the key id does not
print("activations", phone.activations)
""",
    )
    assert [t["kind"] for t in got["taps"]] == ["phone"]
    tap = got["taps"][0]
    assert tap["raw"] == phone_key_id(public).hex()
    assert tap["cred"] == cred(phone_key_id(public))
    verify_answer(
        public,
        bytes.fromhex(tap["extra"]["nonce"]),
        "tag-0042",
        bytes.fromhex(tap["raw"]),
        bytes.fromhex(tap["extra"]["sig"]),
    )


def test_phone_without_the_app_is_unknown(micropython):
    got = run(
        micropython,
        "i2c",
        """
reader = Reader(nfc, on_tap, "tag-0042", salt=SALT, interval_ms=5)
model.place(HcePhone(bytes(16), lambda m: bytes(64), aid=b"\\xa0\\x00\\x00\\x00\\x03"))
asyncio.run(cycles(reader, 1))
""",
    )
    assert [(t["kind"], t["cred"]) for t in got["taps"]] == [("unknown", None)]


@pytest.mark.parametrize("kind", ["i2c", "i2c-irq", "spi", "hsu"])
def test_silent_reader_is_reset_and_the_device_keeps_running(micropython, kind):
    got = run(
        micropython,
        kind,
        """
reader = Reader(nfc, on_tap, "tag-0042", irq=model.irq if "irq" in KIND else None, salt=SALT,
                interval_ms=5, timeout_ms=40, on_health=health.append)
ticks = [0]
async def other_work():
    while True:
        ticks[0] += 1
        await asyncio.sleep_ms(2)

async def main():
    worker = asyncio.create_task(other_work())
    await cycles(reader, 2)
    model.fault_silent()                    # the PN532 stops answering (field reports)
    await cycles(reader, 4)
    model.place(UidCard(b"\\x04\\x55\\x66\\x77"))
    await cycles(reader, 2)
    worker.cancel()
    health.append({"reader": "worker", "ran": ticks[0] > 5, "resets": model.resets})

asyncio.run(main())
""",
    )
    assert [t["kind"] for t in got["taps"]] == ["badge"]
    assert got["health"][0]["reader"] == "reset"
    assert got["health"][0]["resets"] == 1
    assert "silent" in got["health"][0]["cause"]
    # the other task ran on through the outage; the model saw exactly one RSTPD_N pulse
    assert got["health"][-1] == {"reader": "worker", "ran": True, "resets": 1}


def test_reader_that_stays_dead_reports_down_and_never_raises(micropython):
    got = run(
        micropython,
        "i2c",
        """
reader = Reader(nfc, on_tap, "tag-0042", interval_ms=5, timeout_ms=20, on_health=health.append)
model.rstpd = None
nfc._reset = None                      # no RSTPD_N wired: reset impossible
asyncio.run(cycles(reader, 1))
model.fault_silent()
asyncio.run(cycles(reader, 3))
""",
    )
    assert got["taps"] == []
    assert any(h["reader"] == "down" for h in got["health"])


def test_tag_mode_url_read_by_a_phone_verifies_on_the_host(micropython):
    device = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    signed = "https://kvitto.invalid/t/tag-0042?c=8&t=1790000000"
    signature = device.sign(signed.encode())
    out = micropython(
        READER_PRELUDE
        + "\nmodel, bus, nfc = make('i2c-irq')\n"
        + """
from device.evidence import ed25519
reads = []
tag = TagMode("tag-0042", ed25519.Signer(bytes(range(1, 33))), counter=7,
              clock=lambda: 1790000000, on_read=reads.append)
reader = Reader(nfc, on_tap, "tag-0042", irq=model.irq, interval_ms=5, tag_mode=tag,
                tag_window_ms=30)
asyncio.run(cycles(reader, 2))
phone = TagReaderPhone()
model.phone_reads(phone)
asyncio.run(cycles(reader, 1))
print(json.dumps({"url": phone.url, "error": phone.error, "reads": reads,
                   "nfcid1": model.nfcid1.hex()}))
"""
    )
    view = json.loads(out.strip().splitlines()[-1])
    assert view["error"] is None
    assert view["reads"] == [8]
    assert view["nfcid1"].startswith("08")  # the PN532 forces the first UID byte
    read = verify_tag_url(view["url"], device.public_key().public_bytes_raw())
    assert (read.device, read.counter, read.time) == ("tag-0042", 8, 1790000000)
    sig = view["url"].split("&s=")[1]
    assert base64.urlsafe_b64decode(sig + "==") == signature


def test_card_leaving_mid_read_gives_no_tap_and_no_health_event(micropython):
    got = run(
        micropython,
        "i2c",
        """
class Leaving(Ntag424):
    def apdu(self, *args):
        model.card = None          # gone before it answers the first APDU
        return None

reader = Reader(nfc, on_tap, "tag-0042", salt=SALT, interval_ms=5, on_health=health.append)
model.place(Leaving(bytes.fromhex("04A1B2C3D4E5F6")))
asyncio.run(cycles(reader, 1))
model.place(UidCard(b"\\x04\\x01\\x02\\x03"))
asyncio.run(cycles(reader, 1))
""",
    )
    assert [t["kind"] for t in got["taps"]] == ["badge"]
    assert got["health"] == []


def test_tag_mode_with_the_device_signer_verifies_on_the_host(micropython):
    secret = bytes(range(7, 39))
    device = Ed25519PrivateKey.from_private_bytes(secret)
    out = micropython(
        READER_PRELUDE
        + "\nmodel, bus, nfc = make('spi')\n"
        + f"""
from device.evidence import ed25519
signer = ed25519.Signer(bytes.fromhex("{secret.hex()}"))
reads = []
tag = TagMode("tag-0042", signer, counter=0, clock=lambda: 1790000123, on_read=reads.append)
reader = Reader(nfc, on_tap, "tag-0042", interval_ms=5, tag_mode=tag, tag_window_ms=30)
urls = []
for _ in range(2):
    phone = TagReaderPhone()
    model.phone_reads(phone)
    asyncio.run(cycles(reader, 1))
    urls.append(phone.url)
print(json.dumps({{"urls": urls, "reads": reads}}))
"""
    )
    view = json.loads(out.strip().splitlines()[-1])
    assert view["reads"] == [1, 2]
    public = device.public_key().public_bytes_raw()
    counters = [verify_tag_url(url, public).counter for url in view["urls"]]
    assert counters == [1, 2]


def test_reader_state_for_the_health_report_ok_recovering_failed(micropython):
    # issue #22: the health report's `reader` field: "recovering" while resets are tried,
    # "failed" once they keep failing and the reader waits its longest back-off between tries
    got = run(
        micropython,
        "i2c",
        """
reader = Reader(nfc, on_tap, "tag-0042", interval_ms=5, timeout_ms=20, on_health=health.append)
model.rstpd = None
nfc._reset = None                      # no RSTPD_N wired: every reset fails
asyncio.run(cycles(reader, 1))
from device.roles.health import reader_state
health.append({"state": reader_state(reader)})
states = []
for _ in range(8):
    reader.recover("test")
    states.append(reader_state(reader))
health.append({"states": states})
""",
    )
    assert got["health"][0] == {"state": "ok"}
    states = got["health"][-1]["states"]
    assert states[:6] == ["recovering"] * 6  # 1, 2, 4, 8, 16, 32 s between tries
    assert states[6:] == ["failed", "failed"]  # then a minute: the fleet's `reader` alert
