"""A revoked device's key cannot add to its past (issue #25): at revocation the store records
the highest sequence the device had reached; afterwards an event dated before the revocation is
accepted only within that range, and each such late arrival is marked in the verdict."""

from __future__ import annotations

from collect_support import FakeDevice

from kvitto.collect.intake import ingest
from kvitto.store.db import open_store
from kvitto.store.migrations import REVOCATIONS_SINCE
from kvitto.store.registry import Registry
from kvitto.verify.check import verify_store

# FakeDevice's device times are 1790000000 + seq (2026-09-21T14:13:20Z + seq s); revoked a
# day later, every event below is dated before the revocation.
REVOKED = "2026-09-23"


def setup(tmp_path):
    url = f"sqlite:///{tmp_path}/kvitto.db"
    device = FakeDevice("tag-0042")
    with open_store(url) as store:
        registry = Registry(store)
        registry.add_customer("c-1001")
        registry.add_device("tag-0042", "c-1001", "tag", device.public_key, "2026-09-01")
    return url, device


def deliver(tmp_path, url, name, messages):
    path = tmp_path / f"{name}.cbor-seq"
    path.write_bytes(b"".join(messages))
    with open_store(url) as store:
        return ingest(store, path)


def test_a_backdated_event_beyond_the_recorded_range_is_refused(tmp_path):
    url, device = setup(tmp_path)
    device.events(6)
    deliver(tmp_path, url, "before", [device.journal[s] for s in (1, 2, 4)])  # 3 still on its way
    with open_store(url) as store:
        Registry(store).revoke_device("tag-0042", REVOKED)
        assert store.revocations()["tag-0042"][1:] == (4, None)
    # A thief with the key signs on from the device's journal (5, 6), dated before the
    # revocation; the genuine event 3, delivered late, is within what the device had reached.
    report = deliver(tmp_path, url, "after", [device.journal[s] for s in (3, 5, 6)])
    assert (report.stored, report.rejected) == (1, 2)
    with open_store(url) as store:
        assert [row[1] for row in store.events("tag-0042")] == [1, 2, 3, 4]
        refused = [(seq, reason) for _, _, seq, reason, _ in store.quarantined()]
    assert refused == [
        (seq, f"revoked: tag-0042#{seq} is beyond #4, the last sequence the device had reached "
              "when it was revoked")
        for seq in (5, 6)
    ]  # fmt: skip


def test_each_arrival_after_the_revocation_is_marked_in_the_verdict(tmp_path):
    url, device = setup(tmp_path)
    device.events(4)
    deliver(tmp_path, url, "before", [device.journal[s] for s in (1, 2, 4)])
    with open_store(url) as store:
        Registry(store).revoke_device("tag-0042", REVOKED)
    deliver(tmp_path, url, "after", [device.journal[3]])
    claims = tmp_path / "claims.csv"
    claims.write_text(
        "claim_id,customer,staff,activity,start,end,registered_via,registered_at,approved_at,"
        "adjusted_at,double_staffing,count,reason,planned_start,planned_end,notified_at,proof\n"
    )
    result = verify_store(url, claims, "norrtalje", "2026-09")
    marked = [i for i in result.integrity if "after the device was revoked" in i["reason"]]
    assert [(i["rule"], i["device"], i["seq"]) for i in marked] == [("I1", "tag-0042", 3)]
    assert "within the sequence it had reached then (#4)" in marked[0]["reason"]


def test_devices_revoked_before_the_record_existed_are_bounded_by_the_migration(tmp_path):
    url, device = setup(tmp_path)
    device.events(3)
    deliver(tmp_path, url, "before", [device.journal[s] for s in (1, 2)])
    with open_store(url) as store:
        Registry(store).revoke_device("tag-0042", REVOKED)
        # As an older store had it: the revocation without its record, schema version 2.
        store.execute("DROP TABLE revocations")
        store.execute("DELETE FROM schema_version WHERE version = ?", (REVOCATIONS_SINCE,))
    with open_store(url) as store:  # migrates again
        assert store.revocations()["tag-0042"][1] == 2
