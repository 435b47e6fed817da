"""The end of `kvitto demo`: the demo's month in `kvitto serve`, with a login per role.

    store_url, logins = prepare_demo(outcome, profile="huddinge")   # the demo's case bundle
    serve_demo(store_url, logins, port=8000)                        # blocks until Ctrl-C

The demo's case bundle (the collector's evidence, the provider's claims, the orders) is loaded
into a new store beside it (OUT/web.db), the month judged, and three users made with random
passwords that are printed, never stored in clear: a coordinator of the demo's provider, an
auditor of its municipality and an admin.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import click

from kvitto.store.db import open_store
from kvitto.web.accounts import add_user
from kvitto.web.judge import judge
from kvitto.web.load import load_case


def prepare_demo(out: Path, provider: str, profile: str) -> tuple[str, list[tuple[str, str, str]]]:
    database = out / "web.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    now_ms = int(time.time() * 1000)
    logins: list[tuple[str, str, str]] = []
    with open_store(url) as store:
        report = load_case(store, out / "case", provider=provider, municipality=profile,
                           now_ms=now_ms)  # fmt: skip
        for month in report.months:
            judge(store, provider, month, now_ms)
        for name, role, extra in (
            (f"samordnare-{provider}", "coordinator", {"provider": provider}),
            (f"uppfoljare-{profile}", "auditor", {"municipality": profile}),
            ("admin", "admin", {}),
        ):
            password = secrets.token_urlsafe(12)
            add_user(store, name, role, password, now_ms=now_ms, **extra)
            logins.append((name, role, password))
    return url, logins


def serve_demo(url: str, logins: list[tuple[str, str, str]], host: str, port: int) -> None:
    from kvitto.web.commands import run_server

    click.echo("")
    click.echo(f"kvitto serve on the demo's month: http://{host}:{port}/")
    for name, role, password in logins:
        click.echo(f"  {role:<12} {name:<24} password {password}")
    run_server(url, host, port)


def serve_after_demo(outcome: Any, provider: str, profile: str, host: str, port: int) -> None:
    url, logins = prepare_demo(Path(outcome.out), provider, profile)
    serve_demo(url, logins, host, port)
