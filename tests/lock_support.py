"""Provisioned virtual boards for the lock tests (issue #23): the real firmware on virtual boards,
provisioned over their pty as an installer does it, a store, and a running collector with the
org's command key on a real Mosquitto; plus `until`, the polling wait those tests share.

    with provisioned(tmp_path, mosquitto, Unit("lock-0201", "lock")) as rig:
        rig.boards["lock-0201"].tap("badge", UID)
        until(lambda: rig.store.events("lock-0201"), "the lock's events")
        kind, x = door(rig.boards["lock-0201"], rig.store, UID)  # ("unlock", {...})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvitto.collect.collector import Collector
from kvitto.evidence.cose import split_sign1
from kvitto.evidence.events import decode_payload
from kvitto.install.pki import ensure_org
from kvitto.install.provision import Provisioning, provision
from kvitto.sim.board import VirtualBoard
from kvitto.store.db import Store, open_store
from kvitto.store.keys import OrgKeys, load_command_key


def until(check, what: str, timeout: float = 60.0):
    """Poll `check` every 0.2 s until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


DECISIONS = ("unlock", "deny", "depart")


def _seen(board: VirtualBoard, store: Store, after: int) -> list[tuple[str, dict]]:
    """The lock's tap outcomes after sequence `after`, in order: from its journal and from the
    store, because the journal drops what the collector acknowledged, often within
    milliseconds: a poll of the journal alone can miss the event it waits for."""
    found = {e["seq"]: (e["type"], e["x"]) for e in board.events(after + 1)}
    for _, seq, kind, *_, message in store.events(board.device):
        if seq > after and seq not in found:
            x = decode_payload(split_sign1(message)[2]).x
            found[seq] = (kind, {k: v.hex() if isinstance(v, bytes) else v for k, v in x.items()})
    return [found[seq] for seq in sorted(found) if found[seq][0] in DECISIONS]


def door(board: VirtualBoard, store: Store, uid: str) -> tuple[str, dict]:
    """Tap the badge `uid` at the lock until the door decides, and return the unlock or deny
    event's (type, x). A tap that closes the credential's open visit is not a decision of the
    door: tap once more. After an unlock, wait until the door (relock_ms=500) locked again."""
    for _ in range(3):
        journal, stored = board.events(), store.events(board.device)
        after = max([e["seq"] for e in journal[-1:]] + [row[1] for row in stored[-1:]] + [0])
        time.sleep(1.6)  # away longer than the reader's gone window (800 ms): a new tap
        board.tap("badge", uid)
        deadline = time.monotonic() + 30
        while not (found := _seen(board, store, after)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no door decision; log:\n{board.log_tail()}")
            time.sleep(0.05)
        kind, x = found[0]
        if kind != "depart":
            if kind == "unlock":
                time.sleep(0.8)  # relock_ms=500: locked again before the next tap
            return kind, x
    raise AssertionError(f"{uid} only departs")


@dataclass(frozen=True)
class Unit:
    """One virtual board to provision: its device id, role and, if not sim.json, board JSON."""

    device: str
    role: str
    board: Path | None = None


@dataclass
class Rig:
    """What `provisioned` yields. `prepared` is what its `prepare` returned."""

    boards: dict[str, VirtualBoard]
    store_url: str
    org: OrgKeys
    store: Store
    collector: Collector | None = None
    prepared: Any = None


@contextmanager
def provisioned(
    tmp_path: Path,
    mosquitto,
    *units: Unit,
    customer: str = "c-1001",
    prepare: Callable[[Rig], Any] | None = None,
    **options: Any,
) -> Iterator[Rig]:
    """Start the `units`' boards, provision each for `customer` (with extra Provisioning
    `options`, e.g. building= and customers= for an entrance lock) into a new SQLite store,
    reset them, wait until they are up; then `prepare(rig)` (enrolment, providers: what must
    be in the store before the collector starts) and yield with the collector running."""
    pki = tmp_path / "pki"
    org = ensure_org(pki)
    store_url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(store_url).close()  # `kvitto init`
    broker = (mosquitto.host, mosquitto.port)
    with ExitStack() as stack:
        boards = {
            unit.device: stack.enter_context(
                VirtualBoard(
                    tmp_path / unit.role, unit.device, unit.role, broker=broker,
                    provision=False, proxy=False, board=unit.board,
                )
            )
            for unit in units
        }  # fmt: skip
        for unit in units:
            board = boards[unit.device]
            board.wait_ready(60, app=False)
            provision(
                Provisioning(
                    port=board.serial_port, device=unit.device, customer=customer,
                    role=unit.role, board="sim", store_url=store_url, pki_dir=pki,
                    broker_host=mosquitto.host, broker_port=mosquitto.port, ntp=[],
                    label_dir=tmp_path / "labels", reset=False, **options,
                )
            )  # fmt: skip
            board.reset()
        for board in boards.values():
            board.wait_ready(60)
        store = open_store(store_url)
        stack.callback(store.close)
        rig = Rig(boards, store_url, org, store)
        if prepare is not None:
            rig.prepared = prepare(rig)
        collector = Collector(
            open_store(store_url), mosquitto.url, load_command_key(pki), outbox_interval=0.2
        )
        collector.start()
        stack.callback(collector.store.close)
        stack.callback(collector.stop)
        rig.collector = collector
        collector.wait_ready()
        yield rig
