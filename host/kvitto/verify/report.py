"""Reports of a verification: JSON (FORMATS.md §4), CSV and a self-contained offline HTML page.

    result = verify_case(case, "huddinge", "2026-10")
    Path("out.html").write_text(render(result, "html"))   # no CDN, no script from elsewhere
    print(render(result, "csv"))

The HTML page is kvitto.verify.report_html's: Swedish first, every claim listed, every rule
explained.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kvitto.verify.case import CaseError
from kvitto.verify.check import Result, verify_case
from kvitto.verify.reasons import entry_text

FORMATS = ("json", "csv", "html")


def render(result: Result, output_format: str, lang: str = "sv") -> str:
    if output_format == "json":
        return result.as_json(lang) + "\n"
    if output_format == "csv":
        return to_csv(result, lang)
    if output_format == "html":
        from kvitto.verify.report_html import to_html as page

        return page(result, lang)
    raise ValueError(f"unknown format {output_format!r}")


def to_csv(result: Result, lang: str = "sv") -> str:
    """Two tables in one file, each with its header: findings, then the billing basis."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "profile", "month", "claim_id", "customer", "rule", "outcome",
                     "payable_minutes", "reason"])  # fmt: skip
    for f in result.findings:
        writer.writerow(["finding", result.profile, result.month, f.claim_id, f.customer, f.rule,
                         f.outcome, f.payable_minutes, f.text(lang)])  # fmt: skip
    writer.writerow([])
    writer.writerow(["section", "profile", "month", "customer", "category", "payable_minutes",
                     "count", "double_staffing_minutes", "absence_minutes"])  # fmt: skip
    for row in result.billing:
        writer.writerow(["billing", result.profile, result.month, row["customer"], row["category"],
                         row["payable_minutes"], row["count"], row.get("double_staffing_minutes", 0),
                         row.get("absence_minutes", 0)])  # fmt: skip
    if result.not_checked:
        writer.writerow([])
        writer.writerow(["section", "rule", "claim_id", "reason", "source"])
        for entry in result.not_checked:
            writer.writerow(["not_checked", entry["rule"], entry.get("claim_id", ""),
                             entry_text(entry, lang), entry.get("source", "")])  # fmt: skip
    return buffer.getvalue()


def run_verify(
    case: str,
    profile: str,
    month: str,
    output_format: str,
    out_file: str | None,
    claims: str | None = None,
    orders: str | None = None,
    pki: str | None = None,
    lang: str = "sv",
    rebuild: bool = False,
    jobs: int | None = None,
) -> None:
    """The `kvitto verify` subcommand: report to stdout or a file; KvittoError → exit 2.

    From a store, the findings kept by the last run are reused for the customer-months that
    did not change (kvitto.verify.kept; all judged again with `rebuild`); one line on stderr
    says which were judged and the findings' digest. `jobs`: processes judging a case bundle's
    month (None: every core)."""
    import sys

    if out_file and not Path(out_file).resolve().parent.is_dir():
        raise CaseError(f"--out {out_file}: folder {Path(out_file).parent} does not exist")
    if "://" in case:
        if not claims:
            raise CaseError(f"{case} is a store: give the provider's claims with --claims FILE")
        from kvitto.verify.incremental import findings_digest
        from kvitto.verify.kept import verify_store_kept

        result, judged = verify_store_kept(case, claims, profile, month, orders, pki, rebuild)
        shown = ", ".join(judged[:5]) + (
            f", … ({len(judged) - 5} more)" if len(judged) > 5 else ""
        )
        sys.stderr.write(
            f"kvitto verify: {len(judged)} customer-months judged again"
            f"{': ' + shown if judged else ''} (the rest as kept); "
            f"findings sha256 {findings_digest(result.findings)}\n"
        )
    else:
        result = verify_case(case, profile, month, pki, jobs=jobs)
    if not result.claims:
        outside = result.counts.get("claims_outside_month", 0)
        raise CaseError(
            f"--month {result.month}: none of the {outside} claims falls in this month; "
            "nothing verified (check --month against the claims' dates)"
            if outside
            else "claims.csv holds no claims: nothing to verify"
        )
    text = render(result, output_format, lang)
    if out_file:
        try:
            Path(out_file).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CaseError(f"--out {out_file}: {error.strerror or error}") from None
    else:
        sys.stdout.write(text)
