"""What the `kvitto` commands share: the options several of them take, spelled once, and how a
command prints what it did."""

from __future__ import annotations

import json
from typing import Any

import click

from kvitto.errors import NotBuiltError


def echo_result(output_format: str, result: Any, line: str) -> None:
    """What a command did: `result.as_dict()` as JSON for programs, else one line for people."""
    click.echo(json.dumps(result.as_dict()) if output_format == "json" else line)


def not_built(command: str, issue: str) -> None:
    raise NotBuiltError(f"'kvitto {command}' is not built yet (planned in the issue '{issue}')")


# Options several subcommands share, spelled once.
FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: lines for people; json: one JSON object for scripts.",
)


REGISTRY = click.option(
    "--store", "store_url", required=True, help="Registry store URL (sqlite:///path)."
)


STORE = click.option(
    "--store", "store_url", required=True, help="sqlite:///path.db or postgresql://…"
)


DEVICES = click.option("--device", "devices", multiple=True, help="Device id (repeatable).")


CREDENTIALS = click.option(
    "--credential", "credentials", multiple=True, help="Credential id, 32 hex (repeatable)."
)


STAFF = click.option(
    "--staff", multiple=True, help="Staff pseudonym: all their live credentials (repeatable)."
)


BOARD = click.option("--board", required=True, help="Board name (boards/<name>.json) or file.")


PORT = click.option(
    "--port", default=None, help="Serial port (default: the one ESP32 USB bridge)."
)
