"""Run `kvitto` as a user does, in-process: through `kvitto.cli.main`, which maps a
KvittoError to one line on stderr and exit status 2.

    code, out, err = run_kvitto(["verify", "--case", "c"], env={"X": "1"})
"""

from __future__ import annotations

import contextlib
import io
import os
from unittest import mock

from kvitto.cli import main


def run_kvitto(
    argv: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.dict(os.environ, env or {}),
        mock.patch("sys.stdin", io.StringIO(stdin)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue(), err.getvalue()
