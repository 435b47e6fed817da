"""A revoked device's key cannot add to its past (issue #25): at revocation the store records
the highest sequence the device had reached; afterwards an event dated before the revocation is
accepted only within that range, and each such late arrival is marked in the verdict."""

from __future__ import annotations

import pytest
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
        (seq, f"revoked: tag-0042#{seq} is beyond #4, the last sequence stored when the device "
              "was revoked")
        for seq in (5, 6)
    ]  # fmt: skip


def test_the_backlog_the_device_last_reported_extends_the_range(tmp_path):
    """Its newest health report said two events were still in its journal, undelivered: those
    two beyond the last stored sequence come in after the revocation; a third does not."""
    url, device = setup(tmp_path)
    device.events(2)
    device.next_event("health", fw="1.4.0", backlog=5)  # #3: an older report
    device.events(1)
    device.next_event("health", fw="1.4.0", backlog=2)  # #5: the newest, stored before revoking
    device.events(3)  # #6, #7 journaled on the board and on their way; #8 is the thief's
    deliver(tmp_path, url, "before", [device.journal[s] for s in range(1, 6)])
    with open_store(url) as store:
        Registry(store).revoke_device("tag-0042", REVOKED)
        assert store.revocations()["tag-0042"][1:] == (5, 2)
    report = deliver(tmp_path, url, "after", [device.journal[s] for s in (6, 7, 8)])
    assert (report.stored, report.rejected) == (2, 1)
    with open_store(url) as store:
        ((_, _, seq, reason, _),) = store.quarantined()
    assert (seq, reason) == (
        8,
        "revoked: tag-0042#8 is beyond #7, the last sequence stored when the device was revoked "
        "(#5) and the 2 its last health report said were still undelivered",
    )


@pytest.mark.parametrize("backlog", [-1, True, "2", 2**40, None])
def test_a_backlog_that_is_no_count_of_events_is_not_taken(tmp_path, backlog):
    url, device = setup(tmp_path)
    device.events(1)
    device.next_event("health", fw="1.4.0", backlog=backlog)
    deliver(tmp_path, url, "before", [device.journal[1], device.journal[2]])
    with open_store(url) as store:
        Registry(store).revoke_device("tag-0042", REVOKED)
        assert store.revocations()["tag-0042"][1:] == (2, None)


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
