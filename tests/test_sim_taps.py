"""The simulator taps with real credentials: a phone answers the door's challenge with its app
key, an NTAG 424 badge mirrors a SUN under its own keys with a counter that rises from tap to
tap; the host's checks (kvitto.evidence.phone, kvitto.evidence.ntag424) accept what the firmware journaled."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from app_support import missing_firmware
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kvitto.evidence.ntag424 import verify_sun
from kvitto.evidence.phone import phone_key_id, verify_answer
from kvitto.install.enroll import ntag424_badge_keys, ntag424_masters
from kvitto.sim.board import VirtualBoard
from kvitto.sim.fleet import Fleet, NtagBadges

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

SALT = bytes(range(16, 32))
SEED = bytes(range(200, 232))
UID = bytes.fromhex("04112233445566")


def credential(raw: bytes) -> str:
    return hmac.new(SALT, raw, hashlib.sha256).digest()[:16].hex()


@pytest.fixture
def board(tmp_path):
    with VirtualBoard(tmp_path / "b1", "tag-0001", "tag", salt=SALT) as virtual:
        virtual.wait_ready()
        yield virtual


def test_a_phone_with_its_seed_answers_the_challenge_the_host_verifies(board):
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    board.tap("phone", SEED.hex())
    arrive = board.wait_events(2)[1]
    assert arrive["type"] == "arrive" and arrive["x"]["via"] == "phone"
    assert arrive["cred"] == credential(phone_key_id(public))
    nonce, signature = bytes.fromhex(arrive["x"]["nonce"]), bytes.fromhex(arrive["x"]["sig"])
    verify_answer(public, nonce, "tag-0001", phone_key_id(public), signature)


def test_a_key_id_alone_still_taps_with_an_answer_that_does_not_verify(board):
    from kvitto.evidence.phone import PhoneError

    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    board.tap("phone", phone_key_id(public).hex())
    arrive = board.wait_events(2)[1]
    assert arrive["cred"] == credential(phone_key_id(public))
    with pytest.raises(PhoneError, match="does not verify"):
        verify_answer(public, bytes.fromhex(arrive["x"]["nonce"]), "tag-0001",
                      phone_key_id(public), bytes.fromhex(arrive["x"]["sig"]))  # fmt: skip


def test_ntag424_taps_carry_suns_under_the_badges_keys_with_a_rising_counter(tmp_path):
    masters = ntag424_masters(tmp_path / "pki")
    keys = ntag424_badge_keys(masters, UID)
    badges = NtagBadges(masters)
    fleet = Fleet(tmp_path / "fleet", 1, salt=SALT, badges=badges)
    fleet.start()
    try:
        board = fleet.board("1")
        assert fleet.command(f"tap 1 ntag424 {UID.hex()}") == "ok"
        board.wait_events(2)
        time.sleep(3.5)  # firmware/device/roles/visits.py: a second tap within 3 s is the same tap
        assert fleet.command(f"tap 1 ntag424 {UID.hex()}") == "ok"
        events = board.wait_events(3)[1:]
    finally:
        fleet.stop()
    assert [e["type"] for e in events] == ["arrive", "depart"]
    counters = []
    for event in events:
        assert event["cred"] == credential(UID) and event["x"]["via"] == "ntag424"
        result = verify_sun(bytes.fromhex(event["x"]["sun"]), keys[1], file_key=keys[2])
        assert result.uid == UID
        counters.append(result.counter)
    assert counters == [1, 2]
    assert badges.card(UID.hex())["counter"] == 2  # the next tap reads 3, at any door


def test_kvitto_sim_with_the_organisations_pki_uses_its_salt_and_badge_keys(tmp_path):
    from kvitto.install.pki import ensure_org
    from kvitto.sim.fleet import run_sim

    pki = tmp_path / "pki"
    org = ensure_org(pki)
    keys = ntag424_badge_keys(ntag424_masters(pki), UID)
    replies: list[str] = []
    fleet = run_sim(1, None, ("tag",), tmp_path / "sim", None, None, None,
                    iter([f"tap 1 ntag424 {UID.hex()}"]), echo=replies.append,
                    pki_dir=pki)  # fmt: skip
    assert "ok" in replies
    assert fleet.salt == org.credential_salt
    assert fleet.org_public_key == org.command_public_key
    assert fleet.badges is not None and fleet.badges.counters == {UID: 1}
    card = fleet.badges.card(UID.hex())
    assert (card["meta_key"], card["file_key"], card["counter"]) == (keys[1], keys[2], 1)


def test_a_lock_journals_the_proof_of_each_tap_even_a_refused_one(tmp_path, mosquitto):
    # The lock's events carry the SUN and the phone's answer as the tag's do (kvitto.verify.taps
    # checks them), signed and published as the host's strict decoder accepts them; here
    # neither credential is on the allowlist, so both are denied.
    from board_support import PublishedEvents, board_public_key

    from kvitto.evidence.events import verify_event

    masters = ntag424_masters(tmp_path / "pki")
    keys = ntag424_badge_keys(masters, UID)
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    fleet = Fleet(tmp_path / "fleet", 1, broker=(mosquitto.host, mosquitto.port),
                  roles=("lock",), salt=SALT, badges=NtagBadges(masters))  # fmt: skip
    with PublishedEvents(mosquitto, "test-lock-taps") as published:
        fleet.start()
        try:
            board = fleet.board("1")
            assert fleet.command(f"tap 1 ntag424 {UID.hex()}") == "ok"
            board.wait_events(2)
            time.sleep(1.6)  # the card gone longer than the reader's window: a new tap next
            assert fleet.command(f"tap 1 phone {SEED.hex()}") == "ok"
            assert published.wait(3, 60), board.log_tail()
            device_key = board_public_key(board.serial_port)
        finally:
            fleet.stop()
    received = published.messages
    events = sorted((verify_event(m, device_key) for m in received), key=lambda e: e.seq)
    badge, phone = events[1], events[2]
    assert (badge.type, badge.x["via"], phone.type) == ("deny", "ntag424", "deny")
    assert verify_sun(badge.x["sun"], keys[1], file_key=keys[2]).uid == UID
    verify_answer(public, phone.x["nonce"], "lock-0001", phone_key_id(public), phone.x["sig"])
