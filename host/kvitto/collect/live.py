"""The `kvitto collect` loop: a collector until SIGTERM, with a live view or JSON lines.

Each quarantined message is one log line on stderr (rate-limited, watch.QuarantineLog);
output that is not a terminal gets plain lines, each flushed as it is written."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kvitto.collect.collector import COLLECTOR_CLIENT_ID, Collector, load_org_key
from kvitto.collect.watch import Stats
from kvitto.errors import KvittoError

# -- the `kvitto collect` loop: live view or JSON lines, until SIGTERM --------------------


def run_collect(
    store_url: str,
    broker_url: str,
    *,
    org_key: Path | None = None,
    share_group: str | None = None,
    client_id: str = COLLECTOR_CLIENT_ID,
    output_format: str = "text",
    workers: int = 0,
    ca_file: str | None = None,
    interval: float = 5.0,
    duration: float | None = None,
) -> Stats:
    """Collect until SIGTERM/SIGINT (or `duration` seconds); returns the final statistics.

    text: a live table (rich) on a terminal, else one flushed summary line per `interval`
    seconds; json: one statistics object per `interval` seconds on stdout, and a last one after
    the clean shutdown. Quarantined messages: log lines on stderr.
    """
    import json
    import signal
    import sys

    from kvitto.store.db import open_store

    _log_to_stderr()
    org_secret = load_org_key(org_key) if org_key else None
    store = open_store(store_url)
    if org_secret is None:
        print(
            "kvitto collect: no --org-key, so events are stored but devices get no ack or "
            "resend commands (their journals keep everything)",
            file=sys.stderr,
        )
        waiting = len(store.outbox(open_only=True))
        if waiting:
            print(
                f"kvitto collect: {waiting} queued command(s) in the outbox wait for a "
                "collector with --org-key (`kvitto command list --open`)",
                file=sys.stderr,
            )
    collector = Collector(
        store,
        broker_url,
        org_secret,
        client_id=client_id,
        share_group=share_group,
        workers=workers,
        ca_file=ca_file,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    deadline = None if duration is None else time.monotonic() + duration
    try:
        collector.start()
        if output_format == "json":
            while not stop.wait(interval if deadline is None else min(interval, 0.2)):
                if collector.error or (deadline and time.monotonic() > deadline):
                    break
                print(json.dumps(collector.stats().as_dict()), flush=True)
        elif sys.stdout.isatty():
            _live_view(collector, stop, deadline)
        else:
            _plain_lines(collector, stop, deadline, interval)
    finally:
        collector.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
    if collector.error is not None:
        if isinstance(collector.error, KvittoError):
            raise collector.error
        raise KvittoError(f"collector stopped: {collector.error!r}")
    final = collector.stats()
    if output_format == "json":
        print(json.dumps(dict(final.as_dict(), final=True)), flush=True)
    return final


def _log_to_stderr() -> None:
    """kvitto's log lines (one per quarantined message) on stderr, unless the program embedding
    the collector set up logging itself. A StreamHandler flushes after every line."""
    logger = logging.getLogger("kvitto")
    if logger.handlers or logging.getLogger().handlers:
        return
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _summary(stats: Stats) -> str:
    rejected = ", ".join(f"{k} {v}" for k, v in stats.reasons.items()) or "0"
    return (
        f"{'connected' if stats.connected else 'connecting'} (lost {stats.disconnects}), "
        f"{stats.devices_online} devices "
        f"online, {stats.stored} stored, {stats.duplicates} duplicates, {stats.gaps_open} gaps "
        f"open, {stats.acks_sent} acks, {stats.chain_broken} chain breaks, rejected {rejected}"
    )


def _plain_lines(
    collector: Collector, stop: threading.Event, deadline: float | None, interval: float
) -> None:
    """The live view for a file or pipe: one flushed line per `interval` seconds."""
    print(f"kvitto collect: {collector.broker_address}", flush=True)
    while not stop.wait(interval if deadline is None else min(interval, 0.2)):
        if collector.error or (deadline and time.monotonic() > deadline):
            break
        print(time.strftime("%H:%M:%S ") + _summary(collector.stats()), flush=True)
    print(time.strftime("%H:%M:%S ") + _summary(collector.stats()), flush=True)


def _live_view(collector: Collector, stop: threading.Event, deadline: float | None) -> None:
    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        stats = collector.stats()
        view = Table(title=f"kvitto collect · {collector.broker_address}", show_header=False)
        rows = [
            ("broker", "connected" if stats.connected else "connecting…"),
            ("connections lost", str(stats.disconnects)),
            ("devices online", str(stats.devices_online)),
            ("events/s", f"{stats.events_per_second:.0f}"),
            ("stored", str(stats.stored)),
            ("duplicates", str(stats.duplicates)),
            ("gaps open", str(stats.gaps_open)),
            ("resends asked", str(stats.resends_sent)),
            ("acks sent", str(stats.acks_sent)),
            ("commands sent / done", f"{stats.commands_sent} / {stats.commands_done}"),
            ("chain breaks", str(stats.chain_broken)),
            ("rejected", ", ".join(f"{k} {v}" for k, v in stats.reasons.items()) or "0"),
        ]
        for name, value in rows:
            view.add_row(name, value)
        return view

    with Live(table(), refresh_per_second=2) as live:
        while not stop.wait(0.5):
            live.update(table())
            if collector.error or (deadline and time.monotonic() > deadline):
                break
