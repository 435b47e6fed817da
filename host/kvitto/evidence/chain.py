"""The stream of one device: sequence numbers without gaps or repeats, and the hash chain
(each event's `prev` is the SHA-256 of the payload before it; RULES.md I3, I4).
"""

from __future__ import annotations

from collections.abc import Iterable

from kvitto.evidence.cose import (
    BootRegression,
    BrokenChain,
    SequenceGap,
    SequenceRepeat,
    WrongDevice,
)
from kvitto.evidence.events import Event, verify_event

# -- the stream of one device --------------------------------------------------------------------


class ChainChecker:
    """Checks one device's events in sequence order, one at a time (the collector's view).

    checker = ChainChecker()              # or ChainChecker("tag-0042", last_seq=41, last_hash=h)
    for event in events: checker.check(event)   # raises a ChainError subclass
    """

    def __init__(
        self, dev: str | None = None, last_seq: int = 0, last_hash: bytes | None = None
    ) -> None:
        self.dev = dev
        self.last_seq = last_seq
        self.last_hash = (
            last_hash if last_hash is not None else (bytes(32) if not last_seq else None)
        )
        self.last_boot: int | None = None
        self.last_up: int | None = None

    def check(self, event: Event) -> None:
        where = f"{event.dev} seq {event.seq}"
        if self.dev is not None and event.dev != self.dev:
            raise WrongDevice(f"{where}: in the stream of {self.dev}")
        if event.seq == 1 and event.prev != bytes(32):
            raise BrokenChain(f"{where}: the first event's prev must be 32 zero bytes")
        started = self.last_seq > 0 or self.last_boot is not None
        if started:
            if event.seq <= self.last_seq:
                raise SequenceRepeat(
                    f"{where}: sequence repeats or goes back (after {self.last_seq})"
                )
            if event.seq != self.last_seq + 1:
                raise SequenceGap(
                    f"{where}: events {self.last_seq + 1}..{event.seq - 1} are missing"
                )
        if self.last_hash is not None and (started or event.seq == 1):
            if event.prev != self.last_hash:
                raise BrokenChain(
                    f"{where}: prev is not SHA-256 of event {event.seq - 1}'s payload"
                )
        if self.last_boot is not None and self.last_up is not None:
            if event.boot < self.last_boot:
                raise BootRegression(f"{where}: boot {event.boot} after boot {self.last_boot}")
            if event.boot == self.last_boot and event.up < self.last_up:
                raise BootRegression(f"{where}: uptime goes back within boot {event.boot}")
        self.dev = event.dev
        self.last_seq = event.seq
        self.last_hash = event.hash
        self.last_boot = event.boot
        self.last_up = event.up


def check_stream(events: Iterable[Event]) -> int:
    """Check sequence (+1 each, no repeats), chain (prev = SHA-256 of the previous payload),
    one device and non-decreasing boot/uptime. A stream may start anywhere (a month's excerpt);
    if it starts at seq 1, prev must be zeros. Returns the number of events checked."""
    checker = ChainChecker()
    count = 0
    for event in events:
        checker.check(event)
        count += 1
    return count


def verify_stream(messages: Iterable[bytes], public_key: bytes) -> list[Event]:
    """Verify each message and check the sequence and chain over them (one device)."""
    events = [verify_event(message, public_key) for message in messages]
    check_stream(events)
    return events
