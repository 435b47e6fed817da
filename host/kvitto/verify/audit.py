"""The signature re-check of a bundle's events on every core (issue #21, offline audit).

    for message, event in verified_events(messages, keys, jobs=2):   # in the messages' order
        ...   # event: the Event EventVerifier decides, or None (verify_event names why)

Each process checks whole chunks of messages with kvitto.evidence.events.EventVerifier and
sends the Events back in order; what comes after (duplicates, chains, clocks, pairing) stays
in the caller, in the order of the messages, so the evidence is the same for any number of
processes. A bundle of a chunk or two is checked in this process: starting others would cost
more than it saves.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import chain, islice

from kvitto.evidence.events import Event, EventVerifier

CHUNK = 1000  # messages a process checks at a time

_KEYS: dict[str, bytes] = {}  # a worker's device keys, set once by _start


def _start(keys: dict[str, bytes]) -> None:
    global _KEYS
    _KEYS = keys


def _check(messages: list[bytes]) -> list[Event | None]:
    verifier = EventVerifier(_KEYS.get)
    events = [verifier.event(message) for message in messages]
    for event in events:
        if event is not None:
            # the caller has the message: not sent back (a third of the bytes to unpickle)
            object.__setattr__(event, "message", b"")
    return events


def _chunks(messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    items = iter(messages)
    while chunk := list(islice(items, CHUNK)):
        yield chunk


def verified_events(
    messages: Iterable[bytes], keys: dict[str, bytes], jobs: int = 1
) -> Iterator[tuple[bytes, Event | None]]:
    """(message, its Event or None) for each message in order, checked over `jobs` processes;
    `keys`: each registered device's Ed25519 public key."""
    chunks = _chunks(messages)
    first = next(chunks, [])
    second = next(chunks, None)
    if jobs <= 1 or second is None:
        verifier = EventVerifier(keys.get)
        for chunk in chain([first, second or []], chunks):
            for message in chunk:
                yield message, verifier.event(message)
        return
    # fork: the workers start at once with the keys (nothing else of theirs is touched)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start,
                             initargs=(keys,)) as pool:  # fmt: skip
        pending: deque[tuple[list[bytes], Future[list[Event | None]]]] = deque()
        for chunk in chain([first, second], chunks):
            pending.append((chunk, pool.submit(_check, chunk)))
            while len(pending) > 2 * jobs:
                done, events = pending.popleft()
                yield from _rejoined(done, events.result())
        while pending:
            done, events = pending.popleft()
            yield from _rejoined(done, events.result())


def _rejoined(
    messages: list[bytes], events: list[Event | None]
) -> Iterator[tuple[bytes, Event | None]]:
    for message, event in zip(messages, events):
        if event is not None:
            object.__setattr__(event, "message", message)  # as EventVerifier made it
        yield message, event
