"""Every `kvitto …` command in README.md and docs/ runs as pasted (#24 item 8): each one is
parsed by the real click command (known subcommand, known options, valid choices, required
options present) with placeholders forbidden (`<id>`, `…`, `a|b`, `[optional]`), and the
installer's office steps are run for real, in order, in an empty folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from cli_support import run_kvitto

from kvitto.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[<>…|\[\]]|\.\.\.")


def commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of each `kvitto` line in the file's fenced code blocks, with
    its continuation lines joined and its comment dropped."""
    found: list[tuple[int, str]] = []
    inside = False
    pending = ""
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        text = line.strip()
        if pending:
            pending += " " + text
        elif text.startswith(("kvitto ", "$ kvitto ")):
            pending, start = text.removeprefix("$ "), number
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        found.append((start, pending))
        pending = ""
    return found


ALL = [(path, number, text) for path in DOCS for number, text in commands(path)]


def words(text: str) -> list[str]:
    return shlex.split(text, comments=True)[1:]


def parse(argv: list[str]) -> None:
    """Parse like `kvitto` does, without running anything."""
    command: click.Command = cli
    name = "kvitto"
    while isinstance(command, click.Group):
        assert argv, f"{name}: a subcommand is missing"
        try:  # as click resolves it when run (`kvitto provision sticker` included)
            found, sub, rest = command.resolve_command(click.Context(command), argv)
        except click.UsageError:
            found, sub, rest = None, None, argv
        assert sub is not None, f"{name}: no subcommand {argv[0]!r}"
        name, command, argv = f"{name} {found}", sub, rest
    from click.testing import CliRunner

    try:
        with CliRunner().isolation(input="password\npassword\n"):  # what a prompt asks
            command.make_context(name, list(argv))
    except click.BadParameter as error:
        if "does not exist" not in error.format_message():  # a file the reader makes first
            raise


def test_the_docs_have_commands():
    assert len(ALL) > 20


@pytest.mark.parametrize(("path", "number", "text"), ALL, ids=[f"{p.name}:{n}" for p, n, _ in ALL])
def test_each_documented_command_parses_as_pasted(path, number, text):
    argv = words(text)
    code = " ".join(argv)
    assert not PLACEHOLDER.search(code), f"{path.name}:{number}: a placeholder in {code!r}"
    parse(argv)


RUNNABLE = ("pki", "init", "enroll", "revoke", "registry", "command")


def test_the_installers_office_steps_run_in_order(tmp_path, monkeypatch):
    """docs/installer.md's organisation, staff and lock steps, executed as written."""
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    monkeypatch.chdir(tmp_path)
    guide = ROOT / "docs" / "installer.md"
    ran = []
    locks_registered = False
    for number, text in commands(guide):
        argv = words(text)
        if argv[0] not in RUNNABLE:
            continue
        if "lock-0201" in argv and not locks_registered:
            # the guide's lock was provisioned on its board (hardware): registered as it would be
            with open_store("sqlite:///kvitto.db", create=False) as store:
                registry = Registry(store)
                registry.add_customer("c-1001")
                registry.add_device("lock-0201", "c-1001", "lock", bytes(range(32)))
            locks_registered = True
        code, out, err = run_kvitto(argv)
        assert code == 0, f"installer.md:{number}: {text}\n{err}"
        ran.append(argv[0])
    assert {"pki", "init", "enroll", "revoke", "command"} <= set(ran)
