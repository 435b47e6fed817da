"""Tap proofs through `kvitto verify` (kvitto.verify.taps): NTAG 424 SUN with a rising read counter,
phone answers over the device's exact challenge, weak badges, keys missing → not checked.

SUNs come from the simulator's NTAG 424 (firmware/sim/pn532sim.py, its own AES-CMAC) and phone
answers from cryptography's Ed25519 over nonce ‖ device id, as firmware/device/roles/reader.py sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pn532_support import firmware_modules
from verify_support import Bundle, credential_id, rules_of, run, standard, when

from kvitto.verify.case import CaseError, parse_registry
from kvitto.verify.case_write import format_registry
from kvitto.verify.check import verify_case
from kvitto.verify.reasons import entry_text

_, pn532sim, _ = firmware_modules()

UID = bytes.fromhex("04de5f1eacc040")
META_KEY = bytes(range(16))
FILE_KEY = bytes(range(16, 32))
PHONE = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
PHONE_PUBLIC = PHONE.public_key().public_bytes_raw()


def sun(counter: int, file_key: bytes = FILE_KEY, uid: bytes = UID) -> bytes:
    picc, mac = pn532sim.sun_message(META_KEY, file_key, uid, counter)
    return picc + mac


def badge_bundle(root: Path, keys: bool = True) -> Bundle:
    b = standard(root, staff=(), profile_activity="omsorg")
    b.credential("s-03", kind="ntag424")
    if keys:
        b.credentials[-1].update(sdm_meta_key=META_KEY.hex(), sdm_file_key=FILE_KEY.hex())
    return b


def tap(b: Bundle, kind: str, at: str, staff: str, x: dict, device: str = "tag-0042") -> None:
    b.event(device, kind, at, staff, x)


def ntag(b: Bundle, start: str, end: str, first: int, second: int | bytes) -> None:
    tap(b, "arrive", start, "s-03", {"via": "ntag424", "sun": sun(first)})
    end_sun = second if isinstance(second, bytes) else sun(second)
    tap(b, "depart", end, "s-03", {"via": "ntag424", "sun": end_sun})


def claim(b: Bundle, claim_id: str, staff: str, day: int) -> None:
    b.claim(claim_id, "c-1001", staff, "omsorg", f"2026-10-0{day}T08:00",
            f"2026-10-0{day}T08:30")  # fmt: skip


def reasons(result, claim_id: str) -> str:
    return " | ".join(f.text("en") for f in result.findings_for(claim_id))


def test_good_sun_counts_replayed_counter_and_tampered_mac_do_not(tmp_path):
    b = badge_bundle(tmp_path)
    ntag(b, "2026-10-01T08:00", "2026-10-01T08:30", 16, 17)
    # the depart of day 1 again (same counter 17), then a fresh depart
    ntag(b, "2026-10-02T08:00", "2026-10-02T08:30", 17, 18)
    tampered = bytearray(sun(20))
    tampered[-1] ^= 0x01
    ntag(b, "2026-10-03T08:00", "2026-10-03T08:30", 19, bytes(tampered))
    ntag(b, "2026-10-04T08:00", "2026-10-04T08:30", 21, 22)
    for day, claim_id in enumerate(("k-1", "k-2", "k-3", "k-4"), start=1):
        claim(b, claim_id, "s-03", day)
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"E7": "reject"}
    assert "tag-0042 #" in reasons(result, "k-2")
    assert "sun counter 17 not above 17" in reasons(result, "k-2")
    assert rules_of(result, "k-3") == {"E7": "reject"}
    assert "SDMMAC does not verify" in reasons(result, "k-3")
    assert rules_of(result, "k-4") == {}  # counter 21 is above the last accepted (19)
    refused = [i for i in result.integrity if i["rule"] == "E7"]
    assert len(refused) == 2
    for issue, claim_id in zip(refused, ("k-2", "k-3"), strict=True):
        assert f"tag-0042 #{issue['seq']}:" in reasons(result, claim_id)
    assert result.not_checked == [n for n in result.not_checked if n["rule"] != "E7"]


def test_counter_rises_across_doors_in_time_order(tmp_path):
    b = badge_bundle(tmp_path)
    b.device("tag-0043", "c-1001")
    ntag(b, "2026-10-01T08:00", "2026-10-01T08:30", 5, 6)
    # a copy of an older read (counter 4) shown at another door later that day
    tap(b, "arrive", "2026-10-01T09:00", "s-03", {"via": "ntag424", "sun": sun(4)}, "tag-0043")
    tap(b, "depart", "2026-10-01T09:30", "s-03", {"via": "ntag424", "sun": sun(7)}, "tag-0043")
    b.claim("k-2", "c-1001", "s-03", "omsorg", "2026-10-01T09:00", "2026-10-01T09:30")
    result = run(b, "huddinge")
    assert rules_of(result, "k-2") == {"E7": "reject"}
    assert "tag-0043 #4: sun counter 4 not above 6" in reasons(result, "k-2")


def test_sun_of_another_badge_or_a_uid_copy_is_refused(tmp_path):
    b = badge_bundle(tmp_path)
    other_key = bytes(16)  # another badge's file key: its SUN does not verify under ours
    tap(b, "arrive", "2026-10-01T08:00", "s-03",
        {"via": "ntag424", "sun": sun(3, other_key, bytes(7))})  # fmt: skip
    tap(b, "depart", "2026-10-01T08:30", "s-03", {"via": "ntag424", "sun": sun(4)})
    b.visit("tag-0042", "s-03", "2026-10-02T08:00", "2026-10-02T08:30", via="badge")
    claim(b, "k-1", "s-03", 1)
    claim(b, "k-2", "s-03", 2)
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {"E7": "reject"}
    assert rules_of(result, "k-2") == {"E7": "reject"}
    assert "ntag424 credential tapped without its SUN" in reasons(result, "k-2")


def test_refused_tap_without_e7_is_named_by_e1(tmp_path):
    b = standard(tmp_path, staff=(), profile_activity="226")
    b.credential("s-03", kind="ntag424")
    b.credentials[-1].update(sdm_meta_key=META_KEY.hex(), sdm_file_key=FILE_KEY.hex())
    ntag(b, "2026-10-01T08:00", "2026-10-01T08:30", 9, 9)
    b.claim("k-1", "c-1001", "s-03", "226", "2026-10-01T08:00", "2026-10-01T08:30")
    result = run(b, "norrtalje")  # E7 is off in Norrtälje's profile
    assert rules_of(result, "k-1") == {"E1": "reject"}
    assert "sun counter 9 not above 9" in reasons(result, "k-1")


def test_without_keys_a_sun_is_not_checked_but_the_organisations_keys_check_it(tmp_path):
    from kvitto.install.enroll import ntag424_badge_keys, ntag424_masters
    from kvitto.install.pki import ensure_org
    from kvitto.verify.taps import TapKeys

    pki = tmp_path / "pki"
    org = ensure_org(pki)
    keys = ntag424_badge_keys(ntag424_masters(pki), UID)
    b = badge_bundle(tmp_path / "case", keys=False)
    cred = hmac.new(org.credential_salt, UID, hashlib.sha256).digest()[:16]
    b.credentials[-1]["id"] = cred.hex()

    def badge(at: str, kind: str, counter: int) -> None:
        picc, mac = pn532sim.sun_message(keys[1], keys[2], UID, counter)
        b._emit("tag-0042", kind, when(at), cred, {"via": "ntag424", "sun": picc + mac})

    badge("2026-10-01T08:00", "arrive", 1)
    badge("2026-10-01T08:30", "depart", 2)
    badge("2026-10-02T08:00", "arrive", 2)  # replay
    badge("2026-10-02T08:30", "depart", 3)
    # day 3: a genuine SUN of another of the organisation's badges under s-03's credential
    other_uid = bytes.fromhex("04aabbccddeeff")
    other = ntag424_badge_keys(ntag424_masters(pki), other_uid)
    picc, mac = pn532sim.sun_message(other[1], other[2], other_uid, 50)
    b._emit("tag-0042", "arrive", when("2026-10-03T08:00"), cred,
            {"via": "ntag424", "sun": picc + mac})  # fmt: skip
    badge("2026-10-03T08:30", "depart", 4)
    for day in (1, 2, 3):
        claim(b, f"k-{day}", "s-03", day)
    unchecked = run(b, "huddinge")
    assert all(rules_of(unchecked, f"k-{day}") == {} for day in (1, 2, 3))
    skipped = [n for n in unchecked.not_checked if n["rule"] == "E7"]
    assert {n["claim_id"] for n in skipped} == {"k-1", "k-2", "k-3"}
    assert "no NTAG 424 keys for credential" in entry_text(skipped[0], "en")
    checked = verify_case(tmp_path / "case", "huddinge", "2026-10", pki=TapKeys.from_pki(pki))
    assert rules_of(checked, "k-1") == {}
    assert rules_of(checked, "k-2") == {"E7": "reject"}
    assert rules_of(checked, "k-3") == {"E7": "reject"}
    assert f"is not badge {other_uid.hex()}" in reasons(checked, "k-3")
    assert not [n for n in checked.not_checked if n["rule"] == "E7"]
    command = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(tmp_path / "case"), "--profile",
         "huddinge", "--month", "2026-10", "--pki", str(pki)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert command.returncode == 0, command.stderr
    findings = json.loads(command.stdout)["findings"]
    assert [(f["claim_id"], f["rule"]) for f in findings] == [("k-2", "E7"), ("k-3", "E7")]
    assert "räknare 2 är inte högre än 2" in findings[0]["reason"]  # Swedish by default


def phone_bundle(root: Path, public_key: bytes | None = PHONE_PUBLIC) -> Bundle:
    b = standard(root, staff=(), profile_activity="omsorg")
    b.credential("s-04", kind="phone")
    if public_key is not None:
        b.credentials[-1]["public_key"] = public_key.hex()
    return b


def phone_tap(b: Bundle, kind: str, at: str, nonce: bytes, signed_nonce: bytes | None = None,
              key: Ed25519PrivateKey = PHONE, device: str = "tag-0042",
              signed_device: str | None = None) -> None:  # fmt: skip
    # firmware/device/roles/reader.py: CHALLENGE data = nonce(16) ‖ device id; answer signs it
    message = (signed_nonce or nonce) + (signed_device or device).encode()
    x = {"via": "phone", "nonce": nonce, "sig": key.sign(message)}
    b.event(device, kind, at, "s-04", x)


def test_phone_answer_counts_only_over_the_exact_challenge_with_the_enrolled_key(tmp_path):
    b = phone_bundle(tmp_path)
    n = [bytes([i]) * 16 for i in range(10)]
    phone_tap(b, "arrive", "2026-10-01T08:00", n[0])
    phone_tap(b, "depart", "2026-10-01T08:30", n[1])
    phone_tap(b, "arrive", "2026-10-02T08:00", n[2], signed_nonce=n[3])  # another nonce
    phone_tap(b, "depart", "2026-10-02T08:30", n[4])
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    phone_tap(b, "arrive", "2026-10-03T08:00", n[5])
    phone_tap(b, "depart", "2026-10-03T08:30", n[6], key=other)  # not the enrolled key
    phone_tap(b, "arrive", "2026-10-04T08:00", n[7], signed_device="tag-0999")  # other door
    phone_tap(b, "depart", "2026-10-04T08:30", n[8])
    b.event("tag-0042", "arrive", "2026-10-05T08:00", "s-04", {"via": "phone"})  # no answer
    phone_tap(b, "depart", "2026-10-05T08:30", n[9])
    for day in range(1, 6):
        claim(b, f"k-{day}", "s-04", day)
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    for claim_id in ("k-2", "k-3", "k-4", "k-5"):
        assert rules_of(result, claim_id) == {"E7": "reject"}, claim_id
    assert "tag-0042 #7: phone answer does not verify" in reasons(result, "k-2")
    assert "#11: phone answer does not verify" in reasons(result, "k-3")
    assert "without its phone answer" in reasons(result, "k-5")


def test_phone_without_an_enrolled_public_key_is_not_checked(tmp_path):
    b = phone_bundle(tmp_path, public_key=None)
    phone_tap(b, "arrive", "2026-10-01T08:00", bytes(16))
    phone_tap(b, "depart", "2026-10-01T08:30", bytes([1]) * 16)
    claim(b, "k-1", "s-04", 1)
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    skipped = [n for n in result.not_checked if n["rule"] == "E7"]
    assert [n["claim_id"] for n in skipped] == ["k-1"]
    assert "no public key enrolled for phone credential" in entry_text(skipped[0], "en")


def test_badges_stay_weak_and_a_lock_checks_taps_as_a_tag_does(tmp_path):
    # A lock journals each tap's proof (firmware device/roles/lock.py): a phone's answer at the lock
    # is checked, and a phone credential's unlock without one is refused as at a tag.
    b = phone_bundle(tmp_path)
    b.credential("s-07")
    b.device("lock-0201", "c-1001", role="lock")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    phone_tap(b, "unlock", "2026-10-02T08:00", bytes(16), device="lock-0201")
    phone_tap(b, "lock", "2026-10-02T08:30", bytes([1]) * 16, device="lock-0201")
    b.lock_visit("lock-0201", "s-04", "2026-10-03T08:00", "2026-10-03T08:30")  # no answers
    claim(b, "k-1", "s-07", 1)
    claim(b, "k-2", "s-04", 2)
    claim(b, "k-3", "s-04", 3)
    result = run(b, "haninge")
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-2") == {}
    assert rules_of(result, "k-3") == {"E7": "reject"}
    assert "lock-0201 #" in reasons(result, "k-3")
    assert "without its phone answer" in reasons(result, "k-3")
    assert result.evidence is not None
    proofs = sorted((p.staff, p.proof) for p in result.evidence.presences)
    assert proofs == [("s-04", "refused"), ("s-04", "verified"), ("s-07", "weak")]
    assert not [n for n in result.not_checked if n["rule"] == "E7"]


def test_end_to_end_through_the_command(tmp_path):
    b = badge_bundle(tmp_path / "case")
    ntag(b, "2026-10-01T08:00", "2026-10-01T08:30", 1, 2)
    ntag(b, "2026-10-02T08:00", "2026-10-02T08:30", 2, 3)
    claim(b, "k-1", "s-03", 1)
    claim(b, "k-2", "s-03", 2)
    b.write()
    run_ = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(tmp_path / "case"), "--profile",
         "huddinge", "--month", "2026-10", "--format", "json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run_.returncode == 0, run_.stderr
    document = json.loads(run_.stdout)
    assert [(f["claim_id"], f["rule"], f["outcome"]) for f in document["findings"]] == [
        ("k-2", "E7", "reject")
    ]
    assert (
        "räknare 2 är inte högre än 2" in document["findings"][0]["reason"]
    )  # Swedish by default
    assert [(i["rule"], i["seq"]) for i in document["integrity"]] == [("E7", 7)]


def test_registry_key_fields_round_trip_and_are_checked():
    raw = (
        '[[credential]]\nid = "' + credential_id("s-04").hex() + '"\nstaff = "s-04"\n'
        'provider = "p-1"\nkind = "phone"\npublic_key = "' + PHONE_PUBLIC.hex() + '"\n'
        '[[credential]]\nid = "' + credential_id("s-03").hex() + '"\nstaff = "s-03"\n'
        'provider = "p-1"\nkind = "ntag424"\nsdm_meta_key = "' + META_KEY.hex() + '"\n'
        'sdm_file_key = "' + FILE_KEY.hex() + '"\n'
    )
    registry = parse_registry(raw)
    assert registry.credentials[credential_id("s-04").hex()].public_key == PHONE_PUBLIC
    again = parse_registry(format_registry(registry))
    assert again.credentials == registry.credentials
    with pytest.raises(CaseError, match="line 1, field public_key: must be the hex of 32"):
        parse_registry(raw.replace(PHONE_PUBLIC.hex(), "abcd"))
    with pytest.raises(CaseError, match="only a phone credential has public_key"):
        parse_registry(raw.replace('kind = "phone"', 'kind = "badge"'))
    with pytest.raises(CaseError, match="together"):
        parse_registry(raw.replace("sdm_meta_key", "comment"))


def test_the_store_exports_a_phones_public_key(tmp_path):
    from kvitto.install.enroll import enroll_phone
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    with open_store(f"sqlite:///{tmp_path / 'k.db'}") as store:
        registry = Registry(store)
        enrolled = enroll_phone(registry, b"s" * 16, PHONE_PUBLIC.hex(), "s-04", "p-1")
        parsed = parse_registry(registry.to_toml())
        copy = Registry(open_store(f"sqlite:///{tmp_path / 'copy.db'}"))
        (tmp_path / "r.toml").write_text(registry.to_toml())
        copy.import_toml(tmp_path / "r.toml")
    assert parsed.credentials[enrolled.credential_id].public_key == PHONE_PUBLIC
    assert copy.credential(enrolled.credential_id).key_material == PHONE_PUBLIC  # type: ignore[union-attr]


def test_doors_whose_clocks_disagree_by_seconds_do_not_refuse_a_fresh_read(tmp_path):
    # Two doors visited back to back, the second's clock 40 s behind: by device time the later
    # read (counter 6) comes first. Within COUNTER_CLOCK_SLACK that is no replay; the same
    # counter again is, however close in time.
    b = badge_bundle(tmp_path)
    b.device("tag-0043", "c-1001")
    tap(b, "arrive", "2026-10-01T08:00:00", "s-03", {"via": "ntag424", "sun": sun(5)}, "tag-0043")
    tap(b, "arrive", "2026-10-01T07:59:20", "s-03", {"via": "ntag424", "sun": sun(6)})
    tap(b, "depart", "2026-10-01T08:30", "s-03", {"via": "ntag424", "sun": sun(7)})
    tap(b, "depart", "2026-10-01T08:30:30", "s-03", {"via": "ntag424", "sun": sun(7)}, "tag-0043")
    b.claim("k-1", "c-1001", "s-03", "omsorg", "2026-10-01T08:00", "2026-10-01T08:30")
    result = run(b, "huddinge")
    refused = [i["reason"] for i in result.integrity if i["rule"] == "E7"]
    assert len(refused) == 1
    assert "tag-0043 #" in refused[0] and ": sun counter 7 not above 7" in refused[0]
