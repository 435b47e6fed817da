"""E rules (evidence of presence) per profile where active: one claim passes, one triggers."""

from __future__ import annotations

import pytest
from verify_support import household, payable_of, rules_of, run, standard

# (profile, a tag-required activity, an elsewhere activity or None)
TAG_PROFILES = [
    ("norrtalje", "226", "506"),
    ("huddinge", "omsorg", "tvatt-tvattstuga"),
    ("upplands-bro", "omsorg", None),
    ("haninge", "omsorg", None),
]


@pytest.mark.parametrize(("profile", "activity", "elsewhere"), TAG_PROFILES)
def test_e1_covered_passes_missing_rejected_short_adjusted(tmp_path, profile, activity, elsewhere):
    b = standard(tmp_path, profile_activity=activity)
    b.visit("tag-0042", "s-07", "2026-10-01T08:02", "2026-10-01T08:31")
    b.visit("tag-0042", "s-07", "2026-10-02T10:05", "2026-10-02T10:40")
    b.claim("k-1", "c-1001", "s-07", activity, "2026-10-01T08:03", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", activity, "2026-10-01T13:00", "2026-10-01T13:30")
    b.claim("k-3", "c-1001", "s-07", activity, "2026-10-02T10:00", "2026-10-02T10:45")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"E1": "reject"}
    assert rules_of(result, "k-3") == {"E1": "adjust"}
    assert payable_of(result, "k-3", "E1") == 35
    reason = result.findings_for("k-3")[0].text("en")
    assert "10:00–10:45" in reason and "10:05–10:40" in reason and "tag-0042" in reason


def test_e1_norrkoping_is_off_the_document_is_silent(tmp_path):
    b = standard(tmp_path, profile_activity="omsorg")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T13:00", "2026-10-01T13:30")
    assert rules_of(run(b, "norrkoping"), "k-1") == {}


def test_e1_lock_unlock_and_lock_count_as_evidence_haninge(tmp_path):
    b = standard(tmp_path, profile_activity="omsorg")
    b.device("lock-0007", "c-1001", role="lock")
    b.lock_visit("lock-0007", "s-07", "2026-10-01T08:00", "2026-10-01T08:40")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:40")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-01T12:00", "2026-10-01T12:40")
    result = run(b, "haninge")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"E1": "reject"}


def test_e1_lock_unlock_then_depart_is_one_visit_and_auto_relock_ends_nothing(tmp_path):
    # What the lock role records: the staff member's unlock on arrival, the door relocking by
    # itself (no credential), and the same credential's depart on leaving.
    b = standard(tmp_path, profile_activity="omsorg")
    b.device("lock-0007", "c-1001", role="lock")
    b.event("lock-0007", "unlock", "2026-10-01T08:00", "s-07", {"via": "badge"})
    b.event("lock-0007", "lock", "2026-10-01T08:01")
    b.event("lock-0007", "depart", "2026-10-01T08:40", "s-07", {"via": "lock"})
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:40")
    assert rules_of(run(b, "haninge"), "k-1") == {}


def test_e1_other_staff_tap_is_not_evidence_for_this_staff(tmp_path):
    b = standard(tmp_path, staff=("s-07", "s-08"))
    b.visit("tag-0042", "s-08", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:00", "2026-10-01T08:30")
    assert rules_of(run(b, "norrtalje"), "k-1") == {"E1": "reject"}


def test_e1_open_visit_is_not_coverage(tmp_path):
    b = standard(tmp_path)
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", None)
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:00", "2026-10-01T08:30")
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {"E1": "reject"}
    assert result.counts["open_visits"] == 1


@pytest.mark.parametrize(("profile", "activity", "elsewhere"), [p for p in TAG_PROFILES if p[2]])
def test_e2_elsewhere_needs_no_tag(tmp_path, profile, activity, elsewhere):
    b = standard(tmp_path, profile_activity=activity)
    b.order("c-1001", elsewhere)
    b.claim("k-1", "c-1001", "s-07", elsewhere, "2026-10-01T13:00", "2026-10-01T13:30")
    b.claim("k-2", "c-1001", "s-07", activity, "2026-10-01T15:00", "2026-10-01T15:30")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"E1": "reject"}


@pytest.mark.parametrize(("profile", "activity"), [("norrtalje", "226"), ("haninge", "omsorg")])
def test_e3_exemption_is_recorded_not_rejected(tmp_path, profile, activity):
    b = standard(tmp_path, profile_activity=activity)
    b.customer("c-2002")
    b.order("c-2002", activity, exempt=1)
    b.claim("k-1", "c-2002", "s-07", activity, "2026-10-01T13:00", "2026-10-01T13:30")
    b.claim("k-2", "c-1001", "s-07", activity, "2026-10-01T14:00", "2026-10-01T14:30")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {"E3": "follow_up"}
    assert rules_of(result, "k-2") == {"E1": "reject"}


def test_e4_nurse_visit_needs_departure_and_no_correction(tmp_path):
    b = standard(tmp_path, profile_activity="555")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:20")
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", None)
    b.visit("tag-0042", "s-07", "2026-10-03T08:00", "2026-10-03T08:20")
    b.claim("k-1", "c-1001", "s-07", "555", "2026-10-01T08:00", "2026-10-01T08:20")
    b.claim("k-2", "c-1001", "s-07", "555", "2026-10-02T08:00", "2026-10-02T08:20")
    b.claim("k-3", "c-1001", "s-07", "555", "2026-10-03T08:00", "2026-10-03T08:20",
            adjusted_at="2026-10-03T12:00")  # fmt: skip
    result = run(b, "norrtalje")
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2")["E4"] == "reject"
    assert rules_of(result, "k-3") == {"E4": "reject"}


@pytest.mark.parametrize("profile", ["huddinge", "haninge"])
def test_e5_manual_with_reason_is_follow_up_and_counted(tmp_path, profile):
    b = standard(tmp_path, profile_activity="omsorg")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-01T13:00", "2026-10-01T13:30",
            registered_via="manual", reason="tag-broken", registered_at="2026-10-01T14:00")  # fmt: skip
    b.claim("k-3", "c-1001", "s-07", "omsorg", "2026-10-01T15:00", "2026-10-01T15:30",
            registered_via="manual", registered_at="2026-10-01T16:00")  # fmt: skip
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    assert rules_of(result, "k-2") == {"E5": "follow_up"}
    # RULES.md E5 (corrected): a missing reason is named, it does not by itself reject
    assert rules_of(result, "k-3") == {"E5": "follow_up"}
    assert "reason missing" in result.findings_for("k-3")[0].text("en")
    assert result.counts["manual_registrations"] == {"p-1": 2}


@pytest.mark.parametrize(("profile", "activity"),
                         [("norrtalje", "226"), ("huddinge", "omsorg"), ("haninge", "omsorg")])  # fmt: skip
def test_e6_cohabitant_tag_is_not_evidence_but_back_to_back_is(tmp_path, profile, activity):
    b = household(tmp_path, activity=activity)
    # 1 Oct: only c-1002's tag shows the visit; the claim is for c-1001
    b.visit("tag-0043", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-1", "c-1001", "s-07", activity, "2026-10-01T08:00", "2026-10-01T08:30")
    # 2 Oct: Huddinge alternative 2 — whole visit on A's tag, B's tag back to back after it
    b.visit("tag-0042", "s-07", "2026-10-02T08:00", "2026-10-02T08:50")
    b.visit("tag-0043", "s-07", "2026-10-02T08:50", "2026-10-02T08:51")
    b.claim("k-2", "c-1001", "s-07", activity, "2026-10-02T08:00", "2026-10-02T08:30")
    b.claim("k-3", "c-1002", "s-07", activity, "2026-10-02T08:30", "2026-10-02T08:50")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {"E6": "reject"}
    assert rules_of(result, "k-2") == {}
    assert rules_of(result, "k-3") == {}


@pytest.mark.parametrize("profile", ["huddinge", "haninge"])
def test_e7_unregistered_or_other_providers_credential_is_not_evidence(tmp_path, profile):
    b = standard(tmp_path, profile_activity="omsorg")
    b.credential("s-09", provider="p-2")
    b.credential("s-10", revoked="2026-09-15")
    b.visit("tag-0042", "s-07", "2026-10-01T08:00", "2026-10-01T08:30")
    b.visit("tag-0042", "s-99", "2026-10-02T08:00", "2026-10-02T08:30")  # never enrolled
    b.visit("tag-0042", "s-10", "2026-10-03T08:00", "2026-10-03T08:30")  # revoked
    b.claim("k-1", "c-1001", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-02T08:00", "2026-10-02T08:30")
    b.claim("k-3", "c-1001", "s-10", "omsorg", "2026-10-03T08:00", "2026-10-03T08:30")
    result = run(b, profile)
    assert rules_of(result, "k-1") == {}
    # unknown or revoked: I6 (every profile); another provider's: E7
    assert rules_of(result, "k-2") == {"I6": "reject"}
    assert rules_of(result, "k-3") == {"I6": "reject"}
