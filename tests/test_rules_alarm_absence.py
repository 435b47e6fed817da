"""A rules (safety alarm) and X rules (absence, declines, cancellations) per profile."""

from __future__ import annotations

from verify_support import Bundle, payable_of, rules_of, run


def alarm_bundle(tmp_path) -> Bundle:
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    b.device("alarm-0042", "c-1001", role="alarm")
    b.credential("s-07")
    b.order("c-1001", "trygghetslarm", minutes=0)
    return b


def test_a1_to_a4_upplands_bro(tmp_path):
    b = alarm_bundle(tmp_path)
    b.alarm("alarm-0042", "2026-10-01T09:50", "2026-10-01T10:00", "2026-10-01T10:15")
    b.claim("k-1", "c-1001", "s-07", "trygghetslarm", "2026-10-01T10:00", "2026-10-01T10:15")
    # A1: nothing at the alarm unit or tag
    b.claim("k-2", "c-1001", "s-07", "trygghetslarm", "2026-10-02T10:00", "2026-10-02T10:15")
    # A2: 25 minutes without and with a documented reason; 10 minutes
    b.alarm("alarm-0042", "2026-10-03T09:55", "2026-10-03T10:00", "2026-10-03T10:25")
    b.claim("k-3", "c-1001", "s-07", "trygghetslarm", "2026-10-03T10:00", "2026-10-03T10:25")
    b.alarm("alarm-0042", "2026-10-04T09:55", "2026-10-04T10:00", "2026-10-04T10:25")
    b.claim("k-4", "c-1001", "s-07", "trygghetslarm", "2026-10-04T10:00", "2026-10-04T10:25",
            reason="fall")  # fmt: skip
    b.alarm("alarm-0042", "2026-10-05T09:55", "2026-10-05T10:00", "2026-10-05T10:10")
    b.claim("k-5", "c-1001", "s-07", "trygghetslarm", "2026-10-05T10:00", "2026-10-05T10:10")
    # A3: checked in 45 minutes after the call
    b.alarm("alarm-0042", "2026-10-06T09:15", "2026-10-06T10:00", "2026-10-06T10:15")
    b.claim("k-6", "c-1001", "s-07", "trygghetslarm", "2026-10-06T10:00", "2026-10-06T10:15")
    # A4: at night (A4 and not T1)
    b.alarm("alarm-0042", "2026-10-07T23:00", "2026-10-07T23:10", "2026-10-07T23:25")
    b.claim("k-7", "c-1001", "s-07", "trygghetslarm", "2026-10-07T23:10", "2026-10-07T23:25")
    # tag instead of alarm unit is on site too (A1), but no call to time (A3 not checked)
    b.visit("tag-0042", "s-07", "2026-10-08T10:00", "2026-10-08T10:15")
    b.claim("k-8", "c-1001", "s-07", "trygghetslarm", "2026-10-08T10:00", "2026-10-08T10:15")
    result = run(b, "upplands-bro")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"A1": "reject"}
    assert rules_of(result, "k-3") == {"A2": "adjust"} and payable_of(result, "k-3", "A2") == 15
    assert rules_of(result, "k-4") == {"A2": "follow_up"}
    assert rules_of(result, "k-5") == {"A2": "adjust"} and payable_of(result, "k-5", "A2") == 15
    # one finding, two reasons: too long without a reason, or shorter than the standard
    reasons = {f.claim_id: f.text("en") for f in result.findings if f.rule == "A2"}
    assert reasons["k-3"].endswith(
        " took 25 min without a documented reason: paid at the 15 min standard"
    )
    assert reasons["k-5"].endswith(" (10 min) is paid at the 15 min standard time")
    assert rules_of(result, "k-6") == {"A3": "follow_up"}
    assert rules_of(result, "k-7") == {"A4": "reject"}
    assert rules_of(result, "k-8") == {}
    assert {"rule": "A3", "reason": "no alarm call with a check-in in the evidence",
            "claim_id": "k-8", "source": "002 §8, §8.2",
            "reason_code": "A3.no_call", "reason_args": {}} in result.as_dict("en")["not_checked"]  # fmt: skip
    larm = next(r for r in result.billing if r["category"] == "larm")
    assert larm["count"] == 6  # B2: call-outs not rejected (k-2 and k-7 are)


def test_a1_norrtalje_alarm_visit_on_the_tag(tmp_path):
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    b.credential("s-07")
    b.order("c-1001", "701", minutes=0)
    b.visit("tag-0042", "s-07", "2026-10-01T10:00", "2026-10-01T10:20")
    b.claim("k-1", "c-1001", "s-07", "701", "2026-10-01T10:00", "2026-10-01T10:20")
    b.claim("k-2", "c-1001", "s-07", "701", "2026-10-02T10:00", "2026-10-02T10:20")
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"A1": "reject"}


def absence_bundle(tmp_path, activities: list[str], minutes: int = 1800) -> Bundle:
    b = Bundle(tmp_path)
    b.customer("c-1001")
    b.device("tag-0042", "c-1001")
    b.credential("s-07")
    for activity in activities:
        b.order("c-1001", activity, minutes=minutes)
    return b


def test_x1_norrtalje_planned_time_if_learned_the_day_before(tmp_path):
    b = absence_bundle(tmp_path, ["902", "226"])
    for claim_id, day, notified in [("k-1", "2026-10-05", "2026-10-04T18:00"),
                                    ("k-2", "2026-10-06", "2026-10-04T18:00"),
                                    ("k-3", "2026-10-07", "2026-10-07T07:00")]:  # fmt: skip
        b.claim(claim_id, "c-1001", "s-07", "902", f"{day}T09:00", f"{day}T09:05",
                planned_start=f"{day}T09:00", planned_end=f"{day}T09:45",
                notified_at=notified)  # fmt: skip
    b.claim("k-4", "c-1001", "s-07", "902", "2026-10-08T09:00", "2026-10-08T09:45",
            planned_start="2026-10-08T09:00", planned_end="2026-10-08T09:45",
            notified_at="2026-10-08T08:00")  # fmt: skip
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {"X1": "adjust"} and payable_of(result, "k-1", "X1") == 45
    assert rules_of(result, "k-2") == {"X1": "reject"}
    assert rules_of(result, "k-3") == {"X1": "adjust"}
    assert rules_of(result, "k-4") == {}


def test_x1_haninge_two_days_of_granted_month_time(tmp_path):
    b = absence_bundle(tmp_path, ["franvaro", "omsorg"], minutes=1520)
    b.orders[0][2] = 0  # franvaro itself grants nothing; omsorg grants 1520 min a month
    b.claim("k-1", "c-1001", "s-07", "franvaro", "2026-10-05T00:00", "2026-10-09T23:59",
            notified_at="2026-10-05T07:00")  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "franvaro", "2026-10-20T00:00", "2026-10-22T23:59",
            notified_at="2026-10-17T07:00")  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", "franvaro", "2026-10-25T00:00", "2026-10-31T23:59",
            notified_at="2026-10-25T07:00", reason="avslut")  # fmt: skip
    result = run(b, "haninge")
    assert payable_of(result, "k-1", "X1") == round(2 * 1520 / 30.4)  # 100
    assert rules_of(result, "k-2") == {"X1": "reject"}  # notified 65 h ahead
    assert payable_of(result, "k-3", "X1") == round(5 * 1520 / 30.4)
    row = next(r for r in result.billing if r["category"] == "hemtjanst")
    assert row["absence_minutes"] == row["payable_minutes"] == 100 + 0 + 250


def test_x2_declined_at_door_norrtalje(tmp_path):
    b = absence_bundle(tmp_path, ["903"])
    for n in range(1, 8):
        day = f"2026-10-{n:02d}"
        if n != 7:
            b.visit("tag-0042", "s-07", f"{day}T09:00", f"{day}T09:02")
        b.claim(f"k-{n}", "c-1001", "s-07", "903", f"{day}T09:00", f"{day}T09:02",
                planned_start=f"{day}T09:00", planned_end=f"{day}T09:30")  # fmt: skip
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {"X2": "adjust"} and payable_of(result, "k-1", "X2") == 30
    assert rules_of(result, "k-6") == {"X2": "follow_up"}  # the sixth this month
    assert rules_of(result, "k-7") == {"E1": "reject", "X2": "follow_up"}  # no arrival


def test_x3_late_cancellation_upplands_bro(tmp_path):
    b = absence_bundle(tmp_path, ["omsorg"])
    planned = {"planned_start": "2026-10-10T09:00", "planned_end": "2026-10-10T09:40"}
    b.claim("k-1", "c-1001", "s-07", "installt-besok", "2026-10-10T09:00", "2026-10-10T09:00",
            notified_at="2026-10-09T13:00", **planned)  # fmt: skip
    b.claim("k-2", "c-1001", "s-07", "installt-besok", "2026-10-10T09:00", "2026-10-10T09:00",
            notified_at="2026-10-09T11:00", **planned)  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", "installt-besok", "2026-10-10T09:00", "2026-10-10T09:00",
            notified_at="2026-10-10T07:00", reason="sjukhus", **planned)  # fmt: skip
    result = run(b, "upplands-bro")
    assert rules_of(result, "k-1") == {"X3": "adjust"} and payable_of(result, "k-1", "X3") == 40
    assert "X3" not in rules_of(result, "k-2")  # 0 claimed, 0 paid
    assert payable_of(result, "k-3", "X3") == 20


def test_x4_pause_between_orders(tmp_path):
    for profile, activity in [
        ("norrtalje", "506"),
        ("norrkoping", "omsorg"),
    ]:
        b = absence_bundle(tmp_path / profile, [])
        b.order("c-1001", activity, valid_from="2026-01-01", valid_to="2026-10-09")
        b.order("c-1001", activity, valid_from="2026-10-20", valid_to="2026-12-31")
        b.claim("k-1", "c-1001", "s-07", activity, "2026-10-08T10:00", "2026-10-08T10:30")
        b.claim("k-2", "c-1001", "s-07", activity, "2026-10-15T10:00", "2026-10-15T10:30")
        result = run(b, profile)
        assert rules_of(result, "k-1") == {}, profile
        assert rules_of(result, "k-2") == {"X4": "reject"}, profile


def test_absence_or_cancellation_of_unknown_notice_is_never_paid_above_planned_time(tmp_path):
    """Issue #18's property "a verdict never pays more than ordered time", as examples: a
    claim without `notified_at` is follow_up, but a cancelled or absent visit is paid its
    planned time at most (000 §1.2.6.1 pays the day's "planerad tid"; 002 §6.1, §6.2 "Tiden kan
    dock aldrig överstiga den tid som insatsen är beräknad på i beställningen"). It was paid
    the 45 min the row claimed."""
    plan = {"planned_start": "2026-10-10T09:00", "planned_end": "2026-10-10T09:30"}
    norrtalje = absence_bundle(tmp_path / "n", ["902"])
    norrtalje.claim("k-1", "c-1001", "s-07", "902", "2026-10-10T09:00", "2026-10-10T09:45",
                    **plan)  # fmt: skip
    norrtalje.claim("k-2", "c-1001", "s-07", "902", "2026-10-11T09:00", "2026-10-11T09:20",
                    planned_start="2026-10-11T09:00", planned_end="2026-10-11T09:30")  # fmt: skip
    result = run(norrtalje, "norrtalje")
    assert rules_of(result, "k-1") == {"X1": "follow_up"}
    assert payable_of(result, "k-1", "X1") == 30
    assert "at most the planned time" in result.findings_for("k-1")[0].text("en")
    assert payable_of(result, "k-2", "X1") == 20  # below its planned time: as claimed
    bro = absence_bundle(tmp_path / "u", ["omsorg"])
    bro.claim("k-1", "c-1001", "s-07", "installt-besok", "2026-10-10T09:00", "2026-10-10T09:45",
              **plan)  # fmt: skip
    result = run(bro, "upplands-bro")
    assert rules_of(result, "k-1") == {"X3": "follow_up"}
    assert payable_of(result, "k-1", "X3") == 30
    assert "högst den planerade tiden" in result.findings_for("k-1")[0].reason
