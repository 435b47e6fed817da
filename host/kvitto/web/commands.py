"""The web's subcommands of `kvitto`: serve, user, provider, import-claims, import-plan, judge.

    kvitto provider add p-1 --municipality huddinge --store sqlite:///kvitto.db
    kvitto user add samordnare-p1 --role coordinator --provider p-1 --store …   # asks a password
    kvitto serve --store sqlite:///kvitto.db --port 8000

kvitto.cli adds these to the `kvitto` group (`register(cli)`); each is a thin layer over the
functions of kvitto.web, and a domain error is one line and exit status 2 as everywhere else.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

_STORE = click.option(
    "--store", "store_url", default="sqlite:///kvitto.db", show_default=True,
    help="sqlite:///path.db or postgresql://…",
)  # fmt: skip
_FORMAT = click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text",
    help="text: lines for people; json: for scripts.",
)  # fmt: skip


def _now_ms() -> int:
    return int(time.time() * 1000)


@click.command()
@_STORE
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--behind-tls", is_flag=True,
    help="A TLS reverse proxy is in front: Secure cookies and HSTS (see docs/web.md).",
)  # fmt: skip
@click.option(
    "--workers", default=1, show_default=True, type=int,
    help="Server processes sharing the port (one per core).",
)  # fmt: skip
def serve(store_url: str, host: str, port: int, behind_tls: bool, workers: int) -> None:
    """Serve the web application on the store (Ctrl-C to stop).

    The cookie-signing secret comes from KVITTO_WEB_SECRET (hex or text); without it a random
    one is made at start, so everyone logs in again after a restart."""
    run_server(store_url, host, port, behind_tls, workers)


def run_server(
    store_url: str, host: str, port: int, behind_tls: bool = False, workers: int = 1
) -> None:
    import secrets

    import uvicorn

    from kvitto.store.db import open_store

    open_store(store_url, create=False).close()  # upgrade the store once, before any worker
    # every worker must sign cookies with the same secret
    os.environ.setdefault("KVITTO_WEB_SECRET", secrets.token_hex(32))
    os.environ["KVITTO_WEB_STORE"] = store_url
    os.environ["KVITTO_WEB_SECURE"] = "1" if behind_tls else "0"
    click.echo(f"kvitto serve: http://{host}:{port}/  (store {store_url}; Ctrl-C to stop)")
    uvicorn.run("kvitto.web.app:app_from_environment", factory=True, host=host, port=port,
                workers=max(1, workers), log_level="warning", proxy_headers=behind_tls,
                forwarded_allow_ips="127.0.0.1")  # fmt: skip


@click.group()
def user() -> None:
    """Users of kvitto serve: role accounts or pseudonyms, never a person's name."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["coordinator", "auditor", "admin"]), required=True,
              help="What the account may do.")  # fmt: skip
@click.option("--provider", default="", help="The coordinator's provider.")
@click.option("--municipality", default="", help="The auditor's municipality (profile name).")
@click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True,
    envvar="KVITTO_PASSWORD", help="Asked for when not given (or KVITTO_PASSWORD).",
)  # fmt: skip
@_STORE
@_FORMAT
def user_add(name, role, provider, municipality, password, store_url, output_format) -> None:
    """Add a user (the password is hashed with Argon2id)."""
    from kvitto.store.db import open_store
    from kvitto.web.accounts import add_user
    from kvitto.web.records import append

    with open_store(store_url, create=False) as store:
        added = add_user(store, name, role, password, provider=provider,
                         municipality=municipality, now_ms=_now_ms())  # fmt: skip
        append(store, chain="admin", actor="kvitto user add", kind="user_add", at=_now_ms(),
               body={"name": added.name, "role": added.role, "provider": added.provider,
                     "municipality": added.municipality})  # fmt: skip
    if output_format == "json":
        click.echo(json.dumps(added.__dict__))
    else:
        click.echo(f"user {added.name}: {added.role} {added.provider or added.municipality}")


@user.command("list")
@_STORE
@_FORMAT
def user_list(store_url, output_format) -> None:
    """List the users: name, role, provider or municipality."""
    from kvitto.store.db import open_store
    from kvitto.web.accounts import users

    with open_store(store_url, create=False) as store:
        found = users(store)
    if output_format == "json":
        click.echo(json.dumps([u.__dict__ for u in found]))
    for u in found if output_format == "text" else []:
        click.echo(f"{u.name}\t{u.role}\t{u.provider or u.municipality}")


@click.group()
def provider() -> None:
    """Providers [utförare] and their customers."""


@provider.command("add")
@click.argument("provider_id")
@click.option("--municipality", required=True, help="Profile name: huddinge, norrtalje, …")
@click.option("--customer", "customers", multiple=True, help="A customer it serves (repeatable).")
@click.option(
    "--alarm-duty/--no-alarm-duty",
    default=None,
    help="It answers the municipality's safety alarms: an open alarm opens the customer's "
    "locks to its credentials.",
)
@_STORE
def provider_add(provider_id, municipality, customers, alarm_duty, store_url) -> None:
    """Add a provider (or move it to another municipality) and assign customers to it."""
    from kvitto.store.db import open_store
    from kvitto.web.accounts import add_provider, assign_customers

    with open_store(store_url, create=False) as store:
        add_provider(store, provider_id, municipality, alarm_duty)
        assign_customers(store, provider_id, list(customers))
    click.echo(f"provider {provider_id}: {municipality}, {len(customers)} customers assigned")


@click.command("import-claims")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--provider", "provider_id", required=True, help="Provider pseudonym, e.g. p-1.")
@_STORE
def import_claims_command(file, provider_id, store_url) -> None:
    """Store a provider's claims.csv (FORMATS.md §3) and judge its months."""
    from kvitto.store.db import open_store
    from kvitto.web.claims import import_claims
    from kvitto.web.judge import judge, judged_months, provider_profile

    with open_store(store_url, create=False) as store:
        count = import_claims(store, provider_id, Path(file), provider_profile(store, provider_id),
                              _now_ms())  # fmt: skip
        for month in judged_months(store, provider_id):
            judge(store, provider_id, month, _now_ms())
    click.echo(f"{file}: {count} claims stored for {provider_id}")


@click.command("import-plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--provider", "provider_id", required=True, help="Provider pseudonym, e.g. p-1.")
@_STORE
def import_plan_command(file, provider_id, store_url) -> None:
    """Store the provider's planned visits (docs/formats.md, plan.csv v1)."""
    from kvitto.store.db import open_store
    from kvitto.web.plan import import_plan

    with open_store(store_url, create=False) as store:
        count = import_plan(store, provider_id, Path(file), _now_ms())
    click.echo(f"{file}: {count} planned visits stored for {provider_id}")


@click.command("judge")
@click.option("--provider", "provider_id", help="Provider pseudonym, e.g. p-1.")
@click.option("--month", help="YYYY-MM")
@click.option(
    "--live", is_flag=True,
    help="Keep judging: every judged month's customers changed since (new events, claims, "
    "corrections, decisions), until Ctrl-C.",
)  # fmt: skip
@click.option(
    "--interval", default=0.5, show_default=True, type=float,
    help="With --live: seconds between looks for changes.",
)  # fmt: skip
@_STORE
def judge_command(provider_id, month, live, interval, store_url) -> None:
    """Judge a provider's whole month again (every rule across every household), or with
    --live only what changed, as it changes."""
    from kvitto.errors import KvittoError
    from kvitto.store.db import open_store
    from kvitto.web.judge import judge
    from kvitto.web.live import LiveJudge

    if not live and not (provider_id and month):
        raise KvittoError("judge: give --provider and --month, or --live")
    with open_store(store_url, create=False) as store:
        if not live:
            count = judge(store, provider_id, month, _now_ms())
            click.echo(f"{provider_id} {month}: {count} findings")
            return
        click.echo(f"kvitto judge --live: {store_url} (Ctrl-C to stop)")
        live_judge = LiveJudge(store)  # keeps the months' events and claims between rounds
        try:
            while True:
                for (provider, judged_month), customers in live_judge.round(_now_ms()).items():
                    click.echo(f"{provider} {judged_month}: {len(customers)} customers judged")
                time.sleep(interval)
        except KeyboardInterrupt:
            return


def register(group: click.Group) -> None:
    for command in (serve, user, provider, import_claims_command, import_plan_command,
                    judge_command):  # fmt: skip
        group.add_command(command)
