"""Staff phones at the door without an app (issue #20), through the web app's routes: enrol a
passkey from a coordinator's one-time link, open a door URL signed by the real firmware's tag
mode (unix port) or read from a simulated NTAG 424 sticker, confirm with the passkey, arrive,
depart, tick activities → claims; and every refusal, each with its page and quarantine row.
The passkey is tests/door_support.SoftPasskey here; test_door_browser.py uses Chromium's."""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import timedelta

import pytest
from door_support import SoftPasskey, Sticker, device_urls, options_of
from web_support import NOW, build_world, csrf_of, login, post

from kvitto.store.registry import Registry

BASE = "http://testserver"
LAST_POST: dict = {}  # the last confirmation tap() posted, to post it again


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):  # noqa: ANN204
        return self.now


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # noqa: ANN201
    return build_world(tmp_path_factory.mktemp("door"))


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def client_for(world, clock, base: str = BASE):  # noqa: ANN001, ANN201
    from kvitto.web.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        app = create_app(world.store, secret=b"door-secret-door-secret-door-se", clock=clock)
        return TestClient(app, base_url=base, follow_redirects=False)


def secret_of(device: str) -> bytes:
    return hashlib.sha256(device.encode()).digest()  # verify_support.Bundle's device keys


def enrol(world, clock, coordinator: str, staff: str) -> SoftPasskey:  # noqa: ANN001
    office = client_for(world, clock)
    login(office, coordinator)
    page = post(office, "/telefoner/lank", {"staff": staff}, page="/telefoner")
    assert page.status_code == 200, page.text
    link = page.text.split('id="enrol-link">')[1].split("<")[0]
    assert link.startswith(f"{BASE}/telefon/")
    phone = client_for(world, clock)
    form = phone.get(link)
    assert form.status_code == 200
    # a resident key (discoverable), and the phone must verify its user (screen lock)
    selection = json.loads(options_of(form.text))["authenticatorSelection"]
    assert (selection["residentKey"], selection["userVerification"]) == ("required", "required")
    passkey = SoftPasskey("testserver", BASE)
    done = phone.post(link, data={"csrftoken": csrf_of(form.text),
                                  "credential": passkey.register(options_of(form.text))})  # fmt: skip
    assert done.status_code == 200 and "Telefonen är registrerad" in done.text, done.text
    # one time only
    assert phone.get(link).status_code == 410
    return passkey


def tap(world, clock, url: str, passkey: SoftPasskey, phone=None):  # noqa: ANN001, ANN201
    """Open the door URL on the phone and confirm with the passkey: (phone, response)."""
    phone = phone or client_for(world, clock)
    page = phone.get(url)
    if page.status_code != 200:
        return phone, page
    assert json.loads(options_of(page.text))["userVerification"] == "required"
    answer = passkey.assert_(options_of(page.text))
    read = page.text.split('name="read" value="')[1].split('"')[0]
    LAST_POST["data"] = {"csrftoken": csrf_of(page.text), "read": read, "credential": answer}
    return phone, phone.post("/t/bekrafta", data={"csrftoken": csrf_of(page.text),
                                                  "read": read, "credential": answer})  # fmt: skip


def quarantined(world, code: str) -> int:
    return sum(1 for row in world.store.quarantined() if f"{code}:" in str(row))


@pytest.fixture(scope="module")
def urls(world, micropython):  # noqa: ANN001, ANN201
    when = int(NOW.timestamp())
    return device_urls(micropython, secret_of("tag-1001"), "tag-1001", BASE, when, count=6)


def test_enrol_arrive_depart_activities_make_a_claim_the_coordinator_sees(world, urls):
    clock = Clock()
    passkey = enrol(world, clock, "samordnare-p1", "s-41")
    phones = [c for c in Registry(world.store).credentials("p-1") if c.staff == "s-41"]
    assert [c.kind for c in phones] == ["phone"]

    phone, arrived = tap(world, clock, urls[0], passkey)
    assert arrived.status_code == 200 and "Ankomst registrerad" in arrived.text
    assert 'class="door arrive"' in arrived.text
    # the same confirmation posted again: that read has its proof already
    again = phone.post("/t/bekrafta", data=LAST_POST["data"])
    assert again.status_code == 403 and "Ankomst registrerad" not in again.text
    clock.now = NOW + timedelta(minutes=3)  # the second URL is still within the tolerance
    phone, departed = tap(world, clock, urls[1], passkey, phone)
    assert "Avgång registrerad" in departed.text and 'class="door depart"' in departed.text
    assert 'value="omsorg"' in departed.text and "Omsorg" in departed.text
    # only the customer's granted activities to tick: no free text about the customer is asked
    assert "<textarea" not in departed.text and 'type="text"' not in departed.text
    assert 'value="ledsagning"' not in departed.text  # in the catalogue, not granted c-1001
    proof = departed.text.split('name="proof" value="')[1].split('"')[0]
    done = phone.post("/t/insatser", data={"csrftoken": csrf_of(departed.text), "proof": proof,
                                           "insats": "omsorg"})  # fmt: skip
    assert done.status_code == 200 and "Registrerat" in done.text
    claim_id = f"d-{proof}-omsorg"

    office = client_for(world, clock)
    login(office, "samordnare-p1")
    claim = office.get(f"/avvikelser/{claim_id}")
    assert claim.status_code == 200 and "s-41" in claim.text
    assert 'id="door"' in claim.text and "giltiga" in claim.text
    # the door proofs are the visit's tap evidence: no E-rule finding, the 3 minutes payable
    rules = {r[0]: r[1] for r in world.store.execute(
        "SELECT rule, outcome FROM verdicts WHERE claim_id = ?", (claim_id,))}  # fmt: skip
    assert not [rule for rule in rules if rule.startswith("E")], rules
    # the form is good once: the session held the depart
    again = phone.post("/t/insatser", data={"csrftoken": csrf_of(departed.text), "proof": proof,
                                            "insats": "omsorg"})  # fmt: skip
    assert again.status_code == 403


def test_refusals_each_with_a_page_and_a_quarantine_row(world, urls, micropython):
    clock = Clock()
    passkey = enrol(world, clock, "samordnare-p1", "s-42")
    # the same URL opened twice (counter)
    _, replay = tap(world, clock, urls[0], passkey)
    assert replay.status_code == 403 and "redan använts" in replay.text
    assert quarantined(world, "replayed") >= 1
    # a URL forwarded to another provider's phone
    other = enrol(world, clock, "samordnare-p2", "s-43")
    _, forwarded = tap(world, clock, urls[2], other)
    assert forwarded.status_code == 403 and quarantined(world, "not_enrolled") == 1
    assert "inte registrerad för utföraren" in forwarded.text
    # a passkey nobody enrolled
    _, stranger = tap(world, clock, urls[3], SoftPasskey("testserver", BASE))
    assert stranger.status_code == 403 and quarantined(world, "not_enrolled") == 2
    assert "inte registrerad för utföraren" in stranger.text
    # a stale URL: signed an hour before the server's time
    old = device_urls(micropython, secret_of("tag-1002"), "tag-1002", BASE,
                      int((NOW - timedelta(hours=1)).timestamp()))  # fmt: skip
    _, stale = tap(world, clock, old[0], passkey)
    assert stale.status_code == 403 and quarantined(world, "stale") == 1
    assert "för gammal" in stale.text
    # a URL whose signature was altered
    _, forged = tap(world, clock, urls[4][:-3] + ("AAA" if urls[4][-3:] != "AAA" else "BBB"),
                    passkey)  # fmt: skip
    assert forged.status_code == 403 and quarantined(world, "bad_signature") == 1
    assert "Länken är inte äkta" in forged.text
    # a revoked phone
    office = client_for(world, clock)
    login(office, "samordnare-p1")
    credential = [c for c in Registry(world.store).credentials("p-1") if c.staff == "s-42"][0]
    revoked = post(office, f"/telefoner/{credential.id}/sparra", {}, page="/telefoner")
    assert revoked.status_code == 303
    clock.now = NOW + timedelta(seconds=1)
    _, refused = tap(world, clock, urls[5], passkey)
    assert refused.status_code == 403 and quarantined(world, "revoked") == 1
    assert "Telefonen är spärrad" in refused.text
    # the counter only grows: urls[4] was never opened (only its forgery), but urls[5] was
    replays = quarantined(world, "replayed")
    _, older = tap(world, clock, urls[4], passkey)
    assert older.status_code == 403 and "redan använts" in older.text
    assert quarantined(world, "replayed") == replays + 1
    # another provider's coordinator cannot revoke p-1's phone
    foreign = client_for(world, clock)
    login(foreign, "samordnare-p2")
    assert post(foreign, f"/telefoner/{credential.id}/sparra", {},
                page="/telefoner").status_code == 404  # fmt: skip


def test_a_sticker_arrives_and_departs_and_a_wrong_cmac_is_refused(world):
    clock = Clock()
    passkey = enrol(world, clock, "samordnare-p1", "s-44")
    sticker = Sticker("st-1002", BASE)
    world.store.execute(
        "INSERT INTO stickers (id, customer, meta_key, file_key, installed, revoked) "
        "VALUES (?, ?, ?, ?, ?, '')",
        ("st-1002", "c-1002", sticker.meta_key, sticker.file_key, "2026-11-01"),
    )
    phone, arrived = tap(world, clock, sticker.read(), passkey)
    assert "Ankomst registrerad" in arrived.text and "klistermärke" in arrived.text
    clock.now = NOW + timedelta(minutes=20)
    url = sticker.read()
    phone, departed = tap(world, clock, url, passkey, phone)
    assert "Avgång registrerad" in departed.text
    proof = departed.text.split('name="proof" value="')[1].split('"')[0]
    phone.post("/t/insatser", data={"csrftoken": csrf_of(departed.text), "proof": proof,
                                    "insats": "omsorg"})  # fmt: skip
    # a sticker gives no time at the door: the verdict follows the visit up (I5)
    rules = {r[0]: r[1] for r in world.store.execute(
        "SELECT rule, outcome FROM verdicts WHERE claim_id = ?", (f"d-{proof}-omsorg",))}  # fmt: skip
    assert rules.get("I5") == "follow_up", rules
    assert not [rule for rule in rules if rule.startswith("E")], rules
    _, replay = tap(world, clock, url, passkey)
    assert replay.status_code == 403
    wrong = sticker.read()
    wrong = wrong[:-1] + ("0" if wrong[-1] != "0" else "1")
    _, bad = tap(world, clock, wrong, passkey)
    assert bad.status_code == 403 and "Klistermärkets kod stämmer inte" in bad.text
    assert quarantined(world, "bad_sun") == 1


def test_a_phone_that_does_not_verify_its_user_is_refused(world, micropython):
    """User verification is required (issue #20): a passkey without the UV flag can neither
    enrol nor confirm a door read."""
    clock = Clock()
    office = client_for(world, clock)
    login(office, "samordnare-p1")
    page = post(office, "/telefoner/lank", {"staff": "s-49"}, page="/telefoner")
    link = page.text.split('id="enrol-link">')[1].split("<")[0]
    phone = client_for(world, clock)
    form = phone.get(link)
    careless = SoftPasskey("testserver", BASE)
    careless.user_verified = False
    refused = phone.post(link, data={"csrftoken": csrf_of(form.text),
                                     "credential": careless.register(options_of(form.text))})  # fmt: skip
    assert refused.status_code == 400
    assert not [c for c in Registry(world.store).credentials("p-1") if c.staff == "s-49"]

    passkey = enrol(world, clock, "samordnare-p1", "s-49")
    passkey.user_verified = False
    before = quarantined(world, "bad_assertion")
    [url] = device_urls(micropython, secret_of("tag-1001"), "tag-1001", BASE,
                        int(NOW.timestamp()), counter=40)  # fmt: skip
    _, door = tap(world, clock, url, passkey)
    assert door.status_code == 403 and "Bekräftelsen med nyckeln stämmer inte" in door.text
    assert quarantined(world, "bad_assertion") == before + 1


def test_enrolment_link_expires_and_refuses_personnummer(world):
    clock = Clock()
    office = client_for(world, clock)
    login(office, "samordnare-p1")
    refused = post(office, "/telefoner/lank", {"staff": "19121212-1212"}, page="/telefoner")
    assert refused.status_code == 400 and "personnummer" in refused.text
    page = post(office, "/telefoner/lank", {"staff": "s-45"}, page="/telefoner")
    link = page.text.split('id="enrol-link">')[1].split("<")[0]
    clock.now = NOW + timedelta(minutes=16)
    assert client_for(world, clock).get(link).status_code == 410


def test_door_posts_need_the_pages_csrf_token(world, urls):
    phone = client_for(world, Clock())
    assert phone.post("/t/bekrafta", data={"read": "x", "credential": "{}"}).status_code == 403
    assert phone.post("/t/insatser", data={"proof": "1"}).status_code == 403


def _bundle(world, tmp_path):  # noqa: ANN001, ANN201
    import io
    import zipfile

    office = client_for(world, Clock())
    login(office, "samordnare-p1")
    answer = office.get("/manad/2026-11/arende.zip")
    assert answer.status_code == 200
    zipfile.ZipFile(io.BytesIO(answer.content)).extractall(tmp_path)
    return tmp_path / "case-p-1-2026-11"


def test_case_bundle_door_proofs_verify_offline_and_a_flipped_bit_is_found(world, tmp_path):
    import json
    import subprocess
    import sys

    # after the tests above: s-41's device visit and s-44's sticker visit are in November
    case = _bundle(world, tmp_path)
    lines = (case / "door.jsonl").read_text().splitlines()
    kinds = sorted({json.loads(line)["proof"]["kind"] for line in lines})
    assert kinds == ["device", "sticker"]
    assert any(json.loads(line)["claims"] for line in lines)
    kvitto = [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", "huddinge",
              "--month", "2026-11"]  # fmt: skip
    report = json.loads(subprocess.run(kvitto, capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    assert report["counts"]["door_proofs"] == len(lines)
    assert report["counts"]["door_verified"] == len(lines)
    assert [i for i in report["integrity"] if i["rule"] == "door"] == []
    door_findings = [f for f in report["findings"] if f["claim_id"].startswith("d-")]
    assert door_findings and not [f for f in door_findings if f["rule"].startswith("E")]
    assert "I5" in {f["rule"] for f in door_findings}  # the sticker's visit
    sticker_notes = [n for n in report["not_checked"] if n["rule"] == "door-sticker"]
    assert sticker_notes and "svagare bevis" in sticker_notes[0]["reason"]

    # one bit of one stored assertion's signature flipped: found, named by file and line
    entry = json.loads(lines[0])
    signature = bytearray(base64url_decode(entry["proof"]["signature"]))
    signature[10] ^= 0x04
    entry["proof"]["signature"] = base64url_encode(bytes(signature))
    (case / "door.jsonl").write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    report = json.loads(subprocess.run(kvitto, capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    refused = [i for i in report["integrity"] if i["rule"] == "door"]
    assert len(refused) == 1 and "door.jsonl line 1" in refused[0]["reason"]
    assert report["counts"]["door_refused"] == 1


def base64url_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def base64url_encode(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_provision_sticker_records_it_and_its_sun_template_reads_at_the_door(world, tmp_path):
    import json

    from click.testing import CliRunner

    from kvitto.cli import cli

    https = "https://testserver"
    made = CliRunner().invoke(cli, [
        "provision-sticker", "--sticker", "st-1001", "--customer", "c-1001",
        "--uid", "04:11:22:33:44:55:66", "--url-base", https, "--store", world.url,
        "--pki", str(tmp_path / "pki"), "--show-keys", "--format", "json",
    ])  # fmt: skip
    assert made.exit_code == 0, made.output
    out = json.loads(made.output)
    assert out["url_template"] == f"{https}/t/s/st-1001?e={'0' * 32}&c={'0' * 16}"
    sticker = Sticker("st-1001", https, uid=bytes.fromhex("04112233445566"),
                      meta_key=bytes.fromhex(out["keys"]["1"]),
                      file_key=bytes.fromhex(out["keys"]["2"]))  # fmt: skip
    url = sticker.read()
    # the offsets point at e= and c= in the NDEF file (NLEN, record header, URL after https://)
    ndef = bytes(2) + bytes((0xD1, 0x01, 0, 0x55, 0x04)) + url[len("https://") :].encode()
    picc, mac = out["offsets"]["picc_data"], out["offsets"]["sdm_mac"]
    assert ndef[picc : picc + 32].decode() == url.split("e=")[1][:32]
    assert ndef[mac : mac + 16].decode() == url.split("c=")[1]
    clock = Clock()
    office = client_for(world, clock, https)
    login(office, "samordnare-p1")
    page = post(office, "/telefoner/lank", {"staff": "s-46"}, page="/telefoner")
    link = page.text.split('id="enrol-link">')[1].split("<")[0]
    phone = client_for(world, clock, https)
    form = phone.get(link)
    passkey = SoftPasskey("testserver", https)
    phone.post(link, data={"csrftoken": csrf_of(form.text),
                           "credential": passkey.register(options_of(form.text))})  # fmt: skip
    _, arrived = tap(world, clock, url, passkey, phone)
    assert "Ankomst registrerad" in arrived.text
    import subprocess
    import sys

    # issue #20's spelling, `kvitto provision sticker`, is the same command
    again = subprocess.run([sys.executable, "-m", "kvitto",
        "provision", "sticker", "--sticker", "st-1001", "--customer", "c-1002",
        "--uid", "04:11:22:33:44:55:67", "--url-base", https, "--store", world.url,
        "--pki", str(tmp_path / "pki"),
    ], capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "c-1001's already" in again.stderr
    assert "Traceback" not in again.stderr


def test_phone_pages_are_the_coordinators_only(world):
    clock = Clock()
    anonymous = client_for(world, clock)
    assert anonymous.get("/telefoner").status_code == 303
    for name in ("uppfoljare-huddinge", "admin"):
        other = client_for(world, clock)
        login(other, name)
        assert other.get("/telefoner").status_code == 404
        assert post(other, "/telefoner/lank", {"staff": "s-99"}, page="/logg").status_code == 404


def away_phone(world, clock, passkey: SoftPasskey):  # noqa: ANN001, ANN201
    """A phone at /borta that said who it is: (client, the form's page)."""
    phone = client_for(world, clock)
    page = phone.get("/borta")
    assert page.status_code == 200
    form = phone.post("/borta", data={"csrftoken": csrf_of(page.text),
                                      "credential": passkey.assert_(options_of(page.text))})  # fmt: skip
    return phone, form


def away_fill(phone, form, customer: str, code: str, start: str, end: str):  # noqa: ANN001, ANN201
    """Post the away form: the confirmation page (or the form again, refused)."""
    return phone.post("/borta", data={"csrftoken": csrf_of(form.text), "customer": customer,
                                      "insats": code, "start": start, "end": end})  # fmt: skip


def away_confirm(phone, page, passkey: SoftPasskey, options: str | None = None):  # noqa: ANN001, ANN201
    """Confirm the registration on `page` with the passkey (over `options`' challenge when
    given: another registration's)."""
    answer = passkey.assert_(options or options_of(page.text))
    return phone.post("/borta", data={"csrftoken": csrf_of(page.text), "steg": "bekrafta",
                                      "credential": answer})  # fmt: skip


def test_an_activity_allowed_away_is_registered_without_a_tap(world):
    from kvitto.evidence.door import AwayProof, away_challenge, unb64url, verify_away_proof
    from kvitto.store.registry import Order

    Registry(world.store).add_order(Order("c-1003", "ledsagning", 600, "2026-11-01", ""))
    clock = Clock()
    passkey = enrol(world, clock, "samordnare-p1", "s-47")
    phone, confirmed = away_phone(world, clock, passkey)
    assert confirmed.status_code == 200 and "s-47" in confirmed.text
    assert 'value="ledsagning"' in confirmed.text and 'value="omsorg"' not in confirmed.text
    # an activity that needs the door is not offered, and refused when posted
    assert away_fill(phone, confirmed, "c-1001", "omsorg", "08:00", "09:00").status_code == 400
    later = away_fill(phone, confirmed, "c-1003", "ledsagning", "09:00", "11:00")
    assert later.status_code == 400  # ends after now (10:00)
    page = away_fill(phone, confirmed, "c-1003", "ledsagning", "08:00", "09:30")
    # the form is filled first, then one touch confirms what it says: nothing registered yet
    assert page.status_code == 200 and "08:00–09:30" in page.text and "Ledsagning" in page.text
    assert not world.store.execute("SELECT 1 FROM door_proofs WHERE action = 'away'")
    done = away_confirm(phone, page, passkey)
    assert done.status_code == 200 and "Registrerat" in done.text, done.text
    [(proof_id, text)] = world.store.execute(
        "SELECT id, proof FROM door_proofs WHERE action = 'away' AND credential = ?",
        (passkey_id(passkey),),
    )
    # stored: the registration, the assertion over it, the passkey's key; re-checked offline
    proof = AwayProof.from_json(json.loads(text))
    fields = verify_away_proof(proof)
    assert (fields["provider"], fields["customer"], fields["activities"]) == (
        "p-1", "c-1003", ["ledsagning"])  # fmt: skip
    assert (fields["start"], fields["end"]) == ("2026-11-30T08:00+01:00", "2026-11-30T09:30+01:00")
    challenge = json.loads(options_of(page.text))["challenge"]
    assert unb64url(challenge) == away_challenge(proof.registration)
    claim_id = f"b-{proof_id}-ledsagning"
    [(body,)] = world.store.execute(
        "SELECT body FROM records WHERE kind = 'register' AND claim_id = ?", (claim_id,)
    )
    assert json.loads(body)["via"] == "away" and json.loads(body)["proofs"] == [proof_id]
    rules = {r[0] for r in world.store.execute(
        "SELECT rule FROM verdicts WHERE claim_id = ?", (claim_id,))}  # fmt: skip
    assert not [rule for rule in rules if rule.startswith("E")], rules  # E2: no tap needed
    # the confirmation is good once: its registration is spent
    again = away_confirm(phone, page, passkey)
    assert again.status_code == 403
    # the coordinator sees the proof re-checked on the claim's page
    office = client_for(world, clock)
    login(office, "samordnare-p1")
    claim = office.get(f"/avvikelser/{claim_id}")
    assert claim.status_code == 200 and 'id="door"' in claim.text and "giltiga" in claim.text
    assert "nyckeln skrev under registreringen" in claim.text
    # a passkey nobody enrolled gets no form
    stranger = client_for(world, clock)
    page = stranger.get("/borta")
    answer = SoftPasskey("testserver", BASE).assert_(options_of(page.text))
    no = stranger.post("/borta", data={"csrftoken": csrf_of(page.text), "credential": answer})
    assert no.status_code == 403


def passkey_id(passkey: SoftPasskey) -> str:
    from kvitto.evidence.door import passkey_credential_id

    return passkey_credential_id(passkey.cose)


def test_away_refusals_other_content_other_phone_replayed_nonce_revoked(world):
    from kvitto.store.registry import Order

    Registry(world.store).add_order(Order("c-1003", "ledsagning", 600, "2026-11-01", ""))
    clock = Clock()
    passkey = enrol(world, clock, "samordnare-p1", "s-48")
    phone, form = away_phone(world, clock, passkey)
    first = away_fill(phone, form, "c-1003", "ledsagning", "07:00", "07:30")
    # the staff go back and change the times: the touch over the first registration's
    # challenge does not confirm the second (an assertion for other content)
    second = away_fill(phone, form, "c-1003", "ledsagning", "07:00", "09:45")
    before = quarantined(world, "other_content")
    moved = away_confirm(phone, second, passkey, options=options_of(first.text))
    assert moved.status_code == 403 and "gäller en annan registrering" in moved.text
    assert quarantined(world, "other_content") == before + 1
    count = "SELECT COUNT(*) FROM door_proofs WHERE action = 'away' AND credential = ?"
    assert world.store.execute(count, (passkey_id(passkey),))[0][0] == 0

    # a registration filled in on this phone, confirmed by another phone of the provider
    # (the page forwarded): refused
    other = enrol(world, clock, "samordnare-p1", "s-54")
    third = away_fill(phone, form, "c-1003", "ledsagning", "07:00", "08:00")
    forwarded = away_confirm(phone, third, other)
    assert forwarded.status_code == 403 and "på en annan telefon" in forwarded.text
    assert quarantined(world, "other_phone") == 1

    # a nonce is good once: the browser's old session (with the registration) posted again
    fourth = away_fill(phone, form, "c-1003", "ledsagning", "06:00", "06:30")
    held = dict(phone.cookies)
    assert away_confirm(phone, fourth, passkey).status_code == 200
    assert world.store.execute(count, (passkey_id(passkey),))[0][0] == 1
    phone.cookies.clear()
    phone.cookies.update(held)
    replays = quarantined(world, "replayed")
    replayed = away_confirm(phone, fourth, passkey)
    assert replayed.status_code == 403 and "redan gjord" in replayed.text
    assert quarantined(world, "replayed") == replays + 1
    assert world.store.execute(count, (passkey_id(passkey),))[0][0] == 1

    # a phone revoked between the form and the touch
    fifth = away_fill(phone, form, "c-1003", "ledsagning", "05:00", "05:30")
    office = client_for(world, clock)
    login(office, "samordnare-p1")
    post(office, f"/telefoner/{passkey_id(passkey)}/sparra", {}, page="/telefoner")
    clock.now = NOW + timedelta(seconds=1)
    revoked = quarantined(world, "revoked")
    refused = away_confirm(phone, fifth, passkey)
    assert refused.status_code == 403 and "Telefonen är spärrad" in refused.text
    assert quarantined(world, "revoked") == revoked + 1
    assert world.store.execute(count, (passkey_id(passkey),))[0][0] == 1


def test_case_bundle_away_registrations_verify_offline_and_changes_are_found(world, tmp_path):
    """After the away tests above: the bundle's door.jsonl carries each away registration with
    its passkey's assertion; kvitto verify re-checks them without the server and finds a
    changed registration, a claim that is not the registration, and a revoked phone."""
    import csv
    import io
    import subprocess
    import sys

    case = _bundle(world, tmp_path)
    lines = (case / "door.jsonl").read_text().splitlines()
    away = [(n, json.loads(line)) for n, line in enumerate(lines, start=1)
            if json.loads(line)["action"] == "away"]  # fmt: skip
    assert {e["proof"]["kind"] for _, e in away} == {"away"}
    kvitto = [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", "huddinge",
              "--month", "2026-11"]  # fmt: skip

    def verify() -> dict:
        done = subprocess.run(kvitto, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    report = verify()
    # s-48's phone was revoked that day (RULES I6: from the day's start): its one refused
    revoked = [n for n, e in away if e["credential"] == passkey_id_of(world, "s-48")]
    assert len(away) == 2 and len(revoked) == 1
    [refused] = [i["reason"] for i in report["integrity"] if i["rule"] == "door"]
    assert f"line {revoked[0]}: phone {passkey_id_of(world, 's-48')} was revoked" in refused
    assert report["counts"]["door_away"] == 1
    assert report["counts"]["door_verified"] == len(lines) - 1
    [(number, entry)] = [(n, e) for n, e in away if n not in revoked]
    [claim_id] = entry["claims"]
    assert claim_id.startswith("b-")
    assert not [f for f in report["findings"]
                if f["claim_id"] == claim_id and f["rule"].startswith("E")]  # fmt: skip

    def refused_lines(report: dict) -> list[str]:
        return [i["reason"] for i in report["integrity"] if i["rule"] == "door"
                and f"line {number}:" in i["reason"]]  # fmt: skip

    original = (case / "door.jsonl").read_text()
    # the registration changed (an hour longer), canonical still: the passkey did not sign it
    changed = dict(entry, proof=dict(entry["proof"]))
    changed["proof"]["registration"] = entry["proof"]["registration"].replace("T09:30", "T10:30")
    assert changed["proof"]["registration"] != entry["proof"]["registration"]
    lines[number - 1] = json.dumps(changed)
    (case / "door.jsonl").write_text("\n".join(lines) + "\n")
    [reason] = refused_lines(verify())
    assert "challenge" in reason, reason
    (case / "door.jsonl").write_text(original)

    # the claim in claims.csv is not what was registered (its end moved): found
    text = (case / "claims.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    [row] = [r for r in rows if r["claim_id"] == claim_id]
    row["end"] = row["end"].replace("09:30", "09:45")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (case / "claims.csv").write_text(out.getvalue())
    [reason] = refused_lines(verify())
    assert f"claim {claim_id}" in reason and "not the registration" in reason, reason
    (case / "claims.csv").write_text(text)
    assert refused_lines(verify()) == []


def passkey_id_of(world, staff: str) -> str:  # noqa: ANN001
    return [c.id for c in Registry(world.store).credentials("p-1") if c.staff == staff][0]
