"""A badge revoked at the office stops opening the door: `kvitto command allow` and `kvitto
revoke --credential` through the store's outbox, a running collector and a real Mosquitto to
a lock that is the real firmware on a virtual board, provisioned over its pty as an installer
does it. The lock journals each allowlist change, and that event closes the command."""

from __future__ import annotations

import time

import pytest
from app_support import missing_firmware
from click.testing import CliRunner
from lock_support import Unit, provisioned

from kvitto.cli import cli
from kvitto.install.enroll import enroll_badge
from kvitto.sim.board import VirtualBoard

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


def tap_and_see(board: VirtualBoard, after: int) -> str:
    """Tap the badge; the first door decision journaled after event `after`."""
    time.sleep(1.6)  # away longer than the reader's gone window: a new tap
    board.tap("badge", UID)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        decisions = [e for e in board.events(after + 1) if e["type"] in ("unlock", "deny")]
        if decisions:
            return decisions[0]["type"]
        time.sleep(0.05)
    raise AssertionError(f"no door decision; log:\n{board.log_tail()}")


def last_seq(board: VirtualBoard) -> int:
    events = board.events()
    return events[-1]["seq"] if events else 0


def test_a_revoked_badge_stops_opening_the_lock(tmp_path, mosquitto):
    def prepare(rig):
        return enroll_badge(_registry(rig.store), rig.org.credential_salt, UID, "s-07", "p-1")

    with provisioned(tmp_path, mosquitto, Unit("lock-0201", "lock"), prepare=prepare) as rig:
        board, store, store_url = rig.boards["lock-0201"], rig.store, rig.store_url
        enrolled = rig.prepared
        assert tap_and_see(board, last_seq(board)) == "deny"  # not on the allowlist yet

        runner = CliRunner()
        result = runner.invoke(
            cli,
            ["command", "allow", "--store", store_url, "--device", "lock-0201",
             "--staff", "s-07"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        wait_closed(store, 1)
        assert store.outbox()[0].state == "applied"
        assert tap_and_see(board, last_seq(board)) == "unlock"

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
        assert tap_and_see(board, last_seq(board)) == "deny"
        # the allowlist changes are evidence: signed, stored, in the lock's chain
        types = {row[1]: row[2] for row in store.events("lock-0201")}
        assert types[allowed.done_seq] == types[revoked.done_seq] == "health"
        assert all(row[5] == 1 for row in store.events("lock-0201") if row[1] > 1)


def _registry(store):
    from kvitto.store.registry import Registry

    return Registry(store)
