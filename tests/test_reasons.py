"""Issue #24 item 18, Swedish first: a finding's reason is a code and its parameters, put into
words in the reader's language at the edge — the report (`kvitto verify --lang sv|en`, Swedish
by default) and the web pages (the session's language, Swedish by default)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from web_support import build_world, login

from kvitto.verify.reasons import CATEGORIES, Reason, because, catalogue, placeholders, said
from kvitto.verify.rules import RULES, load_profile

ROOT = Path(__file__).resolve().parent.parent
VERIFY = ROOT / "host" / "kvitto" / "verify"
EXAMPLE = ROOT.parent / "shared" / "examples" / "case-minimal"

# Reason codes the rules build from a variable part (f-strings), spelled out.
_BUILT = {
    "D3.sheet_registered_at", "D3.sheet_adjusted_at",
    "D3.late_registered_at", "D3.late_approved_at", "D3.late_adjusted_at",
    "T2.shared_by_planned", "T2.shared_by_claimed",
    "C2.supervision_with_others", "C4.meals_with_others", "C6.away_with_home",
    "C7.simplified_with_others", "tap.without_sun", "tap.without_phone_answer",
}  # fmt: skip
# English words that have no place in a Swedish sentence (placeholders removed first).
_ENGLISH = {
    "the", "and", "of", "is", "are", "not", "no", "with", "without", "at", "by", "claimed",
    "visit", "paid", "payable", "after", "before", "reason", "missing", "registered",
    "approved", "adjusted", "evidence", "provider", "customer", "staff", "night", "day", "days",
    "order", "needs", "assessor", "shown", "only", "time", "times", "minutes", "min.", "than",
    "more", "alarm", "door", "tap", "proof", "refused", "billing", "must", "be", "it", "this",
    "month", "grant", "granted", "check-in", "weekday", "lock", "date", "deadline",
}  # fmt: skip
# Names from the code or the files' columns that a reader should never see.
_CODE_NAMES = re.compile(
    r"registered_at|approved_at|adjusted_at|notified_at|planned_start|planned_end|tag_exempt|"
    r"ended_at|clock_sync|follow_up|hemtjanst|hemsjukvard|orders\.csv|claims\.csv| / "
)


def _used_codes() -> set[str]:
    """Every reason code a rule or the verification can give, read from the source."""
    literal = re.compile(r'"((?:[A-Z][0-9]\.|door\.sticker_|tap\.)[a-z_]+)"')
    found = set(_BUILT)
    for path in VERIFY.rglob("*.py"):
        found |= set(literal.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_reason_a_rule_gives_has_a_swedish_and_an_english_template():
    texts = catalogue()
    used = _used_codes()
    assert used - set(texts) == set(), "reasons without a template"
    assert set(texts) - used == set(), "templates no rule gives"
    # every rule that can find something has its reasons in the catalogue
    for rule_id in RULES:
        if RULES[rule_id].__code__.co_code != (lambda f, p: []).__code__.co_code:
            assert any(code.startswith(rule_id + ".") for code in texts), rule_id


@pytest.mark.parametrize("code", sorted(catalogue()))
def test_each_swedish_template_is_swedish_with_the_english_ones_placeholders(code):
    texts = catalogue()[code]
    assert set(texts) == {"sv", "en"}, code
    sv, en = texts["sv"], texts["en"]
    assert sv != en
    assert placeholders(sv) == placeholders(en), code
    words = re.sub(r"\{[a-z_]+\}", " ", sv).lower()
    english = {w for w in re.findall(r"[a-zåäö.'-]+", words) if w.strip(".") in _ENGLISH}
    assert not english, f"{code}: English words in the Swedish text: {english}"
    assert not _CODE_NAMES.search(sv), f"{code}: a code name in the Swedish text: {sv}"
    assert not _CODE_NAMES.search(en), f"{code}: a code name in the English text: {en}"


def test_a_reason_renders_in_either_language_and_survives_the_store():
    why = because("C3.alarm_with_ordinary", activity="Larminsats", when="2026-10-01 10:00–10:20",
                  ordinary="Omsorg", category="hemtjanst")  # fmt: skip
    assert "hemtjänst" in why.text("sv") and "läggs på den ordinarie insatsen" in why.text("sv")
    assert "home care" in why.text("en") and "hemtjanst" not in why.text("en")
    assert Reason.from_stored(why.stored()) == why
    assert said(why.stored(), "en") == why.text("en")
    assert (
        said("plain text from before reason codes", "en") == "plain text from before reason codes"
    )
    # a refused tap's own reason is a parameter, in the same language as the sentence around it
    refused = because("tap.sun_replayed", where="tag-0042 #7", counter=2, seen=2, there="#5")
    e7 = because("E7.refused", when="2026-10-02 08:00–08:30", detail=(refused,))
    assert "kvitteringens bevis avvisades" in e7.text("sv") and "räknare 2" in e7.text("sv")
    assert "sun counter 2 not above 2" in e7.text("en") and "räknare" not in e7.text("en")
    assert Reason.from_stored(e7.stored()) == e7


def test_every_profile_says_what_it_does_not_check_in_swedish_too():
    for path in sorted((VERIFY / "profiles").glob("*.toml")):
        profile = load_profile(str(path))
        for entry in profile.not_checked:
            assert entry.get("reason_sv") and entry["reason_sv"] != entry["reason"], (path, entry)


def _verify(tmp_path: Path, fmt: str, lang: str | None) -> str:
    if not EXAMPLE.exists():
        pytest.skip(f"the shared example {EXAMPLE} is not beside the checkout")
    out = tmp_path / f"report-{lang}.{fmt}"
    command = [sys.executable, "-m", "kvitto", "verify", str(EXAMPLE), "--profile", "norrtalje",
               "--month", "2026-10", "--format", fmt, "--out", str(out)]  # fmt: skip
    if lang:
        command += ["--lang", lang]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return out.read_text(encoding="utf-8")


def test_the_json_report_is_swedish_by_default_and_english_on_request(tmp_path):
    swedish = json.loads(_verify(tmp_path, "json", None))
    english = json.loads(_verify(tmp_path, "json", "en"))
    # the machine fields do not change with the language
    keep = ("claim_id", "rule", "outcome", "payable_minutes", "reason_code", "reason_args")
    assert [{k: f[k] for k in keep} for f in swedish["findings"]] == [
        {k: f[k] for k in keep} for f in english["findings"]
    ]
    reasons = {f["rule"]: (f["reason"], e["reason"])
               for f, e in zip(swedish["findings"], english["findings"])}  # fmt: skip
    assert "ska kvitteras på kundens tagg eller lås" in reasons["E1"][0]
    assert "needs the customer's tag or lock" in reasons["E1"][1]
    assert "skriftligt underlag för utförd tid nattetid" in reasons["T1"][0]
    assert "written documentation" in reasons["T1"][1]
    assert "journal" in swedish["not_checked"][2]["reason"]
    assert "medical record" in english["not_checked"][2]["reason"]


def test_the_html_report_lists_not_checked_in_the_readers_language(tmp_path):
    def not_checked(page: str) -> str:
        section = page.split("<h2>Ej kontrollerat</h2>" if "lang='sv'" in page
                             else "<h2>Not checked</h2>")[1]  # fmt: skip
        return html.unescape(section.split("</ul>")[0])

    swedish = not_checked(_verify(tmp_path, "html", "sv"))
    english = not_checked(_verify(tmp_path, "html", "en"))
    assert "oplanerad frånvaro ersätts med den planerade tiden för en dag" in swedish
    assert "underlaget saknar insamlingens mottagningstider" in swedish
    assert "unplanned absence is paid" not in swedish and "receive times" not in swedish
    assert "unplanned absence is paid for the planned time of one day" in english
    assert "the case bundle has no collector receive times" in english
    assert "oplanerad frånvaro ersätts" not in english


def test_the_deviation_page_shows_swedish_reasons_by_default_and_english_for_an_english_user(
    tmp_path,
):
    world = build_world(tmp_path)
    client = world.client()
    login(client, "samordnare-p2")
    # k-201: a manual claim without a reason (E5)
    swedish = html.unescape(client.get("/avvikelser").text)
    assert "manuellt (orsak saknas: det tekniska felet ska förklaras)" in swedish
    assert "reason missing" not in swedish and '"code"' not in swedish
    client.get("/sprak/en", headers={"referer": "/avvikelser"})
    english = html.unescape(client.get("/avvikelser").text)
    assert "registered manually (reason missing: the technical failure must be explained)" in (
        english
    )
    assert "orsak saknas" not in english
    claim = html.unescape(client.get("/avvikelser/k-201").text)
    assert "reason missing" in claim and "orsak saknas" not in claim


def test_category_names_cover_every_profile_category():
    for path in sorted((VERIFY / "profiles").glob("*.toml")):
        profile = load_profile(str(path))
        for activity in profile.activities.values():
            for lang in ("sv", "en"):
                assert activity.category in CATEGORIES[lang], (path.name, activity.code)


def test_a_verdict_stored_with_a_retired_reason_still_reads():
    """A verdict the web stored before T3's cut named the lock date renders as it did."""
    from kvitto.verify.reasons import RETIRED, Reason, because, said

    old = because("T3.excess_not_paid", activity="Omsorg", performed=120, granted=60,
                  excess=30, within=10, claimed=40)  # fmt: skip
    assert "T3.excess_not_paid" in RETIRED
    text = said(old.stored())
    assert "uteblev till spärrdatum" in text and "(10 av 40 min)" in text
    assert Reason.from_stored(old.stored()) == old
