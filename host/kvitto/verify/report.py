"""Reports of a verification: JSON (FORMATS.md §4), CSV and a self-contained offline HTML page.

    result = verify_case(case, "huddinge", "2026-10")
    Path("out.html").write_text(render(result, "html"))   # no CDN, no script from elsewhere
    print(render(result, "csv"))

The HTML shows each customer's month as a timeline: one row per day, claims above the
evidence (presence intervals at the customer's door), deviations marked by outcome.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kvitto.verify.case import CaseError
from kvitto.verify.check import Result, verify_case, verify_store
from kvitto.verify.workdays import STOCKHOLM, local, month_bounds, parse_month

FORMATS = ("json", "csv", "html")


def render(result: Result, output_format: str) -> str:
    if output_format == "json":
        return result.as_json() + "\n"
    if output_format == "csv":
        return to_csv(result)
    if output_format == "html":
        return to_html(result)
    raise ValueError(f"unknown format {output_format!r}")


def to_csv(result: Result) -> str:
    """Two tables in one file, each with its header: findings, then the billing basis."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "profile", "month", "claim_id", "customer", "rule", "outcome",
                     "payable_minutes", "reason"])  # fmt: skip
    for f in result.findings:
        writer.writerow(["finding", result.profile, result.month, f.claim_id, f.customer, f.rule,
                         f.outcome, f.payable_minutes, f.reason])  # fmt: skip
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
                             entry["reason"], entry.get("source", "")])  # fmt: skip
    return buffer.getvalue()


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.day{display:flex;align-items:center;height:26px}.date{width:7em;font-size:12px}
.track{position:relative;flex:1;height:24px;background:repeating-linear-gradient(90deg,#f4f4f4 0,#f4f4f4 calc(100%/24 - 1px),#e2e2e2 calc(100%/24 - 1px),#e2e2e2 calc(100%/24))}
.bar{position:absolute;height:10px;border-radius:2px;min-width:2px}
.claim{top:1px;background:#3a7bd5}.evidence{top:13px;background:#2e9e5b}
.open{background:repeating-linear-gradient(45deg,#2e9e5b 0,#2e9e5b 3px,#fff 3px,#fff 6px)}
.reject{background:#c62828;outline:2px solid #7f0000}.adjust{background:#ef8f00}.follow_up{background:#8e44ad}
.legend span{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px}
"""


def _position(moment: datetime, day_start: datetime, day_end: datetime) -> float:
    # Through UTC: a day with a daylight-saving change has 23 or 25 hours.
    utc = timezone.utc
    seconds = (moment.astimezone(utc) - day_start.astimezone(utc)).total_seconds()
    length = (day_end.astimezone(utc) - day_start.astimezone(utc)).total_seconds()
    return max(0.0, min(100.0, 100 * seconds / length))


def to_html(result: Result) -> str:
    year, month = parse_month(result.month)
    first, after = month_bounds(year, month)
    worst: dict[str, str] = {}
    rank = {"follow_up": 1, "adjust": 2, "reject": 3}
    by_claim: dict[str, list[str]] = defaultdict(list)
    for f in result.findings:
        by_claim[f.claim_id].append(f"{f.rule} {f.outcome}: {f.reason}")
        if rank[f.outcome] > rank.get(worst.get(f.claim_id, ""), 0):
            worst[f.claim_id] = f.outcome
    customers = sorted({c.customer for c in result.claims})
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>kvitto verify {html.escape(result.profile)} {result.month}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Verification {html.escape(result.profile)}, {result.month}</h1>",
        f"<p>{len(result.claims)} claims, {len(result.findings)} findings, "
        f"{len(result.integrity)} evidence issues. Times are Europe/Stockholm.</p>",
        "<p class='legend'><span class='bar claim' style='position:static'></span>claim"
        "<span class='bar evidence' style='position:static'></span>evidence at the door"
        "<span class='bar reject' style='position:static'></span>reject"
        "<span class='bar adjust' style='position:static'></span>adjust"
        "<span class='bar follow_up' style='position:static'></span>follow-up</p>",
    ]
    presences = result.evidence.by_customer if result.evidence else {}
    for customer in customers:
        out.append(f"<h2>{html.escape(customer)}</h2>")
        claims = [c for c in result.claims if c.customer == customer]
        day = first
        while day < after:
            following = day.date() + timedelta(days=1)
            day_end = datetime(following.year, following.month, following.day, tzinfo=STOCKHOLM)
            bars = []
            for c in claims:
                if c.end < day or c.start >= day_end:
                    continue
                left = _position(max(c.start, day), day, day_end)
                right = _position(min(c.end, day_end), day, day_end)
                css = worst.get(c.claim_id, "")
                tip = f"{c.claim_id} {c.activity} {local(c.start):%H:%M}–{local(c.end):%H:%M}"
                if by_claim.get(c.claim_id):
                    tip += " | " + " | ".join(by_claim[c.claim_id])
                bars.append(
                    f"<div class='bar claim {css}' style='left:{left:.2f}%;width:{max(right - left, 0.2):.2f}%'"
                    f" title='{html.escape(tip, quote=True)}'></div>"
                )
            for p in presences.get(customer, []):
                end = p.end or p.start + timedelta(minutes=30)
                if end < day or p.start >= day_end:
                    continue
                left = _position(max(p.start, day), day, day_end)
                right = _position(min(end, day_end), day, day_end)
                css = "open" if p.end is None else ""
                tip = (f"{p.device} {p.kind} {p.staff or p.credential[:8] or 'alarm unit'} "
                       f"{local(p.start):%H:%M}–{local(p.end):%H:%M}" if p.end else
                       f"{p.device} open visit from {local(p.start):%H:%M}")  # fmt: skip
                bars.append(
                    f"<div class='bar evidence {css}' style='left:{left:.2f}%;width:{max(right - left, 0.2):.2f}%'"
                    f" title='{html.escape(tip, quote=True)}'></div>"
                )
            if bars:
                out.append(
                    f"<div class='day'><div class='date'>{day:%a %d %b}</div>"
                    f"<div class='track'>{''.join(bars)}</div></div>"
                )
            day = day_end
        rows = [f for f in result.findings if f.customer == customer]
        if rows:
            out.append("<table><tr><th>claim</th><th>rule</th><th>outcome</th><th>payable</th>"
                       "<th>reason</th></tr>")  # fmt: skip
            for f in rows:
                out.append(
                    f"<tr class='{f.outcome}-row'><td>{html.escape(f.claim_id)}</td><td>{f.rule}</td>"
                    f"<td>{f.outcome}</td><td>{f.payable_minutes}</td><td>{html.escape(f.reason)}</td></tr>"
                )
            out.append("</table>")
    out.append("<h2>Billing basis</h2><table><tr><th>customer</th><th>category</th>"
               "<th>payable minutes</th><th>count</th><th>double staffing min</th>"
               "<th>absence min</th></tr>")  # fmt: skip
    for row in result.billing:
        out.append(
            f"<tr><td>{html.escape(row['customer'])}</td><td>{html.escape(row['category'])}</td>"
            f"<td>{row['payable_minutes']}</td><td>{row['count']}</td>"
            f"<td>{row.get('double_staffing_minutes', 0)}</td>"
            f"<td>{row.get('absence_minutes', 0)}</td></tr>"
        )
    out.append("</table>")
    if result.not_checked:
        out.append("<h2>Not checked</h2><ul>")
        for entry in result.not_checked:
            source = f" ({html.escape(entry['source'])})" if entry.get("source") else ""
            out.append(f"<li>{entry['rule']} {html.escape(entry.get('claim_id', ''))}: "
                       f"{html.escape(entry['reason'])}{source}</li>")  # fmt: skip
        out.append("</ul>")
    if result.integrity:
        out.append("<h2>Evidence issues</h2><ul>")
        for issue in result.integrity:
            out.append(f"<li>{issue['rule']} {html.escape(str(issue['device']))} seq {issue['seq']}: "
                       f"{html.escape(issue['reason'])}</li>")  # fmt: skip
        out.append("</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


def run_verify(
    case: str,
    profile: str,
    month: str,
    output_format: str,
    out_file: str | None,
    claims: str | None = None,
    orders: str | None = None,
    pki: str | None = None,
) -> None:
    """The `kvitto verify` subcommand: report to stdout or a file; KvittoError → exit 2."""
    import sys

    if out_file and not Path(out_file).resolve().parent.is_dir():
        raise CaseError(f"--out {out_file}: folder {Path(out_file).parent} does not exist")
    if "://" in case:
        if not claims:
            raise CaseError(f"{case} is a store: give the provider's claims with --claims FILE")
        result = verify_store(case, claims, profile, month, orders, pki)
    else:
        result = verify_case(case, profile, month, pki)
    if not result.claims:
        outside = result.counts.get("claims_outside_month", 0)
        raise CaseError(
            f"--month {result.month}: none of the {outside} claims falls in this month; "
            "nothing verified (check --month against the claims' dates)"
            if outside
            else "claims.csv holds no claims: nothing to verify"
        )
    text = render(result, output_format)
    if out_file:
        try:
            Path(out_file).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CaseError(f"--out {out_file}: {error.strerror or error}") from None
    else:
        sys.stdout.write(text)
