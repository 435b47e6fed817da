"""The HTML report as an auditor gets it (#24 items 18-22): Swedish first, every claim
listed with its outcome and payable minutes, every rule id explained with its source, and a
page that works on a phone. Checked in the page's text, then in Debian's Chromium (Playwright):
axe-core finds 0 violations, no table is wider than a 390 px screen, and screenshots at 1280
and 390 px are saved to $KVITTO_SCREENSHOTS (default .artifacts/screenshots) for a person to
look at."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from verify_support import standard

from conftest import IN_CI
from kvitto.verify.check import verify_case
from kvitto.verify.report import render

CHROMIUM = Path(os.environ.get("KVITTO_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
SHOTS = Path(
    os.environ.get(
        "KVITTO_SCREENSHOTS", Path(__file__).parent.parent / ".artifacts" / "screenshots"
    )
)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("case")
    b = standard(root, staff=("s-07", "s-08"))
    b.order("c-1001", "903")
    b.visit("tag-0042", "s-07", "2026-10-01T08:02", "2026-10-01T08:31")
    b.visit("tag-0042", "s-07", "2026-10-25T10:05", "2026-10-25T10:40")  # DST day
    b.visit("tag-0042", "s-08", "2026-10-27T09:00", "2026-10-27T09:20")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:03", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "226", "2026-10-01T22:41", "2026-10-01T22:54")
    b.claim("k-3", "c-1001", "s-07", "226", "2026-10-25T10:00", "2026-10-25T10:45")
    b.claim("k-4", "c-1001", "s-07", "226", "2026-10-26T13:00", "2026-10-26T13:30",
            registered_via="manual", registered_at="2026-10-27T09:00")  # fmt: skip
    b.claim("k-5", "c-1001", "s-08", "903", "2026-10-27T09:00", "2026-10-27T09:20")
    b.write()
    return verify_case(root, "norrtalje", "2026-10")


class _Page(HTMLParser):
    """The text of each table row, the <html lang>, the meta names, the ids."""

    def __init__(self, text: str):
        super().__init__()
        self.lang, self.meta, self.ids = "", set(), set()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag == "html":
            self.lang = found.get("lang", "")
        if tag == "meta" and "name" in found:
            self.meta.add(found["name"])
        if "id" in found:
            self.ids.add(found["id"])
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def row_of(page: _Page, first: str) -> list[str]:
    return next(row for row in page.rows if row and row[0] == first)


def test_swedish_first_with_the_catalogues_names(result):
    """#24 item 18: lang="sv", Swedish headings, activity names as the profile writes them."""
    text = render(result, "html")
    page = _Page(text)
    assert page.lang == "sv"
    for heading in ("Registreringar", "Avvikelser", "Underlag för ersättning",
                    "Regler som nämns i rapporten"):  # fmt: skip
        assert f">{heading}<" in text
    assert "Omsorg (226)" in text and "Avböjt besök (903)" in text
    assert row_of(page, "c-1001")[1] == "hemtjänst"  # the category, not the code hemtjanst
    english = render(result, "html", lang="en")
    assert _Page(english).lang == "en" and ">Billing basis<" in english


def test_every_claim_is_listed_with_outcome_and_payable_minutes(result):
    """#24 item 19: paid claims too, not only as unlabeled bars; hour labels on the timeline;
    nothing only in a tooltip."""
    text = render(result, "html")
    page = _Page(text)
    assert row_of(page, "k-1") == ["k-1", "2026-10-01 08:03–08:30", "Omsorg (226)", "godkänd",
                                   "27"]  # fmt: skip
    assert row_of(page, "k-2")[3].startswith("avvisas") and row_of(page, "k-2")[4] == "0"
    assert row_of(page, "k-3")[3].startswith("justeras") and row_of(page, "k-3")[4] == "35"
    assert {row[0] for row in page.rows if row} >= {"k-1", "k-2", "k-3", "k-4", "k-5"}
    assert "title=" not in text  # no detail that only hovering shows
    hours = re.findall(r"<span style='left:[0-9.]+%'>(\d\d)</span>", text)
    assert hours == ["00", "06", "12", "18", "24"]


def test_every_rule_is_explained_and_billing_explains_itself(result):
    """#24 item 20: a legend entry (plain rule and source) for each rule id on the page; the
    count column dropped when it is 0 throughout; manual registrations per provider (E5)."""
    import dataclasses

    # Norrtälje has no E5; Huddinge and Haninge count manual registrations per provider
    result = dataclasses.replace(
        result, counts={**result.counts, "manual_registrations": {"p-1": 2}}
    )
    text = render(result, "html")
    page = _Page(text)
    used = set(re.findall(r"<a href='#regel-([A-Z][0-9])'>", text))
    assert {"E1", "T1", "E5"} <= used
    assert {f"regel-{rule}" for rule in used} <= page.ids
    legend = text.split("Regler som nämns i rapporten", 1)[1]
    assert "Natt 22–07" in legend and "Källa: 000 §1.2.9" in legend
    billing_header = next(row for row in page.rows if row and row[0] == "Kund")
    assert "Antal (larm, matlådor)" not in billing_header
    assert "Manuella registreringar per utförare (<a href='#regel-E5'>E5</a>)" in text
    assert row_of(page, "p-1") == ["p-1", "2"]


def test_no_broken_lines(result):
    """#24 item 21: no "I5 :" line with an empty claim id; a claim not checked but counted as
    paid says so."""
    text = render(result, "html")
    assert not re.search(r"I5</a>\s*[,:]\s*:", text) and "I5 :" not in text
    assert "hela underlaget" in text  # the case-wide I5 entry names what it is about
    page = _Page(text)
    unchecked = {entry["claim_id"] for entry in result.not_checked if entry.get("claim_id")}
    for claim_id in unchecked:
        assert "betalbar, ej kontrollerad" in row_of(page, claim_id)[3]


def test_phone_width_meta_and_legend(result):
    """#24 item 22: the viewport meta, legend swatches kept with their labels."""
    text = render(result, "html")
    assert "viewport" in _Page(text).meta
    assert re.search(r"<li><span class='swatch bar claim'[^>]*></span>registrering</li>", text)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.mark.parametrize("lang", ["sv", "en"])
def test_the_page_in_chromium_axe_clean_and_fitting_a_phone(result, browser, tmp_path, lang):
    from axe_playwright_python.sync_playwright import Axe

    path = tmp_path / f"report-{lang}.html"
    path.write_text(render(result, "html", lang=lang), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(path.as_uri())
        violations = [(v["id"], [n["target"] for n in v["nodes"]][:3])
                      for v in Axe().run(page).response["violations"]]  # fmt: skip
        assert violations == []
        SHOTS.mkdir(parents=True, exist_ok=True)
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            overflow = page.evaluate(
                "() => [...document.querySelectorAll('table, .legend, .timeline')]"
                ".filter(e => e.getBoundingClientRect().right > innerWidth + 0.5).length"
            )
            assert overflow == 0, f"{overflow} elements wider than {width} px"
            assert page.evaluate("() => document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(SHOTS / f"report-{lang}-{width}.png"), full_page=True)
        if lang == "sv":
            page.set_viewport_size({"width": 360, "height": 800})
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
            # a swatch and its label share a line
            tops = page.evaluate(
                "() => [...document.querySelectorAll('.legend li')].map(li => "
                "[li.firstElementChild.getBoundingClientRect().top, "
                "li.getBoundingClientRect().top, li.getBoundingClientRect().bottom])"
            )
            assert all(top <= swatch <= bottom for swatch, top, bottom in tops)
    finally:
        context.close()
