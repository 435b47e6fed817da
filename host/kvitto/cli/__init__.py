"""The `kvitto` command: a thin layer over the Python API, one function per subcommand.

$ kvitto verify case/ --profile norrtalje --month 2026-10 --format json
$ kvitto demo
$ python -m kvitto --help

The group and `main` live here; the commands, one module per domain: install, registry,
collect, verify, fleet, sim (and kvitto.web.commands adds the web's). Each module lists its
top-level commands in COMMANDS.
"""

from __future__ import annotations

import sys

import click

from kvitto import __version__
from kvitto.cli import collect, fleet, install, registry, sim, verify
from kvitto.cli.options import not_built
from kvitto.errors import KvittoError

__all__ = ["cli", "main", "not_built"]


class _Commands(click.Group):
    """The group, with issue #20's spelling `kvitto provision sticker …` for the command
    `kvitto provision-sticker …` (`provision` itself needs a board's serial port and options,
    so the sticker is a command of its own: docs/decisions.md)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args[:2] == ["provision", "sticker"]:
            args = ["provision-sticker", *args[2:]]
        return super().resolve_command(ctx, args)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvitto")
def cli() -> None:
    """kvitto: signed evidence of home-care visits, from the door device to the billing basis."""


def _web_commands() -> None:
    """serve, user, provider, import-claims, import-plan, judge: kvitto.web's commands."""
    from kvitto.web.commands import register

    register(cli)


for _module in (install, registry, collect, verify, sim, fleet):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
_web_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="kvitto", standalone_mode=False)
    except KvittoError as error:
        click.echo(f"kvitto: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("kvitto: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
