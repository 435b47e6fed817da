"""T rules (night, 60 per hour, excess over granted, not ordered) per profile where active."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from verify_support import Bundle, household, payable_of, rules_of, run, standard

from kvitto.verify.case import parse_time
from kvitto.verify.rules.timing import night_minutes


def elsewhere_bundle(tmp_path, activity: str) -> Bundle:
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.credential("s-07")
    b.order("c-1001", activity)
    return b


def test_t1_upplands_bro_night_rejected_partly_adjusted_day_passes(tmp_path):
    # 002 §1.2: "Hemtjänst nattetid (22:00-07:00) ingår inte i LOV-uppdraget"
    b = elsewhere_bundle(tmp_path, "avlosning")
    b.claim("k-1", "c-1001", "s-07", "avlosning", "2026-10-01T10:00", "2026-10-01T10:30")
    b.claim("k-2", "c-1001", "s-07", "avlosning", "2026-10-01T22:41", "2026-10-01T22:54")
    b.claim("k-3", "c-1001", "s-07", "avlosning", "2026-10-02T06:30", "2026-10-02T07:30")
    result = run(b, "upplands-bro")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"T1": "reject"}
    assert rules_of(result, "k-3") == {"T1": "adjust"}
    assert payable_of(result, "k-3", "T1") == 30


def test_t1_night_across_the_october_dst_change_has_nine_hours(tmp_path):
    # 25 Oct 2026 03:00 CEST → 02:00 CET: 21:30–07:30 is 11 hours, 10 of them at night
    b = elsewhere_bundle(tmp_path, "avlosning")
    b.claim("k-1", "c-1001", "s-07", "avlosning", "2026-10-24T21:30", "2026-10-25T07:30")
    result = run(b, "upplands-bro")
    claim = result.claims[0]
    assert claim.minutes == 11 * 60
    assert payable_of(result, "k-1", "T1") == 60


def test_night_minutes_across_the_march_dst_change():
    # 28 Mar 2027 02:00 CET → 03:00 CEST: the night 22:00–07:00 lasts 8 hours
    start = datetime(2027, 3, 27, 20, 0, tzinfo=timezone.utc)  # 21:00 CET
    end = datetime(2027, 3, 28, 6, 0, tzinfo=timezone.utc)  # 08:00 CEST
    assert night_minutes(start, end, 22, 7) == 8 * 60
    assert (
        night_minutes(parse_time("2027-03-28T08:00"), parse_time("2027-03-28T12:00"), 22, 7) == 0
    )


def test_t1_norrkoping_and_huddinge_have_no_night_rule(tmp_path):
    b = elsewhere_bundle(tmp_path, "matdistribution")
    b.claim("k-1", "c-1001", "s-07", "matdistribution", "2026-10-01T22:41", "2026-10-01T22:54")
    assert "T1" not in rules_of(run(b, "norrkoping"), "k-1")


@pytest.mark.parametrize(("profile", "activity"), [("norrtalje", "226"), ("huddinge", "omsorg")])
def test_t2_overlapping_claims_of_one_staff_are_shared(tmp_path, profile, activity):
    b = household(tmp_path, activity=activity)
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T09:00")
    b.visit("tag-0043", "s-07", "2026-10-01T09:00", "2026-10-01T09:01")
    # both cohabitants claimed the whole hour; planned 40 and 20 minutes
    b.claim("k-1", "c-1001", "s-07", activity, "2026-10-01T08:00", "2026-10-01T09:00",
            planned_start="2026-10-01T08:00", planned_end="2026-10-01T08:40")  # fmt: skip
    b.claim("k-2", "c-1002", "s-07", activity, "2026-10-01T08:00", "2026-10-01T09:00",
            planned_start="2026-10-01T08:40", planned_end="2026-10-01T09:00")  # fmt: skip
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:30")
    b.claim("k-3", "c-1001", "s-07", activity, "2026-10-02T08:00", "2026-10-02T08:30")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {"T2": "adjust"}
    assert rules_of(result, "k-2") == {"T2": "adjust"}
    assert (payable_of(result, "k-1", "T2"), payable_of(result, "k-2", "T2")) == (40, 20)
    assert rules_of(result, "k-3") == {}
    billing = {(r["customer"], r["category"]): r["payable_minutes"] for r in result.billing}
    assert billing[("c-1001", "hemtjanst")] == 40 + 30
    assert billing[("c-1002", "hemtjanst")] == 20


@pytest.mark.parametrize(("profile", "outcome", "payable"),
                         [("haninge", "follow_up", 40), ("upplands-bro", "adjust", 20)])  # fmt: skip
def test_t3_excess_over_granted(tmp_path, profile, outcome, payable):
    b = standard(tmp_path, profile_activity="omsorg")
    b.orders.clear()
    b.order("c-1001", "omsorg", minutes=60)
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:40")
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:40")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:40")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-02T08:00", "2026-10-02T08:40")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"T3": outcome}
    assert payable_of(result, "k-2", "T3") == payable
    assert any(entry["rule"] == "T3" for entry in result.not_checked)


@pytest.mark.parametrize("profile", ["huddinge", "upplands-bro"])
def test_t4_activity_not_in_the_order(tmp_path, profile):
    b = standard(tmp_path, profile_activity="omsorg")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:30")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "service", "2026-10-02T08:00", "2026-10-02T08:30")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"T4": "reject"}


def test_month_boundary_is_stockholm_time(tmp_path):
    b = elsewhere_bundle(tmp_path, "omsorg")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-31T21:00", "2026-11-01T00:30")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-11-01T00:10", "2026-11-01T00:40")
    # 23:30 UTC on 31 Oct is 00:30 on 1 Nov in Stockholm (CET): November's
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-31T23:30+00:00", "2026-10-31T23:50+00:00")
    b.claim("k-4", "c-1001", "s-07", "omsorg", "2026-09-30T23:30+00:00", "2026-09-30T23:50+00:00")
    october = run(b, "norrkoping", "2026-10")
    assert [c.claim_id for c in october.claims] == ["k-1", "k-4"]
    assert october.billing == [{"customer": "c-1001", "category": "hemtjanst",
                                "payable_minutes": 210 + 20, "count": 0,
                                "double_staffing_minutes": 0, "absence_minutes": 0}]  # fmt: skip
    november = run(b, "norrkoping", "2026-11")
    assert [c.claim_id for c in november.claims] == ["k-2", "k-3"]
