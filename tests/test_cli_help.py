"""Every `kvitto` command and option explains itself in --help (#24 item 17): a new option
without help text fails here."""

from __future__ import annotations

import click

from kvitto.cli import cli


def walk(command: click.Command, path: str = "kvitto"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    missing = []
    for path, command in walk(cli):
        if not (command.help or command.short_help):
            missing.append(f"{path}: no docstring")
        for parameter in command.params:
            if isinstance(parameter, click.Option) and not parameter.hidden:
                if not parameter.help and parameter.name not in ("help", "version"):
                    missing.append(f"{path} {parameter.opts[0]}")
    assert missing == []
