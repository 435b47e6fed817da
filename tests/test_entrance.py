"""A shared entrance lock (issue #23, Haninge 003 "digitalt lås vid huvudentrén"): one `lock` bound
to a building and the customers it serves. In the registry and its registry.toml it names the
building and its customers; its schedule is the union of their visit windows; and in `kvitto
verify` its events are access records, never presence evidence for any customer (RULES E6): a
claim only the entrance shows has no evidence at the apartment, and the reason says so."""

from __future__ import annotations

import pytest
from collect_support import FakeDevice
from verify_support import run, standard

from kvitto.errors import KvittoError
from kvitto.store.db import open_store
from kvitto.store.entrance import add_entrance_lock
from kvitto.store.registry import Registry
from kvitto.store.schedules import schedule_x
from kvitto.verify.case import parse_registry

NOW = 1_796_000_000_000  # ms
HOUR = 3_600_000
BUILDING = ["c-1001", "c-1002", "c-1003"]


@pytest.fixture
def registry(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    registry = Registry(store)
    for customer in [*BUILDING, "c-2001"]:
        registry.add_customer(customer)
    add_entrance_lock(registry, "lock-b7", "b-7", BUILDING, FakeDevice("lock-b7").public_key)
    registry.add_device("tag-0042", "c-1001", "tag", FakeDevice("tag-0042").public_key)
    yield registry
    store.close()


def test_an_entrance_lock_is_the_buildings_not_one_customers(registry):
    device = registry.device("lock-b7")
    assert device is not None
    assert (device.building, device.customers, device.customer) == ("b-7", tuple(BUILDING), "")
    assert device.served == tuple(BUILDING)
    # the same again changes nothing; one more customer of the building is added
    key = device.public_key
    add_entrance_lock(registry, "lock-b7", "b-7", [*BUILDING, "c-2001"], key)
    assert registry.device("lock-b7").customers == (*BUILDING, "c-2001")
    with pytest.raises(KvittoError, match="bound to b-7"):
        add_entrance_lock(registry, "lock-b7", "b-9", ["c-1001"], key)
    with pytest.raises(KvittoError, match="entrance lock of building b-7"):
        registry.add_device("lock-b7", "c-1001", "lock", key)
    with pytest.raises(KvittoError, match="bound to customer c-1001"):
        add_entrance_lock(
            registry, "tag-0042", "b-7", ["c-1001"], FakeDevice("tag-0042").public_key
        )
    with pytest.raises(KvittoError, match="not registered"):
        add_entrance_lock(registry, "lock-b8", "b-8", ["c-9999"], key)


def test_registry_toml_round_trip_names_building_and_customers(registry, tmp_path):
    text = registry.to_toml()
    assert 'building = "b-7"' in text and 'customers = ["c-1001", "c-1002", "c-1003"]' in text
    case = parse_registry(text)
    assert case.devices["lock-b7"].building == "b-7"
    assert case.devices["lock-b7"].customers == tuple(BUILDING)
    assert case.devices["lock-b7"].customer == ""
    # a bundle of some customers names only those of the building it holds
    some = [c for c in registry.customers() if c.id == "c-1002"]
    part = registry.to_toml(some, [registry.device("lock-b7")], [])
    assert parse_registry(part).devices["lock-b7"].customers == ("c-1002",)
    # and a store reads it back as it was
    other = Registry(open_store(f"sqlite:///{tmp_path}/other.db"))
    (tmp_path / "registry.toml").write_text(text)
    other.import_toml(tmp_path / "registry.toml")
    assert other.device("lock-b7") == registry.device("lock-b7")
    other.store.close()


def test_a_bad_entrance_in_a_case_bundle_is_one_line_naming_the_field():
    base = '[[customer]]\nid = "c-1001"\n\n[[device]]\nid = "lock-b7"\nbuilding = "b-7"\n'
    key = 'public_key = "' + "00" * 32 + '"\n'
    with pytest.raises(
        KvittoError, match=r"registry.toml line 4, field customers: unknown customer"
    ):
        parse_registry(base + 'customers = ["c-404"]\nrole = "lock"\n' + key)
    with pytest.raises(KvittoError, match=r"building.*only a lock"):
        parse_registry(base + 'customers = ["c-1001"]\nrole = "tag"\n' + key)


def test_the_entrance_schedule_is_the_union_of_its_customers_windows(registry):
    rows = [
        ("c-1001", NOW + HOUR, NOW + 2 * HOUR),
        ("c-1002", NOW + 5 * HOUR, NOW + 6 * HOUR),
        ("c-1003", NOW + 9 * HOUR, NOW + 10 * HOUR),
        ("c-2001", NOW + 3 * HOUR, NOW + 4 * HOUR),  # not in the building
    ]
    registry.store.executemany(
        "INSERT INTO plan (provider, customer, start_at, end_at, activities, imported_at) "
        "VALUES ('p-1', ?, ?, ?, 'omsorg', 0)",
        rows,
    )
    x = schedule_x(registry.store, "lock-b7", NOW, days=1, tolerance_s=0)
    assert x["w"] == [
        [(NOW + h * HOUR) // 1000, (NOW + (h + 1) * HOUR) // 1000] for h in (1, 5, 9)
    ]


def entrance_bundle(tmp_path):
    """c-1001 (own tag-0042), c-1002 and c-1003 in building b-7 with entrance lock lock-b7."""
    b = standard(tmp_path, profile_activity="omsorg")
    b.customer("c-1002")
    b.customer("c-1003")
    b.order("c-1002", "omsorg")
    b.device("lock-b7", "c-1002", role="lock")
    original = b.registry_toml

    def registry_toml() -> str:
        # the builder binds a device to one customer: the entrance is the building's
        one = 'id = "lock-b7"\ncustomer = "c-1002"'
        text = original()
        assert one in text
        return text.replace(
            one, 'id = "lock-b7"\nbuilding = "b-7"\ncustomers = ["c-1001", "c-1002", "c-1003"]'
        )

    b.registry_toml = registry_toml  # type: ignore[method-assign]
    return b


def test_entrance_events_are_never_presence_for_any_customer(tmp_path):
    b = entrance_bundle(tmp_path)
    # s-07 passes the entrance, and its lock records what an apartment lock records for a
    # visit (unlock by the credential, relock, the same credential's lock on leaving): counted
    # as a lock's visit this would cover the claim at c-1002
    b.event("lock-b7", "unlock", "2026-10-01T07:59", "s-07", {"via": "badge"})
    b.event("lock-b7", "lock", "2026-10-01T08:00")
    b.event("lock-b7", "unlock", "2026-10-01T08:41", "s-07", {"via": "badge"})
    b.event("lock-b7", "lock", "2026-10-01T08:42", "s-07", {"via": "badge"})
    b.claim("k-1", "c-1002", "s-07", "omsorg", "2026-10-01T08:00", "2026-10-01T08:40")
    # at c-1001 the apartment's own tag shows the visit: the entrance changes nothing there
    b.event("lock-b7", "unlock", "2026-10-01T09:58", "s-07", {"via": "badge"})
    b.visit("tag-0042", "s-07", "2026-10-01T10:00", "2026-10-01T10:30")
    b.claim("k-2", "c-1001", "s-07", "omsorg", "2026-10-01T10:00", "2026-10-01T10:30")
    # another staff member's claim at c-1003 the entrance shows nothing of: the plain reason
    b.credential("s-08")
    b.claim("k-3", "c-1003", "s-08", "omsorg", "2026-10-01T08:00", "2026-10-01T08:40")
    result = run(b, "haninge")

    assert result.evidence is not None
    for customer in ("c-1001", "c-1002", "c-1003", ""):
        assert all(p.device != "lock-b7" for p in result.evidence.for_customer(customer))
    assert len(result.evidence.entrance) == 3
    assert not [i for i in result.evidence.issues if i.device == "lock-b7"]

    (finding,) = result.findings_for("k-1")
    assert (finding.rule, finding.outcome, finding.payable_minutes) == ("E1", "reject", 0)
    assert finding.why.code == "E1.entrance_only"
    assert "lock-b7" in finding.text("en") and "apartment" in finding.text("en")
    assert "huvudentrén" in finding.text("sv")
    assert result.findings_for("k-2") == []
    (plain,) = result.findings_for("k-3")
    assert plain.why.code == "E1.no_evidence"

    # judged over two processes, unit by unit, the same
    from kvitto.verify.check import verify_case

    spread = verify_case(tmp_path, "haninge", "2026-10", jobs=2)
    assert [(f.claim_id, f.rule, f.why) for f in spread.findings] == [
        (f.claim_id, f.rule, f.why) for f in result.findings
    ]


def test_an_entrance_lock_on_a_virtual_board_opens_in_any_customers_window(tmp_path, mosquitto):
    """Through a real Mosquitto to the real firmware: provisioned for building b-7 with three
    customers, the lock opens for s-07 in a window at one of them and denies outside all."""
    import time
    from datetime import datetime, timedelta, timezone

    from app_support import missing_firmware

    if missing_firmware():
        pytest.skip(f"device modules not landed yet: {missing_firmware()}")
    from lock_support import Unit, provisioned
    from test_lock_schedule import UID, wait_closed
    from test_lock_schedule import door as tap_door
    from test_lock_schedule import run as cli

    from kvitto.install.enroll import enroll_badge

    lock = "lock-0201"  # the id test_lock_schedule's door() reads

    def prepare(rig) -> None:
        registry = Registry(rig.store)
        device = registry.device(lock)
        assert device is not None and device.served == tuple(BUILDING)
        assert lock in {a.device_id for a in registry.mqtt_accounts()}  # its broker login
        enroll_badge(registry, rig.org.credential_salt, UID, "s-07", "p-1")
        customers = [arg for c in BUILDING for arg in ("--customer", c)]
        cli("provider", "add", "p-1", "--municipality", "haninge", *customers,
            "--store", rig.store_url)  # fmt: skip

    with provisioned(
        tmp_path, mosquitto, Unit(lock, "lock"), customer=BUILDING[0], prepare=prepare,
        building="b-7", customers=tuple(BUILDING),
    ) as rig:  # fmt: skip
        board, store, store_url = rig.boards[lock], rig.store, rig.store_url
        base = ["--store", store_url, "--device", lock]
        cli("command", "allow", *base, "--staff", "s-07")
        cli("command", "time", *base)
        cli("command", "config", *base, "relock_ms=500")
        wait_closed(store, 3)

        def plan(due: str) -> None:
            # a visit at each customer; only `due`'s is now
            now = datetime.now(timezone.utc).replace(microsecond=0)
            lines = ["customer,start,end,activities"]
            for hours, customer in enumerate(BUILDING, start=3):
                start = now - timedelta(minutes=10) if customer == due else (
                    now + timedelta(hours=hours))  # fmt: skip
                end = start + timedelta(minutes=30)
                lines.append(f"{customer},{start.isoformat()},{end.isoformat()},omsorg")
            (tmp_path / "plan.csv").write_text("\n".join(lines) + "\n")
            cli("import-plan", str(tmp_path / "plan.csv"), "--provider", "p-1",
                "--store", store_url)  # fmt: skip

        plan(due="c-1002")
        cli("command", "schedule", *base, "--days", "2", "--tolerance-min", "5")
        held = wait_closed(store, 4)
        assert held.state == "applied" and len(held.x["w"]) == 3  # all three customers'
        kind, x = tap_door(board, store)
        assert (kind, x["reason"]) == ("unlock", "window")

        store.execute("DELETE FROM plan")
        plan(due="")  # every customer's visit later today: outside all windows
        cli("command", "schedule", *base, "--days", "2", "--tolerance-min", "5")
        newest = wait_closed(store, 5)
        assert newest.state == "applied" and len(newest.x["w"]) == 3
        kind, x = tap_door(board, store)
        assert (kind, x["reason"]) == ("deny", "outside_window")
        time.sleep(1.0)


def test_an_entrance_event_marks_every_customer_of_the_building_for_judging(registry):
    from kvitto.store.db import EventRow
    from kvitto.store.stale import touch_events

    t = NOW // 1000
    row = EventRow("lock-b7", 1, 1, 0, t, 0, "unlock", None, b"", b"", NOW)
    touch_events(registry.store, [row])
    marked = {c for (c,) in registry.store.execute("SELECT DISTINCT customer FROM touched")}
    assert marked == set(BUILDING)
