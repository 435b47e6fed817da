"""kvitto serve's deviation queue and day board, judged by what they show: the queue puts the
nearest deadline first with the time left in weekdays and hours, each profile's deadlines fall
on the days RULES.md gives them (D1–D5, Upplands-Bro's time sheets), and the day board flags a
planned visit nobody arrived at and an alarm nobody checked in to only once they are late; the
auditor's overview sums what each provider's month pays, counts and leaves to decide."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from collect_support import fresh_database, postgres_cluster
from web_support import MONTH, NOW, build_world, login

import kvitto.web.scope as scope_module
from kvitto.collect.intake import ingest
from kvitto.verify.case import Claim
from kvitto.verify.rules import load_profile
from kvitto.web.accounts import get_user
from kvitto.web.deadlines import deadlines as deadlines_of
from kvitto.web.deadlines import describe_left, nearest
from kvitto.web.judge import judge, refresh_deadlines
from kvitto.web.scope import Scope

SE = ZoneInfo("Europe/Stockholm")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SE)


@pytest.fixture
def world(tmp_path):
    return build_world(tmp_path)


def scope_of(world, name: str, now: datetime = NOW) -> Scope:
    user = get_user(world.store, name)
    assert user is not None
    return Scope(world.store, user, now)


def test_the_queue_puts_the_nearest_deadline_first(world):
    rows, total = scope_of(world, "samordnare-p1").queue()
    assert total == len(rows) > 2
    moments = [row.deadline.moment for row in rows if row.deadline]
    assert len(moments) == len(rows) and moments == sorted(moments)
    # k-3 (28 Nov) is still within D1 (after-registration, 2 days: until the end of 30 Nov);
    # k-1 (27 Nov) is past its D1, so its nearest is D4 (the first weekday, 1 Dec 15:00)
    first = rows[0]
    assert (first.claim_id, first.deadline.rule) == ("k-3", "D1")
    assert first.deadline.moment == at("2026-12-01T00:00")
    k1 = [row for row in rows if row.claim_id == "k-1"]
    assert {row.deadline.rule for row in k1} == {"D4"}
    assert k1[0].deadline.moment == at("2026-12-01T15:00")
    # the page lists them in that order, with the time left
    client = world.client()
    login(client, "samordnare-p1")
    page = html.unescape(client.get("/avvikelser").text)
    assert page.index('href="/avvikelser/k-3"') < page.index('href="/avvikelser/k-1"')
    assert "0 vardagar 14 h" in page  # k-3: 14 hours to midnight
    assert "1 vardag 5 h" in page  # k-1: 29 hours, one weekday and 5 hours
    # each row: rule, minutes and the visit's evidence timeline (the reason: the browser test)
    k1_row = page[page.index('href="/avvikelser/k-1"') :].split("</tr>")[0]
    k1_row = page[: page.index('href="/avvikelser/k-1"')].rsplit("<tr>", 1)[1] + k1_row
    # by name, not by code: the event types and the activity as the profile writes it
    assert "08:00 ankomst s-07" in k1_row and "08:30 avgång s-07" in k1_row
    assert "k-1</a> Omsorg<br>" in k1_row
    assert '<span class="rule">' in k1_row and "Betalbara min" in k1_row


def claim(activity: str = "omsorg", approved: str | None = "2026-11-30T09:00") -> Claim:
    return Claim("k-9", "c-9", "s-9", activity, at("2026-11-27T08:00"), at("2026-11-27T08:50"),
                 approved_at=at(approved) if approved else None)  # fmt: skip


def test_each_profile_has_its_deadlines():
    huddinge = load_profile("huddinge")
    found = {d.rule: d.moment for d in deadlines_of(huddinge, claim(), "2026-11")}
    assert found == {
        "D1": at("2026-11-30T00:00"),  # two days after the visit (Fri 27 Nov): Sunday's end
        "D2": at("2026-12-03T09:00"),  # 72 hours after approval
        "D4": at("2026-12-01T15:00"),  # the first weekday of the next month at 15:00
    }
    assert "D2" not in {d.rule for d in deadlines_of(huddinge, claim(approved=None), "2026-11")}

    # the nearest still ahead; once all have passed, the last one that passed
    def nearest_at(now: datetime) -> str:
        found = nearest(huddinge, claim(), "2026-11", now)
        return found.rule if found else ""

    assert nearest_at(NOW) == "D4"
    assert nearest_at(at("2026-12-02T08:00")) == "D2"
    assert nearest_at(at("2026-12-09T08:00")) == "D2"
    # D4 when the month's first day is a Saturday: Monday 3 August
    july = {d.rule: d.moment for d in deadlines_of(huddinge, claim(), "2026-07")}
    assert july["D4"] == at("2026-08-03T15:00")
    # D3, the lock date: the third weekday of December (Thursday 3 Dec), to its end
    haninge = {d.rule: d.moment for d in deadlines_of(load_profile("haninge"), claim(), "2026-11")}
    assert haninge == {"D3": at("2026-12-04T00:00")}
    bro = load_profile("upplands-bro")
    assert {d.rule: d.moment for d in deadlines_of(bro, claim(), "2026-11")}["D3"] == at(
        "2026-12-04T00:00"
    )
    # Upplands-Bro's escort comes on a time sheet: by the 15th of the next month (002 §6.3)
    sheet = {
        d.rule: (d.label, d.moment) for d in deadlines_of(bro, claim("ledsagning"), "2026-11")
    }
    assert sheet["D3"] == ("tidrapport", at("2026-12-16T00:00"))
    # D5: corrections by the 4th of the next month
    norrkoping = deadlines_of(load_profile("norrkoping"), claim(), "2026-11")
    assert {d.rule: d.moment for d in norrkoping} == {"D5": at("2026-12-05T00:00")}


def test_the_time_left_counts_weekdays_and_hours():
    deadline = at("2026-12-01T15:00")  # Tuesday
    assert describe_left(deadline, at("2026-11-30T10:00")) == (1, 5)  # Monday: 29 hours
    assert describe_left(deadline, at("2026-12-01T10:00")) == (0, 5)  # the same day
    # from Friday the weekend does not count: Monday is the one weekday between
    assert describe_left(deadline, at("2026-11-27T10:00")) == (2, 5)
    weekdays, hours = describe_left(deadline, at("2026-12-01T17:00"))
    assert weekdays <= 0 and hours < 0  # passed


def flags(world, now: datetime) -> dict[str, list[str]]:
    board = scope_of(world, "samordnare-p1", now).day(now.date())
    return {row["customer"]: sorted(kind for kind, _ in row["flags"]) for row in board["rows"]}


def test_the_day_board_flags_only_what_is_late(world):
    # 10:00: c-1001's 09:00 visit has no arrival (30 min past its start); c-1003's 08:00 alarm
    # has no check-in after 30 minutes; c-1002's 07:30 visit was arrived at: no flag
    assert flags(world, NOW) == {"c-1001": ["late"], "c-1002": [], "c-1003": ["alarm"]}
    # 09:25: the 09:00 visit is not 30 minutes late yet; the alarm is
    assert flags(world, NOW.replace(hour=9, minute=25)) == {
        "c-1001": [], "c-1002": [], "c-1003": ["alarm"]}  # fmt: skip
    # 08:20: the alarm is 20 minutes old, within the response time
    assert flags(world, NOW.replace(hour=8, minute=20))["c-1003"] == []
    # a check-in within the response time answers the alarm; an arrival at 09:10 the visit
    message = world.p1.event("alarm-1003", "alarm_checkin", "2026-11-30T08:25", None,
                             {"alarm": 1})  # fmt: skip
    path = world.root / "checkin.cbor-seq"
    path.write_bytes(message)
    ingest(world.store, path)
    world.arrive("tag-1001", "s-07", "2026-11-30T09:10")
    assert flags(world, NOW) == {"c-1001": [], "c-1002": [], "c-1003": []}


def test_a_check_in_after_the_response_time_still_flags_the_alarm(world):
    message = world.p1.event("alarm-1003", "alarm_checkin", "2026-11-30T08:45", None,
                             {"alarm": 1})  # fmt: skip
    path = world.root / "checkin.cbor-seq"
    path.write_bytes(message)
    ingest(world.store, path)
    assert flags(world, NOW)["c-1003"] == ["alarm"]  # 45 minutes: later than 30


def overview_rows(client) -> dict[str, list[str]]:
    """The auditor's comparison table: provider → its cells, as text."""
    import re

    page = html.unescape(client.get("/uppfoljning").text)
    rows = {}
    for row in re.findall(r"<tr>\s*<th scope=\"row\">(.*?)</tr>", page, re.S):
        cells = [re.sub(r"<[^>]+>", "", cell).strip()
                 for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", "<th>" + row, re.S)]  # fmt: skip
        rows[cells[0]] = cells[1:]
    return rows


def test_the_overview_compares_providers_per_month(world):
    """Payable minutes per category, claims, the manual share (E5), findings per rule and the
    follow-ups to decide, per provider of the auditor's municipality, as the actions change
    them."""
    auditor, coordinator = scope_of(world, "uppfoljare-huddinge"), scope_of(world, "samordnare-p1")
    summary = auditor.summary("p-1", MONTH)
    assert (summary["claims"], summary["manual"]) == (3, 1)  # k-2 was registered by hand
    assert {(r["rule"], r["outcome"]): r["count"] for r in summary["rules"]} == {
        ("D4", "reject"): 3, ("E1", "adjust"): 1, ("E5", "follow_up"): 1}  # fmt: skip
    assert [c["payable_minutes"] for c in summary["categories"]] == [0]  # not approved yet
    client = world.client()
    login(client, "uppfoljare-huddinge")
    table = overview_rows(client)
    assert set(table) == {"p-1", "p-2"}  # Huddinge's providers; p-3 is Norrtälje's
    assert [c.replace("\xa0", " ") for c in table["p-1"][:5]] == ["0", "3", "33,3 %", "5", "1"]
    # attested: the claims are approved (D4 holds) and pay: k-1 as adjusted to its evidence
    # (30 of 50 minutes), k-2 and k-3 30 each
    coordinator.attest(MONTH)
    summary = auditor.summary("p-1", MONTH)
    assert [(c["category"], c["payable_minutes"]) for c in summary["categories"]] == [
        ("hemtjanst", 90)]  # fmt: skip
    auditor.decide("p-1", "k-2", "E5", "reject", "ingen felanmälan")
    summary = auditor.summary("p-1", MONTH)
    assert summary["categories"][0]["payable_minutes"] == 60
    assert {(r["rule"], r["outcome"]) for r in summary["rules"]} == {
        ("E1", "adjust"), ("E5", "reject")}  # fmt: skip
    table = overview_rows(client)
    assert table["p-1"][0] == "60" and table["p-1"][4] == "0"  # nothing left to decide
    # an after-the-fact registration counts as manual; a withdrawn claim no longer counts
    coordinator.register("c-1003", "omsorg", "2026-11-29 09:00", "2026-11-29 09:20", "s-07",
                         "glomt-registrera", "")  # fmt: skip
    coordinator.withdraw("k-3", "dubbelregistrering", "")
    summary = auditor.summary("p-1", MONTH)
    assert (summary["claims"], summary["manual"]) == (3, 2)


# -- the queue's order as time passes (issue #19) ---------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def either_world(request, tmp_path):
    if request.param == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres"), f"queue_{abs(hash(tmp_path))}")
        return build_world(tmp_path, url)
    return build_world(tmp_path)


def every_page(scope: Scope) -> list:
    rows, total = scope.queue()
    while len(rows) < total:
        more, _ = scope.queue(len(rows))
        assert more, "a page came back empty before the total"
        rows += more
    return rows


def stored_deadlines(world) -> dict[str, tuple[str, int]]:
    """claim → (deadline_rule, deadline_last) as p-1's verdicts store them."""
    found = world.store.execute(
        "SELECT claim_id, deadline_rule, deadline_last FROM verdicts WHERE provider = 'p-1'"
    )
    return {str(c): (str(rule), int(last)) for c, rule, last in found}


def test_the_queue_follows_the_deadlines_it_shows_as_time_passes(either_world, monkeypatch):
    """Judged on Saturday 28 November at noon, every claim's nearest deadline was D1 (two days
    after the visit): k-1 and k-2 (visits on the 27th) until the end of the 29th, k-3 (the
    28th) until the end of the 30th. Nobody acts, nothing is judged again; on Monday at 10:00
    k-1's and k-2's D1 have passed and they show D4 (1 December 15:00), later than k-3's D1
    still ahead (1 December 00:00): k-3 comes first, on the first of pages of two rows."""
    world = either_world
    huddinge = load_profile("huddinge")
    judge(world.store, "p-1", MONTH, int(at("2026-11-28T12:00").timestamp() * 1000))
    assert stored_deadlines(world) == {"k-1": ("D1", 0), "k-2": ("D1", 0), "k-3": ("D1", 0)}
    monkeypatch.setattr(scope_module, "PAGE", 2)  # five findings on three pages
    coordinator = scope_of(world, "samordnare-p1")
    rows = every_page(coordinator)
    assert len(rows) == 5
    for row in rows:  # each row shows its claim's nearest deadline as of now ...
        claim = coordinator.claim("p-1", row.claim_id)[1]
        expected = nearest(huddinge, claim, MONTH, NOW)
        assert expected is not None and row.deadline is not None
        assert (row.deadline.rule, row.deadline.moment) == (expected.rule, expected.moment)
    moments = [row.deadline.moment for row in rows if row.deadline]
    assert moments == sorted(moments)  # ... and the pages list them in that order
    assert [(row.claim_id, row.deadline.rule) for row in rows if row.deadline][:2] == [
        ("k-3", "D1"), ("k-1", "D4")]  # fmt: skip
    # k-1 and k-2 moved on to D4, once: a second look moves nothing
    assert stored_deadlines(world) == {"k-1": ("D4", 1), "k-2": ("D4", 1), "k-3": ("D1", 0)}
    assert refresh_deadlines(world.store, "p-1", [MONTH], NOW) == 0
    # the page the coordinator reads lists them so
    client = world.client()
    login(client, "samordnare-p1")
    page = html.unescape(client.get("/avvikelser").text)
    assert page.index('href="/avvikelser/k-3"') < page.index('href="/avvikelser/k-1"')


def test_a_row_whose_deadlines_have_all_passed_stays_and_moves_no_more(either_world, monkeypatch):
    """On Wednesday 2 December every deadline of p-1's claims (D1, D4; none is approved, so no
    D2) has passed: each row stays in the queue showing its last deadline, D4, as passed, and
    is moved on once, not at every look."""
    world = either_world
    judge(world.store, "p-1", MONTH, int(at("2026-11-28T12:00").timestamp() * 1000))
    later = at("2026-12-02T08:00")
    coordinator = scope_of(world, "samordnare-p1", later)
    rows, total = coordinator.queue()
    assert total == len(rows) == 5
    assert {(row.deadline.rule, row.deadline.moment) for row in rows if row.deadline} == {
        ("D4", at("2026-12-01T15:00"))}  # fmt: skip
    assert all(row.deadline and row.deadline.moment < later for row in rows)
    assert set(stored_deadlines(world).values()) == {("D4", 1)}
    updates: list[str] = []
    executemany = world.store.executemany

    def counted(sql, params):  # noqa: ANN001, ANN202
        if sql.lstrip().upper().startswith("UPDATE VERDICTS"):
            updates.append(sql)
        return executemany(sql, params)

    monkeypatch.setattr(world.store, "executemany", counted)
    again, _ = scope_of(world, "samordnare-p1", at("2026-12-03T08:00")).queue()
    assert updates == []
    assert [(r.claim_id, r.rule) for r in again] == [(r.claim_id, r.rule) for r in rows]


def test_every_event_type_has_a_name_in_swedish_and_in_english():
    from kvitto.evidence.cose import EVENT_TYPES
    from kvitto.web.i18n import catalogue
    from kvitto.web.page_frame import EVENT_LABELS, activity_names

    assert set(EVENT_LABELS) == set(EVENT_TYPES)
    english = catalogue("en")
    assert [v for v in EVENT_LABELS.values() if english.gettext(v) == v] == []
    assert activity_names()["omsorg"] == "Omsorg" and activity_names()["service"] == "Service"
