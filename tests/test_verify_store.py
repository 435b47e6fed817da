"""Verify with evidence from the collector's store (sqlite URL) instead of a bundle folder."""

from __future__ import annotations

import json

from verify_support import rules_of, standard

from kvitto.cli import main
from kvitto.collect.intake import ingest
from kvitto.store.db import open_store
from kvitto.store.registry import Registry
from kvitto.verify.check import verify_case, verify_store


def test_store_gives_the_same_findings_as_the_bundle(tmp_path, capsys):
    b = standard(tmp_path / "case")
    b.visit("tag-0042", "s-07", "2026-10-01T08:02", "2026-10-01T08:31")
    b.visit("tag-0042", "s-07", "2026-10-02T10:05", "2026-10-02T10:40")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:03", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "226", "2026-10-01T13:00", "2026-10-01T13:30")
    b.claim("k-3", "c-1001", "s-07", "226", "2026-10-02T10:00", "2026-10-02T10:45")
    case = b.write()
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    store = open_store(url)
    registry = Registry(store)
    registry.import_toml(case / "registry.toml")
    store.close()
    store = open_store(url)
    report = ingest(store, case / "evidence.cbor-seq")
    store.close()
    assert report is not None
    from_store = verify_store(url, case / "claims.csv", "norrtalje", "2026-10",
                              orders=case / "orders.csv")  # fmt: skip
    from_bundle = verify_case(case, "norrtalje", "2026-10")
    assert from_store.findings == from_bundle.findings
    assert from_store.billing == from_bundle.billing
    assert rules_of(from_store, "k-2") == {"E1": "reject"}
    # the store has receive times: I5's comparison runs instead of being "not checked"
    assert not any(e["rule"] == "I5" for e in from_store.not_checked)
    assert any(e["rule"] == "I5" for e in from_bundle.not_checked)
    # orders from the store itself (none registered: Norrtälje's E1/T1 do not need them)
    assert verify_store(url, case / "claims.csv", "norrtalje", "2026-10").findings == (
        from_bundle.findings
    )
    main(["verify", url, "--claims", str(case / "claims.csv"), "--orders",
          str(case / "orders.csv"), "--profile", "norrtalje", "--month", "2026-10"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert {(f["claim_id"], f["rule"]) for f in document["findings"]} == {
        ("k-2", "E1"),
        ("k-3", "E1"),
    }


def test_clock_ahead_of_receipt_is_reported():
    from kvitto.verify.check import clock_ahead_issues

    received = {("tag-0042", 1): (1_790_000_000, 1_790_000_100_000),  # received 100 s later
                ("tag-0042", 2): (1_790_001_000, 1_790_000_200_000),  # 800 s before it happened
                ("tag-0042", 3): (None, 1_790_000_300_000)}  # fmt: skip
    issues = clock_ahead_issues(received, tolerance_s=300)
    assert [(i.rule, i.seq) for i in issues] == [("I5", 2)]
    assert "800 s ahead" in issues[0].reason


def test_a_months_verification_reads_what_was_received_from_that_month_on(tmp_path):
    # A store holds every month the collector ever received. October's verification re-checks
    # what arrived from a week before October on, not the device's whole history.
    b = standard(tmp_path / "case", start_boot_at="2026-08-01T06:00")
    b.visit("tag-0042", "s-07", "2026-08-03T08:02", "2026-08-03T08:31")
    b.visit("tag-0042", "s-07", "2026-08-04T08:02", "2026-08-04T08:31")
    b.visit("tag-0042", "s-07", "2026-10-01T08:02", "2026-10-01T08:31")
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:03", "2026-10-01T08:30")
    case = b.write()
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    september = 1788213600000  # 2026-09-01 00:00 Stockholm, Unix ms
    with open_store(url) as store:
        Registry(store).import_toml(case / "registry.toml")
        ingest(store, case / "evidence.cbor-seq")
        # what happened before September was received then, as a collector running then
        # would have stamped it
        store.execute(
            "UPDATE events SET received_at = COALESCE(t * 1000, ?) + 5000 "
            "WHERE t IS NULL OR t * 1000 < ?",
            (september - 86400000 * 30, september),
        )
        total = len(store.events())
        recent = len(store.events(received_since=september))
    assert 0 < recent < total
    from_store = verify_store(url, case / "claims.csv", "norrtalje", "2026-10",
                              orders=case / "orders.csv")  # fmt: skip
    from_bundle = verify_case(case, "norrtalje", "2026-10")
    assert from_bundle.counts["events"] == total
    assert from_store.counts["events"] == recent
    assert from_store.findings == from_bundle.findings == []


def test_the_store_window_keeps_a_devices_sequence_whole(tmp_path):
    # seq 3 was lost and resent weeks later: the window starts at the device's lowest
    # sequence received within it, so seq 4 comes along although it arrived long before.
    b = standard(tmp_path / "case", start_boot_at="2026-08-01T06:00")
    for day in (3, 4, 5):
        b.visit("tag-0042", "s-07", f"2026-08-0{day}T08:02", f"2026-08-0{day}T08:31")
    case = b.write()
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    with open_store(url) as store:
        Registry(store).import_toml(case / "registry.toml")
        ingest(store, case / "evidence.cbor-seq")
        store.execute("UPDATE events SET received_at = 1000")
        store.execute("UPDATE events SET received_at = 2000 WHERE seq IN (3, 6)")
        last = max(row[1] for row in store.events())
        assert [row[1] for row in store.events(received_since=1500)] == list(range(3, last + 1))
        assert [row[1] for row in store.events("tag-0042", received_since=2500)] == []
