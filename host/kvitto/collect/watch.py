"""What an operator watches of the collector: its counters (Stats: `kvitto collect`'s live view and
Collector.stats()) and one log line per quarantined message, rate-limited (QuarantineLog).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kvitto.store.db import QuarantineRow

log = logging.getLogger("kvitto.collect")


@dataclass
class Stats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    chain_broken: int = 0
    acks_sent: int = 0
    resends_sent: int = 0
    commands_sent: int = 0  # from the store's outbox (kvitto command), attempts included
    commands_done: int = 0  # outbox commands the devices' events showed obeyed or refused
    gaps_open: int = 0
    connected: bool = False
    subscribed: bool = False
    disconnects: int = 0  # connections lost (a broker that closed ours: another took the id?)
    reasons: dict[str, int] = field(default_factory=dict)
    devices_online: int = 0
    events_per_second: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, reasons=dict(self.reasons))


class QuarantineLog:
    """One log line per quarantined message (reason, device, topic), at most `burst` lines per
    `window` seconds: a flood of forgeries must not flood the log. What the limit held back is
    counted in one line when lines are allowed again; `kvitto quarantine list` has them all."""

    def __init__(self, burst: int = 20, window: float = 60.0, clock=time.monotonic):
        self.burst = burst
        self.window = window
        self.clock = clock
        self._window_start = -window
        self._lines = 0
        self.held_back = 0

    def __call__(self, rows: list[QuarantineRow]) -> None:
        for row in rows:
            now = self.clock()
            if now - self._window_start >= self.window:
                if self.held_back:
                    log.warning(
                        "%d more quarantined messages were not logged (at most %d lines per "
                        "%g s); `kvitto quarantine list` shows them",
                        self.held_back, self.burst, self.window,
                    )  # fmt: skip
                self._window_start, self._lines, self.held_back = now, 0, 0
            if self._lines >= self.burst:
                self.held_back += 1
                continue
            self._lines += 1
            log.warning(
                "quarantined: %s (device %s, topic %s)",
                row.reason, row.device or "unknown", row.source,
            )  # fmt: skip
