"""Provisioned virtual boards for the lock tests (issue #23): the real firmware on virtual boards,
provisioned over their pty as an installer does it, a store, and a running collector with the
org's command key on a real Mosquitto; plus `until`, the polling wait those tests share.

    with provisioned(tmp_path, mosquitto, Unit("lock-0201", "lock")) as rig:
        rig.boards["lock-0201"].tap("badge", UID)
        until(lambda: rig.store.events("lock-0201"), "the lock's events")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvitto.collect.collector import Collector
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
