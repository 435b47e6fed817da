"""What the store refused and why: `kvitto quarantine list` (the quarantine table, db.py).

Every message the collector or `kvitto ingest` did not store as evidence is kept whole in the
quarantine with its reason (a bad signature, an unknown or revoked device, a field out of range,
a message whose handling raised). This lists them for an operator, newest last.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kvitto.store.db import Store


def quarantine_list(
    store: Store, device: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The quarantined messages as plain data (the message as hex)."""
    return [
        {
            "id": int(id_),
            "received_at": _when(int(received_at)),
            "source": source,
            "device": device_,
            "seq": None if seq is None else int(seq),
            "reason": reason,
            "message": bytes(message).hex(),
        }
        for id_, received_at, source, device_, seq, reason, message in store.quarantine_rows(
            device, limit
        )
    ]


def _when(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run_quarantine_list(
    store_url: str, device: str | None, limit: int | None, output_format: str
) -> None:
    import json

    import click

    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        rows = quarantine_list(store, device, limit)
    if output_format == "json":
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("the quarantine is empty")
    for row in rows:
        seq = "" if row["seq"] is None else f"#{row['seq']}"
        click.echo(
            f"{row['id']:>6}  {row['received_at']}  {(row['device'] or '?') + seq:<24} "
            f"{row['source']}  {row['reason']}"
        )
