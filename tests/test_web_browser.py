"""kvitto serve in a real browser (Debian's Chromium driven by Playwright): the coordinator's
correction by keyboard alone, attestation and the billing CSV, an explanation, a withdrawal, an
after-the-fact registration, the billing JSON and the case bundle, the auditor's decision, the live
day board, the audit log; axe-core finds 0 violations on every page; screenshots of every page
at 1280 and 390 px go to $KVITTO_SCREENSHOTS (default .artifacts/screenshots; `make
screenshots` writes docs/img)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from collect_support import fresh_database, postgres_cluster
from web_support import MONTH, PASSWORD, World, build_world

from conftest import IN_CI, free_port

CHROMIUM = Path(os.environ.get("KVITTO_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
SHOTS = Path(
    os.environ.get(
        "KVITTO_SCREENSHOTS", Path(__file__).parent.parent / ".artifacts" / "screenshots"
    )
)

if not CHROMIUM.exists():
    if IN_CI:
        pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs chromium)", pytrace=False)
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from axe_playwright_python.sync_playwright import Axe  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


# Every flow runs on both stores the web serves: SQLite (the default) and PostgreSQL (at scale).
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("web")
    if request.param == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres"), f"web_browser_{root.name}")
        return build_world(root, url)
    return build_world(root)


@pytest.fixture(scope="module")
def base_url(world) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            world.app(live_interval_s=0.2), host="127.0.0.1", port=port, log_level="warning"
        )  # fmt: skip
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, base_url) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True, locale="sv-SE")  # fmt: skip
    opened = context.new_page()
    yield opened
    context.close()


AXE = Axe()


def check(page: Page, name: str) -> None:
    """axe-core on the page as served (its CSP included): 0 violations; then screenshots at
    1280 and 390 px."""
    results = AXE.run(page)
    violations = [(v["id"], [n["target"] for n in v["nodes"]][:3])
                  for v in results.response["violations"]]  # fmt: skip
    assert violations == [], f"{name}: {violations}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        fits(page, name, width)
    page.set_viewport_size({"width": 1280, "height": 900})


def fits(page: Page, name: str, width: int) -> None:
    """Nothing on the page is wider than the window: a phone never scrolls sideways to reach a
    field or a button (a wide table scrolls inside its own box)."""
    wide = page.evaluate("() => document.documentElement.scrollWidth")
    widest = page.evaluate(
        """w => [...document.querySelectorAll('main *')]
               .filter(e => e.getBoundingClientRect().right > w)
               .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className).slice(0, 5)""",
        width,
    )
    assert wide <= width, f"{name}: {wide} px wide in a {width} px window: {widest}"


def log_in(page: Page, name: str) -> None:
    page.goto("/login")
    page.get_by_label("Användarnamn").fill(name)
    page.get_by_label("Lösenord").fill(PASSWORD)
    page.get_by_role("button", name="Logga in").click()
    expect(page.get_by_role("button", name="Logga ut")).to_be_visible()


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until `selector` has the focus: the keyboard's way to a field."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_login_page(page):
    page.goto("/login")
    check(page, "login")


def test_coordinator_corrects_a_deviation_by_keyboard(page, world):
    log_in(page, "samordnare-p1")
    expect(page).to_have_url(f"{page.url.split('/avvikelser')[0]}/avvikelser")
    check(page, "avvikelser")
    row = page.get_by_role("row").filter(has_text="E1")
    expect(row).to_contain_text("Justeras")
    expect(row).to_contain_text("30 av 50 min")  # the reason in the page's language
    row.get_by_role("link", name="k-1").click()
    expect(page.locator("#findings")).to_contain_text("E1")
    expect(page.locator("#deadline")).to_contain_text("D4")
    expect(page.locator("#timeline")).to_be_visible()
    check(page, "registrering")
    # keyboard alone: to the end field, the reason, the text, the button
    tab_to(page, "#c-end")
    page.keyboard.press("Control+a")
    page.keyboard.type("2026-11-27 08:30")
    tab_to(page, "#c-reason")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # the third reason: annan-tid
    tab_to(page, "#c-text")
    page.keyboard.type("Personalen gick 08:30")
    tab_to(page, "#correct button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Rättelsen är sparad")
    expect(page.locator("#findings")).not_to_contain_text("E1")
    expect(page.locator("#findings")).to_contain_text("D4")
    expect(page.locator("#deadline")).to_contain_text("1 dec. 2026 15:00")
    expect(page.locator(".history")).to_contain_text("end: 2026-11-27T08:50 → 2026-11-27T08:30")
    record = world.store.execute("SELECT body FROM records WHERE kind = 'correct'")
    assert "annan-tid" in record[0][0]


def test_coordinator_attests_and_downloads_the_billing_csv(page):
    log_in(page, "samordnare-p1")
    page.get_by_role("link", name="Månad").click()
    check(page, "manad")
    page.get_by_role("button", name="Attestera månaden").click()
    expect(page.locator("#attested")).to_contain_text("Attesterad")
    expect(page.locator("#attested")).to_contain_text("samordnare-p1")
    with page.expect_download() as download:
        page.get_by_role("link", name="Faktureringsunderlag (CSV)").click()
    text = Path(download.value.path()).read_text()
    lines = text.splitlines()
    assert lines[0] == "customer,category,payable_minutes,count"
    assert any(line.startswith("c-1001,hemtjanst,") for line in lines[1:])
    page.goto("/avvikelser")
    expect(page.get_by_role("row").filter(has_text="never approved")).to_have_count(0)


def test_the_day_board_updates_live(page, world):
    log_in(page, "samordnare-p1")
    page.get_by_role("link", name="Dagsöversikt").click()
    board = page.locator("#board")
    expect(board).to_contain_text("Ingen ankomst till besöket planerat 09:00")
    expect(board).to_contain_text("Larm 08:00 utan incheckning i tid")
    check(page, "dag")
    expect(page.locator("#live-status")).to_contain_text("Live")
    world.arrive("tag-1001", "s-07", "2026-11-30T09:41")
    expect(board.locator("section").filter(has_text="c-1001")).to_contain_text(
        "09:41 ankomst s-07"
    )


def test_auditor_accepts_a_follow_up(page):
    log_in(page, "uppfoljare-huddinge")
    check(page, "uppfoljning")
    page.get_by_role("link", name="p-1").first.click()
    check(page, "utforare-manad")
    with page.expect_download() as download:  # the auditor's export of the provider's month
        page.get_by_role("link", name="Ärendepaket (zip)").click()
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert f"case-p-1-{MONTH}/records.jsonl" in bundle.namelist()
    page.goto("/uppfoljning")
    page.get_by_role("listitem").filter(has_text="E5").get_by_role(
        "link", name="k-2", exact=True
    ).click()
    expect(page.locator("#timeline .good").first).to_have_text("giltig")  # not "ogiltig"
    expect(page.locator("#timeline .bad")).to_have_count(0)
    check(page, "besok")
    page.get_by_label("Godkänn: betalas").check()
    page.get_by_label("Skäl").fill("felanmälan finns")
    page.get_by_role("button", name="Spara beslut").click()
    expect(page.get_by_role("status")).to_contain_text("Beslutet är sparat")
    expect(page.locator(".findings")).to_contain_text("beslutat: godkänd")
    expect(page.locator(".history")).to_contain_text("beslut")


def test_coordinator_explains_withdraws_registers_and_exports(page, world):
    """The other actions on a deviation and the month's other exports, in the browser: a
    refused personal identity number (the form again, with the reason as an alert), an
    explanation, a withdrawal, an after-the-fact registration; the billing basis as JSON and the
    case bundle, whose records.jsonl carries what was done."""
    log_in(page, "samordnare-p1")
    page.goto("/avvikelser/k-2")
    explain = page.locator("#explain")
    explain.get_by_label("Orsak").select_option("teknikfel")
    explain.get_by_label("Kort förklaring").fill("brukare 19121212-1212")
    explain.get_by_role("button", name="Spara förklaring").click()
    expect(page.get_by_role("alert")).to_contain_text("personnummer")
    check(page, "registrering-fel")
    explain = page.locator("#explain")
    explain.get_by_label("Orsak").select_option("teknikfel")
    explain.get_by_label("Kort förklaring").fill("taggen var trasig")
    explain.get_by_role("button", name="Spara förklaring").click()
    expect(page.get_by_role("status")).to_contain_text("Förklaringen är sparad")
    expect(page.locator(".history")).to_contain_text("förklaring – teknikfel. taggen var trasig")
    expect(page.locator("#findings")).to_contain_text("E5")  # still followed up, with a reason
    page.goto("/avvikelser/k-3")
    withdraw = page.locator("#withdraw")
    withdraw.get_by_label("Orsak").select_option("dubbelregistrering")
    withdraw.get_by_role("button", name="Återkalla").click()
    expect(page.get_by_role("status")).to_contain_text("Registreringen är återkallad")
    expect(page.get_by_role("link", name="k-3", exact=True)).to_have_count(0)
    page.goto("/avvikelser/k-3")
    expect(page.get_by_role("heading", name="Sidan finns inte")).to_be_visible()
    page.goto(f"/manad/{MONTH}")
    register = page.locator("#register")
    register.get_by_label("Kund").fill("c-1003")
    register.get_by_label("Personal (pseudonym)").fill("s-07")
    register.get_by_label("Insats").select_option("omsorg")
    register.get_by_label("Start").fill("2026-11-29 09:00")
    register.get_by_label("Slut").fill("2026-11-29 09:20")
    register.get_by_label("Orsak").select_option("glomt-registrera")
    register.get_by_role("button", name="Efterregistrera").click()
    expect(page).to_have_url(re.compile(r"/avvikelser/e-20261130-\d+"))
    expect(page.locator("#findings")).to_contain_text("E5")  # manual, registered afterwards
    registered = page.url.rsplit("/", 1)[1].split("?")[0]
    page.goto(f"/manad/{MONTH}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Faktureringsunderlag (JSON)").click()
    document = json.loads(Path(download.value.path()).read_text())
    assert (document["provider"], document["month"]) == ("p-1", MONTH)
    assert any(row["customer"] == "c-1001" for row in document["billing"])
    with page.expect_download() as download:
        page.get_by_role("link", name="Ärendepaket för kommunen (zip)").click()
    with zipfile.ZipFile(download.value.path()) as bundle:
        folder = f"case-p-1-{MONTH}"
        claims = bundle.read(f"{folder}/claims.csv").decode()
        kinds = {(json.loads(line)["kind"], json.loads(line)["claim_id"])
                 for line in bundle.read(f"{folder}/records.jsonl").decode().splitlines()}  # fmt: skip
    assert {("explain", "k-2"), ("withdraw", "k-3"), ("register", registered)} <= kinds
    ids = {line.split(",", 1)[0] for line in claims.splitlines()[1:]}
    assert "k-3" not in ids and {"k-1", "k-2", registered} <= ids  # withdrawn out, registered in


def test_the_audit_log_shows_a_whole_chain(page):
    log_in(page, "uppfoljare-huddinge")
    page.get_by_role("link", name="Logg").click()
    expect(page.locator("#chain-ok")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="inloggning").first).to_be_visible()
    check(page, "logg")


def test_admin_and_not_found_pages(page):
    log_in(page, "admin")
    expect(page.get_by_role("heading", name="Användare och register")).to_be_visible()
    check(page, "admin")
    page.goto("/enheter")
    expect(page.get_by_role("heading", name="Enheter", exact=True)).to_be_visible()
    check(page, "devices")
    page.goto("/avvikelser/k-1")
    expect(page.get_by_role("heading", name="Sidan finns inte")).to_be_visible()
    check(page, "404")


def test_english(page):
    log_in(page, "samordnare-p1")
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Deviations")
    check(page, "deviations-en")
    assert MONTH
