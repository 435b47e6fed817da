"""The signature re-check of a bundle's events on every core (issue #21, offline audit).

    for message, event in verified_events(messages, keys, jobs=2):   # in the messages' order
        ...   # event: the Event EventVerifier decides, or None (verify_event names why)

Each worker process checks whole chunks of messages with kvitto.evidence.events.EventVerifier
and sends the Events back; chunk i goes to worker i mod N and comes back from it in turn, so
the Events arrive in the messages' order and what comes after (duplicates, chains, clocks,
pairing) stays in the caller, one pass in that order: the evidence is the same for any number
of processes. Workers are plain processes with a pipe each way (no pool's feeder and manager
threads in the parent, the third consumer of the cores), started once per bundle, never more
than the cores this process may use; an error in one is raised to the caller. A bundle of a
chunk or two is checked in this process: starting others would cost more than it saves.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from multiprocessing.connection import Connection

from kvitto.evidence.events import Event, EventVerifier

CHUNK = 1000  # messages a process checks at a time
IN_FLIGHT = 2  # chunks handed to each worker ahead of the one being read back


def audit_cores() -> int:
    """The cores this process may run on (its affinity where the system says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _serve(inbox: Connection, outbox: Connection, keys: dict[str, bytes]) -> None:
    """A worker: chunks of messages in, their Events (or None) out, until None comes. A thread
    empties the inbox as chunks come, so the parent's send never waits on this worker's own
    send of a result (each is larger than a pipe holds: both would wait for ever)."""
    # what a forked worker inherits is never the collector's to walk (nor to copy, page by page)
    gc.freeze()
    chunks: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            chunk = inbox.recv()
            chunks.put(chunk)
            if chunk is None:
                return

    threading.Thread(target=receive, daemon=True).start()
    verifier = EventVerifier(keys.get)
    failed = False
    while (messages := chunks.get()) is not None:
        if failed:
            continue  # the inbox still read: the parent may be sending until it takes the error
        try:
            events = [verifier.event(message) for message in messages]
        except Exception as error:  # raised in the parent, as one process would raise it
            outbox.send(error)
            failed = True
            continue
        for event in events:
            if event is not None:
                # the parent has the message: not sent back (a third of the bytes to unpickle)
                object.__setattr__(event, "message", b"")
        outbox.send(events)
    outbox.close()


def _chunks(messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    items = iter(messages)
    while chunk := list(islice(items, CHUNK)):
        yield chunk


def verified_events(
    messages: Iterable[bytes], keys: dict[str, bytes], jobs: int = 1
) -> Iterator[tuple[bytes, Event | None]]:
    """(message, its Event or None) for each message in order, checked over `jobs` processes
    (at most the cores available); `keys`: each registered device's Ed25519 public key."""
    jobs = min(jobs, audit_cores())  # more processes than cores only add their overhead
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
    fork = "fork" in methods
    context = multiprocessing.get_context("fork") if fork else multiprocessing.get_context("spawn")
    workers = []
    try:
        for _ in range(jobs):
            inbox, to_worker = context.Pipe(duplex=False)
            from_worker, outbox = context.Pipe(duplex=False)
            process = context.Process(target=_serve, args=(inbox, outbox, keys), daemon=True)
            process.start()
            inbox.close()
            outbox.close()
            workers.append((process, to_worker, from_worker))
        # chunk number n goes to worker n % jobs; read back in the same turn: in order
        pending: deque[tuple[list[bytes], Connection]] = deque()
        for number, chunk in enumerate(chain([first, second], chunks)):
            _, to_worker, from_worker = workers[number % jobs]
            to_worker.send(chunk)
            pending.append((chunk, from_worker))
            while len(pending) > IN_FLIGHT * jobs:
                yield from _rejoined(*pending.popleft())
        while pending:
            yield from _rejoined(*pending.popleft())
        for process, to_worker, _ in workers:
            to_worker.send(None)
            process.join()
    finally:
        for process, to_worker, from_worker in workers:
            if process.is_alive():  # the caller stopped early, or something failed
                process.terminate()
                process.join()
            to_worker.close()
            from_worker.close()


def _rejoined(
    messages: list[bytes], connection: Connection
) -> Iterator[tuple[bytes, Event | None]]:
    # A chunk's Events unpickled with the collector paused: they hold no cycles, and its passes
    # over every object made so far were a quarter of the parent's cost of taking them.
    paused = gc.isenabled()
    gc.disable()
    try:
        events: list[Event | None] | Exception = connection.recv()
    finally:
        if paused:
            gc.enable()
    if isinstance(events, Exception):
        raise events
    for message, event in zip(messages, events, strict=True):
        if event is not None:
            object.__setattr__(event, "message", message)  # as EventVerifier made it
        yield message, event
