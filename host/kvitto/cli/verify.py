"""`kvitto` commands that turn the store into a verdict: export-case (a case bundle from the
store) and verify (the rules over a bundle, the report). Each calls kvitto.verify.
"""

from __future__ import annotations

import click

from kvitto.cli.options import FORMAT, STORE, echo_result


@click.command("export-case")
@STORE
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--provider", help="Only this provider's credentials.")
@click.option(
    "--claims",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The provider's claims.csv (columns: docs/formats.md, case bundle), copied as it is.",
)
@click.option(
    "--orders",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="orders.csv: customer, activity, granted_minutes_month, … (docs/formats.md).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="The case bundle folder to write (kvitto verify reads it).",
)
@FORMAT
def export_case(store_url, month, provider, claims, orders, out, output_format) -> None:
    """Write the case bundle (FORMATS.md §3) for one provider's month."""
    from pathlib import Path

    from kvitto.store.db import open_store
    from kvitto.verify.export import export_case as write_case

    with open_store(store_url, create=False) as store:
        result = write_case(
            store, month, Path(out), provider=provider, claims=Path(claims), orders=Path(orders)
        )
    echo_result(
        output_format,
        result,
        f"{out}: {result.customers} customers, {result.devices} devices, "
        f"{result.credentials} credentials, {result.events} events for {month}",
    )


@click.command()
@click.argument("case")
@click.option("--profile", required=True, help="Municipality profile (norrtalje, huddinge, …).")
@click.option("--month", required=True, help="YYYY-MM: the month whose claims are verified.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "csv", "html"]),
    default="json",
    show_default=True,
    help="json (FORMATS.md §4, for programs), csv (findings and billing basis) or html (a "
    "page for auditors, offline).",
)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the report here instead of standard output.",
)
@click.option(
    "--claims",
    default=None,
    type=click.Path(dir_okay=False),
    help="With a store URL as CASE: the provider's claims.csv.",
)
@click.option(
    "--orders",
    default=None,
    type=click.Path(dir_okay=False),
    help="With a store URL as CASE: orders.csv instead of the store's orders.",
)
@click.option(
    "--pki",
    "pki_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="`kvitto pki` folder: its NTAG 424 keys check badge SUNs the registry has no keys for.",
)
@click.option(
    "--lang",
    type=click.Choice(["sv", "en"]),
    default="sv",
    show_default=True,
    help="Language of the report's words (HTML headings; reasons in every format): Swedish first.",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="With a store URL as CASE: judge every customer-month again instead of reusing the "
    "findings the last run kept for those that did not change.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes judging a case bundle's month (default: every core); the report is the same.",
)
def verify(
    case, profile, month, output_format, out_file, claims, orders, pki_dir, lang, rebuild, jobs
) -> None:
    """Check claims against signed evidence under a municipality's rules.

    CASE is a case bundle folder, or a store URL (sqlite:///…, postgresql://…) with --claims;
    from a store only the customer-months changed since the last run are judged again.
    """
    from kvitto.verify.report import run_verify

    run_verify(
        case, profile, month, output_format, out_file, claims, orders, pki_dir, lang, rebuild, jobs
    )


COMMANDS = [export_case, verify]
