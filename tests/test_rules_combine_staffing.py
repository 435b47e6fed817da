"""C rules (not combined in one visit) and S rules (staffing) per profile where active."""

from __future__ import annotations

import pytest
from verify_support import Bundle, payable_of, rules_of, run


def home(tmp_path, activities: list[str], staff=("s-07", "s-08"), double: int = 0) -> Bundle:
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    for s in staff:
        b.credential(s)
    for activity in activities:
        b.order("c-1001", activity, double=double)
    return b


def visit_with(b: Bundle, day: str, first: str, second: str, ids=("k-1", "k-2")) -> None:
    b.visit("tag-0042", "s-07", f"{day}T08:00", f"{day}T08:40")
    b.claim(ids[0], "c-1001", "s-07", first, f"{day}T08:00", f"{day}T08:20")
    b.claim(ids[1], "c-1001", "s-07", second, f"{day}T08:00", f"{day}T08:40")


def test_c1_categories_reported_separately_norrtalje(tmp_path):
    b = home(tmp_path, ["226", "342", "701"])
    visit_with(b, "2026-10-01", "226", "342")
    visit_with(b, "2026-10-02", "226", "701", ids=("k-3", "k-4"))
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-2") == {}
    assert rules_of(result, "k-3") == {"C1": "follow_up"}
    assert rules_of(result, "k-4") == {"C1": "follow_up"}


@pytest.mark.parametrize(("profile", "tillsyn", "other"),
                         [("huddinge", "tillsyn", "omsorg"),
                          ("haninge", "tillsyn-service", "omsorg")])  # fmt: skip
def test_c2_supervision_alone(tmp_path, profile, tillsyn, other):
    b = home(tmp_path, [tillsyn, other])
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:10")
    b.claim("k-1", "c-1001", "s-07", tillsyn, "2026-10-01T08:00", "2026-10-01T08:10")
    visit_with(b, "2026-10-02", tillsyn, other, ids=("k-2", "k-3"))
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"C2": "follow_up"}
    assert rules_of(result, "k-3") == {}


def test_c3_alarm_alone_and_c4_meal_alone_upplands_bro(tmp_path):
    b = home(tmp_path, ["omsorg", "trygghetslarm", "matlada"])
    b.device("alarm-0042", "c-1001", role="alarm")
    b.alarm("alarm-0042", "2026-10-01T09:55", "2026-10-01T10:00", "2026-10-01T10:15")
    b.claim("k-1", "c-1001", "s-07", "trygghetslarm", "2026-10-01T10:00", "2026-10-01T10:15")
    visit_with(b, "2026-10-02", "trygghetslarm", "omsorg", ids=("k-2", "k-3"))
    visit_with(b, "2026-10-03", "matlada", "omsorg", ids=("k-4", "k-5"))
    b.claims[-2]["count"] = 2
    result = run(b, "upplands-bro")
    assert rules_of(result, "k-1") == {}
    # 002 §6.1: the time goes to the ordinary activity, no alarm is registered
    assert rules_of(result, "k-2")["C3"] == "adjust"
    assert next(f for f in result.findings_for("k-2") if f.rule == "C3").category == "hemtjanst"
    assert rules_of(result, "k-3") == {}
    assert rules_of(result, "k-4") == {"C4": "follow_up"}


def test_c5_escort_with_home_care_paid_at_escort_tariff_huddinge(tmp_path):
    b = home(tmp_path, ["omsorg", "ledsagning"])
    visit_with(b, "2026-10-01", "ledsagning", "omsorg")
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T09:00")
    b.claim("k-3", "c-1001", "s-07", "ledsagning", "2026-10-02T08:00", "2026-10-02T09:00")
    result = run(b, "huddinge")
    assert rules_of(result, "k-2") == {"C5": "adjust"}
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-3") == {}
    billing = {r["category"]: r["payable_minutes"] for r in result.billing}
    assert billing == {"ledsagning-avlosning": 20 + 40 + 60}


def test_c6_home_and_away_apart_haninge(tmp_path):
    b = home(tmp_path, ["omsorg", "service", "franvaro"])
    visit_with(b, "2026-10-01", "omsorg", "service")
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:40")
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-02T08:00", "2026-10-02T08:40")
    b.claim("k-4", "c-1001", "s-07", "franvaro", "2026-10-02T08:00", "2026-10-02T08:40",
            notified_at="2026-10-02T07:00")  # fmt: skip
    result = run(b, "haninge")
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-2") == {}
    assert rules_of(result, "k-4")["C6"] == "follow_up"


def test_c7_simplified_assessment_is_its_own_visit_huddinge(tmp_path):
    b = home(tmp_path, ["omsorg", "forenklad-stad"])
    # two presences at the door, back to back: two visits (C0: one visit = one presence)
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:20")
    b.visit("tag-0042", "s-07", "2026-10-01T08:20", "2026-10-01T08:40")
    b.claim("k-1", "c-1001", "s-07", "forenklad-stad", "2026-10-01T08:00", "2026-10-01T08:20")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-01T08:20", "2026-10-01T08:40")
    visit_with(b, "2026-10-02", "forenklad-stad", "omsorg", ids=("k-3", "k-4"))
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-2") == {}
    assert rules_of(result, "k-3") == {"C7": "follow_up"}


def two_staff(b: Bundle, day: str, first: dict, second: dict, ids=("k-1", "k-2")) -> None:
    b.visit("tag-0042", "s-07", f"{day}T08:00", f"{day}T09:00")
    b.visit("tag-0042", "s-08", f"{day}T08:00", f"{day}T08:30")
    b.claim(ids[0], "c-1001", "s-07", "omsorg", f"{day}T08:00", f"{day}T09:00",
            registered_at=f"{day}T09:00", **first)  # fmt: skip
    b.claim(ids[1], "c-1001", "s-08", "omsorg", f"{day}T08:00", f"{day}T08:30",
            registered_at=f"{day}T09:01", **second)  # fmt: skip


def test_s1_double_staffing_ordered_vs_not_upplands_bro(tmp_path):
    ordered = home(tmp_path / "a", ["omsorg"], double=1)
    two_staff(ordered, "2026-10-01", {}, {"double_staffing": 1})
    ordered.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:30")
    ordered.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-02T08:00", "2026-10-02T08:30",
                  double_staffing=1)  # fmt: skip
    result = run(ordered, "upplands-bro")
    assert rules_of(result, "k-1") == {} and rules_of(result, "k-2") == {}
    assert rules_of(result, "k-3") == {"S1": "follow_up"}  # one credential at the door
    assert {r["category"]: r["double_staffing_minutes"] for r in result.billing} == {
        "hemtjanst": 30 + 30
    }
    not_ordered = home(tmp_path / "b", ["omsorg"], double=0)
    two_staff(not_ordered, "2026-10-01", {}, {"double_staffing": 1})
    result = run(not_ordered, "upplands-bro")
    assert rules_of(result, "k-2") == {"S1": "reject"}


@pytest.mark.parametrize("profile", ["upplands-bro", "haninge"])
def test_s2_only_one_marks_double_staffing(tmp_path, profile):
    b = home(tmp_path, ["omsorg"], double=1)
    two_staff(b, "2026-10-01", {"double_staffing": 1}, {"double_staffing": 1})
    result = run(b, profile)
    # RULES.md S2 (002 §7; 003 Dubbelbemanning): of the two, exactly one is payable
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"S2": "reject"}


def test_s2_huddinge_no_double_registration_only_one_registers(tmp_path):
    b = home(tmp_path, ["omsorg"])
    two_staff(b, "2026-10-01", {}, {})
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:30")
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-02T08:00", "2026-10-02T08:30",
            double_staffing=1)  # fmt: skip
    b.visit("tag-0042", "s-07", "2026-10-03T08:00", "2026-10-03T08:30")
    b.claim("k-4", "c-1001", "s-07", "omsorg", "2026-10-03T08:00", "2026-10-03T08:30")
    result = run(b, "huddinge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"S2": "reject"}
    # one staff member alone flagged double staffing: the visit was given, it is paid once
    # (001 Dubbelbemanning: no extra pay); the flag is followed up, never a reject
    assert rules_of(result, "k-3") == {"S2": "follow_up"}
    assert payable_of(result, "k-3", "S2") == 30
    assert rules_of(result, "k-4") == {}


def test_s3_two_staff_splitting_a_task_share_its_time_upplands_bro(tmp_path):
    # both registered the whole hour of a task assessed at 60 min: shared down to the 60
    b = home(tmp_path, ["omsorg"])
    b.visit("tag-0042", "s-07", "2026-10-01T10:00", "2026-10-01T11:00")
    b.visit("tag-0042", "s-08", "2026-10-01T10:00", "2026-10-01T11:00")
    plan = {"planned_start": "2026-10-01T10:00", "planned_end": "2026-10-01T11:00"}
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T10:00", "2026-10-01T11:00", **plan)
    b.claim("k-2", "c-1001", "s-08", "omsorg", "2026-10-01T10:00", "2026-10-01T11:00", **plan)
    b.visit("tag-0042", "s-07", "2026-10-02T10:00", "2026-10-02T11:00")
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-02T10:00", "2026-10-02T11:00")
    result = run(b, "upplands-bro")
    assert rules_of(result, "k-1") == {"S3": "adjust"} == rules_of(result, "k-2")
    assert payable_of(result, "k-1", "S3") + payable_of(result, "k-2", "S3") == 60
    assert rules_of(result, "k-3") == {}
