"""A lock's tolerance, fallback and door-open limit come from the municipality profile of its
customers' provider (issue #23, the profiles' [lock] table): `kvitto command schedule` without
--tolerance-min sends the profile's tolerance and says so; the option overrides it."""

from __future__ import annotations

import json

import pytest
from cli_support import run_kvitto
from collect_support import FakeDevice

from kvitto.store.db import open_store
from kvitto.store.entrance import add_entrance_lock
from kvitto.store.registry import Registry
from kvitto.verify.rules import PROFILES, available_profiles, load_profile
from kvitto.web.accounts import add_provider, assign_customers

HOUR = 3_600_000


@pytest.fixture
def url(tmp_path):
    """Two providers in two municipalities whose profiles differ in tolerance: Haninge's (15
    minutes) and a copy of it allowing 5; a lock at a customer of each, one at a customer no
    provider serves yet, and an entrance lock serving customers of both."""
    strict = tmp_path / "strict.toml"
    text = (PROFILES / "haninge.toml").read_text(encoding="utf-8")
    assert "\ntolerance_min = 15\n" in text
    strict.write_text(text.replace("\ntolerance_min = 15\n", "\ntolerance_min = 5\n"), "utf-8")
    url = f"sqlite:///{tmp_path}/kvitto.db"
    store = open_store(url)
    registry = Registry(store)
    for customer, lock in (("c-1001", "lock-0201"), ("c-2001", "lock-0301"),
                           ("c-3001", "lock-0401")):  # fmt: skip
        registry.add_customer(customer)
        registry.add_device(lock, customer, "lock", FakeDevice(lock).public_key)
    add_entrance_lock(registry, "lock-b7", "b-7", ["c-1001", "c-2001"],
                      FakeDevice("lock-b7").public_key)  # fmt: skip
    add_provider(store, "p-1", "haninge")
    assign_customers(store, "p-1", ["c-1001"])
    add_provider(store, "p-2", str(strict))
    assign_customers(store, "p-2", ["c-2001"])
    store.close()
    return url


def _tolerances(url):
    with open_store(url, create=False) as store:
        return {row.device: row.x["tol"] for row in store.outbox() if row.type == "schedule"}


def test_every_profile_states_its_lock_settings():
    for name in available_profiles():
        text = (PROFILES / f"{name}.toml").read_text(encoding="utf-8")
        assert "\n[lock]\nsource = " in text, name  # stated, with its source, never implicit
        lock = load_profile(name).lock
        assert 0 <= lock.tolerance_min <= 120 and 10 <= lock.door_open_s <= 86400
        assert lock.fallback in ("open_for_allowed", "deny")


def test_schedule_takes_the_tolerance_of_the_customers_profile(url, tmp_path):
    code, out, err = run_kvitto(["command", "schedule", "--store", url, "--device", "lock-0201",
                                 "--device", "lock-0301", "--device", "lock-0401"])  # fmt: skip
    assert code == 0, err
    assert _tolerances(url) == {"lock-0201": 900, "lock-0301": 300, "lock-0401": 900}
    lines = out.splitlines()
    assert "±15 min (profile haninge)" in lines[0]
    assert f"±5 min (profile {tmp_path / 'strict.toml'})" in lines[2]  # after a no-plan note
    assert "±15 min (kvitto's defaults: no provider serves c-3001 yet)" in out


def test_the_option_overrides_the_profile_and_says_so(url):
    code, out, err = run_kvitto(["command", "schedule", "--store", url, "--device", "lock-0301",
                                 "--tolerance-min", "30", "--format", "json"])  # fmt: skip
    assert code == 0, err
    [queued] = json.loads(out)
    assert queued["tolerance_from"] == "--tolerance-min"
    assert _tolerances(url) == {"lock-0301": 1800}


def test_an_entrance_lock_across_two_profiles_needs_the_option(url):
    code, out, err = run_kvitto(["command", "schedule", "--store", url, "--device", "lock-b7"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "different municipality profiles" in err
    assert _tolerances(url) == {}
    code, out, err = run_kvitto(["command", "schedule", "--store", url, "--device", "lock-b7",
                                 "--tolerance-min", "10"])  # fmt: skip
    assert code == 0, err
    assert _tolerances(url) == {"lock-b7": 600}
