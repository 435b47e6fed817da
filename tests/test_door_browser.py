"""Staff phones at the door in a real browser (issue #20): Debian's Chromium via Playwright
with a virtual WebAuthn authenticator (Chrome DevTools Protocol: WebAuthn.enable and
addVirtualAuthenticator, ctap2, internal, resident key, user verification). The coordinator
makes an enrolment link; the phone (390 px) registers a passkey, opens URLs signed by the real
firmware's tag mode under the unix port (and read from a simulated NTAG 424 sticker), confirms,
departs, ticks an activity; the claim and its findings are in the coordinator's deviation
queue. axe-core finds 0 violations on every page; screenshots go to $KVITTO_SCREENSHOTS.
WebAuthn needs a secure context: http://localhost is one, so the server is reached as
localhost (the RP id)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from door_support import Sticker, device_urls
from test_web_browser import AXE, SHOTS, browser, check, fits, log_in  # noqa: F401 (fixture)
from web_support import NOW, World, build_world

from conftest import free_port

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("door-web"))


class Clock:
    """The server's clock: NOW, moved on by the tests (a visit takes time)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):  # noqa: ANN204
        return self.now


CLOCK = Clock()


@pytest.fixture(scope="module")
def base_url(world) -> Iterator[str]:
    import uvicorn

    from kvitto.web.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(world.store, secret=b"door-browser-secret-0123456789ab", clock=CLOCK),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://localhost:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def office(browser, base_url) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True, locale="sv-SE")  # fmt: skip
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser, base_url) -> Iterator[Page]:  # noqa: F811
    """A phone: 390 px wide, with a platform authenticator that verifies its user."""
    context = browser.new_context(base_url=base_url, viewport={"width": 390, "height": 844},
                                  locale="sv-SE", is_mobile=True, has_touch=True)  # fmt: skip
    opened = context.new_page()
    cdp = context.new_cdp_session(opened)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})  # fmt: skip
    opened.cdp = cdp  # type: ignore[attr-defined]
    yield opened
    context.close()


def phone_check(page: Page, name: str) -> None:
    """axe-core 0 violations; a screenshot at the phone's 390 px."""
    results = AXE.run(page)
    violations = [(v["id"], [n["target"] for n in v["nodes"]][:3])
                  for v in results.response["violations"]]  # fmt: skip
    assert violations == [], f"{name}: {violations}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    fits(page, name, 390)


def enrol(office: Page, phone: Page, staff: str, shots: bool = False) -> None:
    log_in(office, "samordnare-p1")
    office.get_by_role("link", name="Telefoner").click()
    office.get_by_label("Personalens pseudonym").fill(staff)
    office.get_by_role("button", name="Skapa registreringslänk").click()
    link = office.locator("#enrol-link").inner_text()
    expect(office.get_by_role("img", name="QR-kod för registreringslänken")).to_be_visible()
    if shots:
        check(office, "telefoner")
    phone.goto(link)
    if shots:
        phone_check(phone, "telefon-registrera")
    phone.get_by_role("button", name="Skapa nyckel").click()
    expect(phone.get_by_role("status")).to_contain_text("Telefonen är registrerad")
    if shots:
        phone_check(phone, "telefon-registrerad")


def confirm(phone: Page, url: str) -> None:
    phone.goto(url)
    phone.get_by_role("button", name="Bekräfta med nyckel").click()


def secret_of(device: str) -> bytes:
    return hashlib.sha256(device.encode()).digest()


def test_enrol_arrive_depart_activities_claim_with_a_tag_mode_device(office, phone, world,
                                                                      base_url, micropython,
                                                                      tmp_path):  # fmt: skip
    enrol(office, phone, "s-51", shots=True)
    CLOCK.now = NOW
    urls = device_urls(micropython, secret_of("tag-1001"), "tag-1001", base_url,
                       int(NOW.timestamp()))  # fmt: skip
    later = NOW + timedelta(minutes=25)
    urls += device_urls(micropython, secret_of("tag-1001"), "tag-1001", base_url,
                        int(later.timestamp()), counter=1)  # fmt: skip
    phone.goto(urls[0])
    expect(phone.get_by_role("heading", level=1)).to_have_text("Bekräfta besöket")
    phone_check(phone, "dorr")
    phone.get_by_role("button", name="Bekräfta med nyckel").click()
    expect(phone.locator(".door.arrive")).to_contain_text("Ankomst registrerad")
    phone_check(phone, "dorr-ankomst")

    CLOCK.now = later
    confirm(phone, urls[1])
    expect(phone.locator(".door.depart")).to_contain_text("Avgång registrerad")
    phone_check(phone, "dorr-avgang")
    phone.get_by_label("Omsorg").check()
    phone.get_by_role("button", name="Registrera insatserna").click()
    expect(phone.get_by_role("status")).to_contain_text("Registrerat")
    phone_check(phone, "dorr-registrerat")

    # the same URL again: refused, with a page that says so
    phone.goto(urls[1])
    expect(phone.get_by_role("alert")).to_contain_text("Länken har redan använts")
    phone_check(phone, "dorr-nekad")

    proof = world.store.execute("SELECT MAX(id) FROM door_proofs WHERE action = 'depart'")[0][0]
    office.goto("/avvikelser")
    row = office.get_by_role("row").filter(has_text=f"d-{proof}-omsorg")
    expect(row).to_contain_text("D4")  # not approved yet: the month is not attested
    row.get_by_role("link", name=f"d-{proof}-omsorg").click()
    expect(office.locator("main")).to_contain_text("10:00–10:25")
    expect(office.locator("main")).to_contain_text("s-51")
    expect(office.locator("#findings")).to_be_visible()
    expect(office.locator("#door")).to_contain_text("giltiga")
    expect(office.locator(".history")).to_contain_text("registrerad vid dörren med telefon")
    check(office, "dorr-registrering")

    # the month's case bundle carries the phone proofs: kvitto verify re-checks them offline
    import json
    import subprocess
    import sys
    import zipfile

    office.goto("/manad/2026-11")
    with office.expect_download() as download:
        office.get_by_role("link", name="Ärendepaket för kommunen (zip)").click()
    zipfile.ZipFile(download.value.path()).extractall(tmp_path)
    case = tmp_path / "case-p-1-2026-11"
    report = json.loads(subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", "huddinge",
         "--month", "2026-11"], capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert report["counts"]["door_verified"] == report["counts"]["door_proofs"] == 2
    assert [f["rule"] for f in report["findings"] if f["claim_id"] == f"d-{proof}-omsorg"] == [
        "D4"
    ]


def test_a_sticker_at_the_door_says_its_evidence_is_weaker(office, phone, world, base_url):
    CLOCK.now = NOW + timedelta(hours=1)
    enrol(office, phone, "s-52")
    sticker = Sticker("st-1002", base_url)
    world.store.execute(
        "INSERT INTO stickers (id, customer, meta_key, file_key, installed, revoked) "
        "VALUES (?, ?, ?, ?, ?, '')",
        ("st-1002", "c-1002", sticker.meta_key, sticker.file_key, "2026-11-01"),
    )
    confirm(phone, sticker.read())
    expect(phone.locator(".door.arrive")).to_contain_text("klistermärke: svagare bevis")
    CLOCK.now = NOW + timedelta(hours=1, minutes=20)
    confirm(phone, sticker.read())
    expect(phone.locator(".door.depart")).to_contain_text("Avgång registrerad")
    phone.get_by_label("Omsorg").check()
    phone.get_by_role("button", name="Registrera insatserna").click()
    expect(phone.get_by_role("status")).to_contain_text("Registrerat")

    # the claim and its verdict: a sticker gives no time at the door, so I5 follows it up
    proof = world.store.execute("SELECT MAX(id) FROM door_proofs WHERE action = 'depart'")[0][0]
    office.goto("/avvikelser")  # the office is the coordinator who enrolled the phone
    rows = office.get_by_role("row").filter(has_text=f"d-{proof}-omsorg")
    row = rows.filter(has_text="I5")  # one row per finding: D4 too (the month not attested)
    expect(row).to_contain_text("Följs upp")
    row.get_by_role("link", name=f"d-{proof}-omsorg").click()
    expect(office.locator("main")).to_contain_text("11:00–11:20")
    expect(office.locator("main")).to_contain_text("s-52")
    expect(office.locator("#findings")).to_contain_text("I5")
    expect(office.locator("#door")).to_contain_text("klistermärke: svagare bevis")
    expect(office.locator("#door")).to_contain_text("giltiga")


def test_an_activity_allowed_away_is_registered_by_passkey_without_a_tap(office, phone, world):
    """The form first, then one touch whose challenge is the registration's: the proof the
    server stores (Chromium's assertion) re-checks offline."""
    import json

    from kvitto.evidence.door import AwayProof, verify_away_proof
    from kvitto.store.registry import Order, Registry

    CLOCK.now = NOW + timedelta(hours=2)
    Registry(world.store).add_order(Order("c-1003", "ledsagning", 600, "2026-11-01", ""))
    enrol(office, phone, "s-53")
    phone.goto("/borta")
    phone_check(phone, "borta")
    phone.get_by_role("button", name="Bekräfta med nyckel").click()
    phone.get_by_label("Kund").select_option("c-1003")
    phone.get_by_label("Insats").select_option("ledsagning")
    phone.get_by_label("Start").fill("10:00")
    phone.get_by_label("Slut").fill("11:30")
    phone_check(phone, "borta-formular")
    phone.get_by_role("button", name="Vidare").click()
    expect(phone.locator("main")).to_contain_text("10:00–11:30")
    expect(phone.locator("main")).to_contain_text("Ledsagning")
    phone_check(phone, "borta-bekrafta")
    before = world.store.execute("SELECT COUNT(*) FROM door_proofs WHERE action = 'away'")[0][0]
    assert before == 0  # nothing registered before the touch
    phone.get_by_role("button", name="Bekräfta med nyckel").click()
    expect(phone.get_by_role("status")).to_contain_text("Registrerat")
    [(proof_id, text)] = world.store.execute(
        "SELECT id, proof FROM door_proofs WHERE action = 'away'"
    )
    fields = verify_away_proof(AwayProof.from_json(json.loads(text)))
    assert (fields["customer"], fields["activities"], fields["start"][11:], fields["end"][11:]) == (
        "c-1003", ["ledsagning"], "10:00+01:00", "11:30+01:00")  # fmt: skip
    assert world.store.execute(
        "SELECT 1 FROM records WHERE claim_id = ?", (f"b-{proof_id}-ledsagning",)
    )
    # the browser's session still knows the phone: the next registration is the form and a
    # touch
    phone.get_by_role("link", name="Registrera en till").click()
    expect(phone.get_by_label("Kund")).to_be_visible()
