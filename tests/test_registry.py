"""The registry: devices bound once, revocations kept, credentials, MQTT accounts, TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from kvitto.errors import KvittoError
from kvitto.store.db import open_store
from kvitto.store.registry import Order, Registry, instant

KEY = bytes(range(32))
EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"


@pytest.fixture
def registry(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    yield Registry(store)
    store.close()


def test_a_device_is_bound_to_one_customer_for_good(registry):
    registry.add_customer("c-1001", household="h-17", age_group="65+")
    registry.add_customer("c-1002")
    device = registry.add_device("tag-0042", "c-1001", "tag", KEY, installed="2026-09-01")
    assert registry.device("tag-0042") == device
    assert registry.add_device("tag-0042", "c-1001", "tag", KEY) == device  # idempotent
    with pytest.raises(KvittoError, match="bound to customer c-1001"):
        registry.add_device("tag-0042", "c-1002", "tag", KEY)
    with pytest.raises(KvittoError, match="another public key"):
        registry.add_device("tag-0042", "c-1001", "tag", bytes(32))
    assert registry.device("tag-0042") == device


def test_revocation_is_kept_never_deleted(registry):
    registry.add_customer("c-1001")
    registry.add_device("tag-0042", "c-1001", "tag", KEY, installed="2026-09-01")
    revoked = registry.revoke_device("tag-0042", "2026-10-05")
    assert revoked.revoked == "2026-10-05"
    assert registry.revoke_device("tag-0042", "2026-11-01").revoked == "2026-10-05"
    assert [d.id for d in registry.devices()] == ["tag-0042"]
    assert registry.device("tag-0042").revoked_at == instant("2026-10-05T00:00:00+02:00")
    with pytest.raises(KvittoError, match="revoked"):
        registry.add_device("tag-0042", "c-1001", "tag", KEY)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("TAG_42", "c-1001", "tag", KEY), "must match"),
        (("tag-0042", "c-9999", "tag", KEY), "not registered"),
        (("tag-0042", "c-1001", "door", KEY), "role"),
        (("tag-0042", "c-1001", "tag", b"short"), "32 bytes"),
    ],
)
def test_bad_devices_are_refused_with_the_field_named(registry, args, message):
    registry.add_customer("c-1001")
    with pytest.raises(KvittoError, match=message):
        registry.add_device(*args)
    assert registry.devices() == []


def test_credentials_with_key_material_and_revocation(registry):
    cred = registry.add_credential("198F61FA6E666CA15E852132FE1190E3", "s-07", "p-1", "ntag424",
                                   key_material=b"\x01" * 16)  # fmt: skip
    assert cred.id == "198f61fa6e666ca15e852132fe1190e3"
    assert registry.credential(cred.id).key_material == b"\x01" * 16
    with pytest.raises(KvittoError, match="enrolled for s-07"):
        registry.add_credential(cred.id, "s-08", "p-1", "ntag424")
    registry.revoke_credential(cred.id, "2026-10-01")
    assert registry.credentials(provider="p-1")[0].revoked == "2026-10-01"
    assert registry.credentials(provider="p-2") == []
    with pytest.raises(KvittoError, match="32 hex"):
        registry.add_credential("xyz", "s-07", "p-1", "badge")


def test_mqtt_accounts_hold_hashes_and_leave_out_revoked_devices(registry):
    registry.add_customer("c-1001")
    registry.add_device("tag-0042", "c-1001", "tag", KEY)
    registry.add_device("tag-0043", "c-1001", "tag", bytes(32))
    registry.set_mqtt_account("tag-0042", "$7$101$c2FsdA==$aGFzaA==")
    registry.set_mqtt_account("tag-0043", "$7$101$c2FsdA==$b3RoZXI=")
    registry.revoke_device("tag-0043", "2026-01-01")
    assert [a.device_id for a in registry.mqtt_accounts()] == ["tag-0042"]
    assert len(registry.mqtt_accounts(include_revoked=True)) == 2
    with pytest.raises(KvittoError, match="not registered"):
        registry.set_mqtt_account("tag-9999", "$7$x")


def test_orders(registry):
    registry.add_customer("c-1001")
    order = Order("c-1001", "226", 1800, "2026-01-01", "2026-12-31")
    registry.add_order(order)
    assert registry.orders() == [order]


def test_toml_round_trip(registry, tmp_path):
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    registry.import_toml(EXAMPLE / "registry.toml")
    assert registry.device("tag-0042").customer == "c-1001"
    written = tmp_path / "registry.toml"
    written.write_text(registry.to_toml())
    assert tomllib.loads(written.read_text()) == tomllib.loads(
        (EXAMPLE / "registry.toml").read_text()
    )


def test_a_bad_registry_toml_names_the_entry_and_field(registry, tmp_path):
    bad = tmp_path / "registry.toml"
    bad.write_text('[[customer]]\nid = "c-1"\n\n[[device]]\nid = "tag-1"\ncustomer = "c-1"\n')
    with pytest.raises(KvittoError, match=r"\[\[device\]\] #1, field public_key"):
        registry.import_toml(bad)
    assert registry.customers() == []  # one transaction: nothing half-loaded
