"""D rules (deadlines, lock dates, adjustments) per profile where active."""

from __future__ import annotations

import pytest
from verify_support import Bundle, rules_of, run


def bundle(tmp_path, activity: str) -> Bundle:
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.credential("s-07")
    b.order("c-1001", activity, valid_from="2024-01-01", valid_to="2027-12-31")
    return b


def test_d1_after_the_fact_within_two_days_huddinge(tmp_path):
    b = bundle(tmp_path, "tvatt-tvattstuga")
    b.claim("k-1", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-01T10:00", "2026-10-01T10:30",
            registered_via="manual", registered_at="2026-10-03T20:00")  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-05T10:00", "2026-10-05T10:30",
            registered_via="manual", registered_at="2026-10-08T08:00")  # fmt: skip
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D1": "reject"}


def test_d2_adjustment_within_72_hours_of_approval_huddinge(tmp_path):
    b = bundle(tmp_path, "tvatt-tvattstuga")
    b.claim("k-1", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-01T10:00", "2026-10-01T10:30",
            approved_at="2026-10-02T10:00", adjusted_at="2026-10-05T09:59")  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-02T10:00", "2026-10-02T10:30",
            approved_at="2026-10-02T10:00", adjusted_at="2026-10-05T10:01")  # fmt: skip
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D2": "reject"}


@pytest.mark.parametrize(("profile", "activity"),
                         [("haninge", "franvaro"), ("upplands-bro", "omsorg")])  # fmt: skip
@pytest.mark.parametrize(
    ("month", "day", "ok", "late"),
    [
        ("2026-10", "2026-10-05", "2026-11-04T23:59", "2026-11-05T00:00"),
        # Epiphany (Wed 6 Jan 2027) moves December's lock date to Thu 7 Jan
        ("2026-12", "2026-12-07", "2027-01-07T16:00", "2027-01-08T08:00"),
        # Easter Monday (1 Apr 2024) moves March's lock date to Thu 4 Apr
        ("2024-03", "2024-03-11", "2024-04-04T16:00", "2024-04-05T08:00"),
    ],
)
def test_d3_lock_date_third_weekday(tmp_path, profile, activity, month, day, ok, late):
    b = bundle(tmp_path, activity)
    extra = {"notified_at": f"{day}T09:00"} if activity == "franvaro" else {}
    b.claim("k-1", "c-1001", "s-07", activity, f"{day}T10:00", f"{day}T10:30",
            registered_at=ok, approved_at=ok, **extra)  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", activity, f"{day}T11:00", f"{day}T11:30",
            registered_at=late, approved_at=ok, **extra)  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", activity, f"{day}T12:00", f"{day}T12:30",
            registered_at=ok, approved_at=None, **extra)  # fmt: skip
    result = run(b, profile, month)
    assert "D3" not in rules_of(result, "k-1")
    assert rules_of(result, "k-2")["D3"] == "reject"
    # Upplands-Bro locks approval too (002 §3.1); Haninge only registrations (003 Spärrdatum)
    assert ("D3" in rules_of(result, "k-3")) == (profile == "upplands-bro")


def test_d4_approval_by_first_weekday_15_huddinge_and_norrtalje_follow_up(tmp_path):
    b = bundle(tmp_path, "tvatt-tvattstuga")
    b.claim("k-1", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-30T10:00", "2026-10-30T10:30",
            approved_at="2026-11-02T14:59")  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-30T11:00", "2026-10-30T11:30",
            approved_at="2026-11-02T15:01")  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", "tvatt-tvattstuga", "2026-10-30T12:00", "2026-10-30T12:30",
            approved_at=None)  # fmt: skip
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D4": "reject"}
    assert rules_of(result, "k-3") == {"D4": "reject"}

    n = bundle(tmp_path / "n", "506")
    n.claim("k-1", "c-1001", "s-07", "506", "2026-10-30T10:00", "2026-10-30T10:30",
            approved_at="2026-11-02T20:00")  # fmt: skip
    n.claim("k-2", "c-1001", "s-07", "506", "2026-10-30T11:00", "2026-10-30T11:30",
            approved_at="2026-11-03T08:00")  # fmt: skip
    result = run(n, "norrtalje")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D4": "follow_up"}


def test_d5_corrections_after_the_4th_go_to_billing_norrkoping(tmp_path):
    b = bundle(tmp_path, "natthjalp")
    b.claim("k-1", "c-1001", "s-07", "natthjalp", "2026-10-30T10:00", "2026-10-30T10:30",
            adjusted_at="2026-11-04T20:00")  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "natthjalp", "2026-10-30T11:00", "2026-10-30T11:30",
            adjusted_at="2026-11-05T08:00")  # fmt: skip
    result = run(b, "norrkoping")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D5": "follow_up"}


def test_d6_adjustments_outside_frame_time_within_five_working_days(tmp_path):
    b = bundle(tmp_path, "omsorg")
    b.order("c-1001", "natthjalp")
    b.claim("k-1", "c-1001", "s-07", "natthjalp", "2026-10-01T10:00", "2026-10-01T10:30",
            adjusted_at="2026-10-08T12:00")  # Thu 1 → five working days: Thu 8  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "natthjalp", "2026-10-02T10:00", "2026-10-02T10:30",
            adjusted_at="2026-10-12T12:00")  # Fri 2 → Fri 9; Mon 12 is late  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-02T12:00", "2026-10-02T12:30",
            adjusted_at="2026-10-02T14:00")  # fmt: skip
    result = run(b, "norrkoping")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"D6": "follow_up"}
    # 004 Förändring av behov (RULES.md D6 corrected): a changed need is reported, not refused
    assert rules_of(result, "k-3") == {"D6": "follow_up"}
