"""A badge revoked at the office stops opening the door: `kvitto command allow` and `kvitto
revoke --credential` through the store's outbox, a running collector and a real Mosquitto to
a lock that is the real firmware on a virtual board, provisioned over its pty as an installer
does it. The lock journals each allowlist change, and that event closes the command."""

from __future__ import annotations

import time

import pytest
from app_support import missing_firmware
from click.testing import CliRunner
from lock_support import Unit, door, provisioned, until

from kvitto.cli import cli
from kvitto.install.enroll import enroll_badge

pytestmark = pytest.mark.skipif(
    bool(missing_firmware()), reason=f"device modules not landed yet: {missing_firmware()}"
)

UID = "04a1b2c3"


def wait_closed(store, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.outbox()
        if len(rows) == count and all(row.done_at is not None for row in rows):
            return
        time.sleep(0.1)
    raise AssertionError(f"outbox not closed: {[(r.id, r.type, r.state) for r in rows]}")


def test_a_revoked_badge_stops_opening_the_lock(tmp_path, mosquitto):
    def prepare(rig):
        return enroll_badge(_registry(rig.store), rig.org.credential_salt, UID, "s-07", "p-1")

    with provisioned(tmp_path, mosquitto, Unit("lock-0201", "lock"), prepare=prepare) as rig:
        board, store, store_url = rig.boards["lock-0201"], rig.store, rig.store_url
        enrolled = rig.prepared
        assert door(board, store, UID)[0] == "deny"  # not on the allowlist yet

        runner = CliRunner()
        result = runner.invoke(
            cli,
            ["command", "allow", "--store", store_url, "--device", "lock-0201",
             "--staff", "s-07"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        wait_closed(store, 1)
        assert store.outbox()[0].state == "applied"
        assert door(board, store, UID)[0] == "unlock"

        result = runner.invoke(
            cli, ["revoke", "--store", store_url, "--credential", enrolled.credential_id]
        )
        assert result.exit_code == 0, result.output
        assert "queued `revoke` for 1 lock" in result.output
        wait_closed(store, 2)
        [allowed, revoked] = store.outbox()
        assert revoked.type == "revoke" and revoked.state == "applied"
        assert revoked.done_seq is not None and allowed.done_seq is not None
        assert revoked.done_seq > allowed.done_seq
        # the visit the unlock opened is closed by the next tap (a depart, no strike); then
        # the revoked badge is refused
        assert door(board, store, UID)[0] == "deny"

        def stored_after_revoke():
            types = [row[2] for row in store.events("lock-0201") if row[1] > revoked.done_seq]
            return types if "deny" in types else None

        after_revoke = until(stored_after_revoke, "the deny stored")
        assert after_revoke.count("depart") == 1 and "unlock" not in after_revoke
        # the allowlist changes are evidence: signed, stored, in the lock's chain
        types = {row[1]: row[2] for row in store.events("lock-0201")}
        assert types[allowed.done_seq] == types[revoked.done_seq] == "health"
        assert all(row[5] == 1 for row in store.events("lock-0201") if row[1] > 1)


def _registry(store):
    from kvitto.store.registry import Registry

    return Registry(store)
