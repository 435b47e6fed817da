"""`kvitto` commands that take in the devices' events: collect (the MQTT loop), ingest (a file),
and quarantine list. Each calls kvitto.collect (or kvitto.store.quarantine).
"""

from __future__ import annotations

import click

from kvitto.cli.options import FORMAT, STORE, echo_result


@click.command()
@click.option("--broker", required=True, help="mqtt://[user:pass@]host:port or mqtts://…")
@STORE
@click.option("--share", "share_group", help="Shared subscription group ($share/GROUP/…).")
@click.option(
    "--client-id",
    default="kvitto_collector",
    show_default=True,
    help="MQTT client id; needs a character no device id has ('_'). A broker from "
    "`kvitto broker-config` uses the username instead.",
)
@click.option(
    "--org-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The organisation's command key (PEM from `kvitto pki`): acks, resends, the outbox.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=2,
    show_default=True,
    help="Processes verifying signatures (0 or 1: in the collector process itself).",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate for mqtts://",
)
@click.option(
    "--interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between JSON statistics lines.",
)
@FORMAT
def collect(broker, store_url, share_group, client_id, org_key, workers, ca_file, interval,
            output_format) -> None:  # fmt: skip
    """Subscribe to device events, verify, store once, acknowledge and ask for gaps."""
    from pathlib import Path

    from kvitto.collect.live import run_collect

    run_collect(
        store_url, broker, org_key=Path(org_key) if org_key else None, share_group=share_group, client_id=client_id,
        output_format=output_format, workers=workers, ca_file=ca_file, interval=interval,
    )  # fmt: skip


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@STORE
@FORMAT
def ingest(file, store_url, output_format) -> None:
    """Store offline evidence from a CBOR sequence or JSONL file."""
    from pathlib import Path

    from kvitto.collect.intake import ingest as ingest_file
    from kvitto.store.db import open_store

    with open_store(store_url, create=False) as store:
        report = ingest_file(store, Path(file))
    reasons = ", ".join(f"{k} {v}" for k, v in report.reasons.items())
    echo_result(
        output_format,
        report,
        f"{file}: {report.messages} messages, {report.stored} stored, "
        f"{report.duplicates} already stored, {report.rejected} quarantined"
        + (f" ({reasons})" if reasons else "")
        + (f", {report.chain_broken} chain breaks" if report.chain_broken else ""),
    )


@click.group()
def quarantine() -> None:
    """Messages the collector or `kvitto ingest` refused, kept whole with the reason."""


@quarantine.command("list")
@STORE
@click.option("--device", default=None, help="Only messages that named this device.")
@click.option("--last", "limit", type=click.IntRange(1), default=None, help="Only the newest N.")
@FORMAT
def quarantine_list(store_url, device, limit, output_format) -> None:
    """Each quarantined message: when, from where (topic or file and item), device, reason."""
    from kvitto.store.quarantine import run_quarantine_list

    run_quarantine_list(store_url, device, limit, output_format)


COMMANDS = [collect, ingest, quarantine]
