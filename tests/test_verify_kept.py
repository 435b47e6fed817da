"""`kvitto verify` from a store reuses the findings it kept and judges again only what changed:
new events (marked by the intake) or a changed claims file; its findings always equal a full
run's (verify_store, `--rebuild`). Fixed seed, bounded steps."""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta

from verify_support import CLAIM_FIELDS, STOCKHOLM, Bundle

from kvitto.cli import main
from kvitto.collect.intake import ingest
from kvitto.store.db import open_store
from kvitto.store.registry import Registry
from kvitto.verify.check import verify_store
from kvitto.verify.incremental import findings_digest
from kvitto.verify.kept import verify_store_kept

MONTH = "2026-11"
CUSTOMERS = {"c-1001": "h-1", "c-1002": "h-1", "c-1003": "", "c-1004": "", "c-1005": ""}
STAFF = ("s-07", "s-08", "s-09")


def _store(tmp_path, rng: random.Random) -> tuple[str, Bundle]:
    b = Bundle(tmp_path / "case", start_boot_at="2026-11-01T06:00")
    for customer, household in CUSTOMERS.items():
        b.customer(customer, household=household)
        b.device(f"tag-{customer[2:]}", customer)
        b.order(customer, "omsorg")
    for staff in STAFF:
        b.credential(staff, provider="p-1")
    for number in range(12):
        customer = f"c-100{number % 5 + 1}"
        staff = rng.choice(STAFF)
        start = datetime(2026, 11, 2 + number, 8 + number % 3, tzinfo=STOCKHOLM)
        end = start + timedelta(minutes=30)
        b.visit(f"tag-{customer[2:]}", staff, start.isoformat(), end.isoformat())
        b.claim(f"k-{number}", customer, staff, "omsorg", start.isoformat(),
                (end + timedelta(minutes=rng.choice((0, 15)))).isoformat())  # fmt: skip
    case = b.write()
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    with open_store(url) as store:
        Registry(store).import_toml(case / "registry.toml")
        ingest(store, case / "evidence.cbor-seq")
    return url, b


def _claims(b: Bundle) -> None:
    with open(b.root / "claims.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, CLAIM_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(b.claims)


def test_kept_findings_equal_a_full_run_and_only_changes_are_judged(tmp_path):
    rng = random.Random(21)
    url, b = _store(tmp_path, rng)
    claims = b.root / "claims.csv"

    def both() -> list[str]:
        result, judged = verify_store_kept(url, claims, "huddinge", MONTH)
        full = verify_store(url, claims, "huddinge", MONTH)
        assert findings_digest(result.findings) == findings_digest(full.findings)
        assert result.findings == full.findings  # the same order too
        assert result.billing == full.billing
        return judged

    assert both() == sorted(CUSTOMERS)  # the first run judges the month whole
    assert both() == []  # nothing changed: all kept
    for step in range(8):
        if step % 2 == 0:  # late evidence at one customer, through the intake
            customer = rng.choice(sorted(CUSTOMERS))
            first = len(b.messages)
            start = datetime(2026, 11, 20 + step, 9, tzinfo=STOCKHOLM)
            b.visit(f"tag-{customer[2:]}", rng.choice(STAFF), start.isoformat(),
                    (start + timedelta(minutes=20)).isoformat())  # fmt: skip
            path = tmp_path / f"late-{step}.cbor-seq"
            path.write_bytes(b"".join(b.messages[first:]))
            with open_store(url) as store:
                ingest(store, path)
            judged = both()
            household = {c for c, h in CUSTOMERS.items() if h and h == CUSTOMERS[customer]}
            assert set(judged) == {customer} | household
        else:  # a claim in the file changed: its customer and the staff's other customers
            row = rng.choice(b.claims)
            row["end"] = (datetime.fromisoformat(row["end"]) + timedelta(minutes=10)).isoformat()
            _claims(b)
            judged = both()
            staff = {r["staff"] for r in b.claims if r["customer"] == row["customer"]}
            reach = {r["customer"] for r in b.claims if r["staff"] in staff}
            household = {c for c, h in CUSTOMERS.items() if h and h == CUSTOMERS[row["customer"]]}
            assert set(judged) == reach | household | {row["customer"]}


def test_verify_says_what_it_judged_again_and_rebuild_judges_all(tmp_path, capsys):
    url, b = _store(tmp_path, random.Random(3))
    command = ["verify", url, "--claims", str(b.root / "claims.csv"), "--profile", "huddinge",
               "--month", MONTH]  # fmt: skip
    main(command)
    first = capsys.readouterr()
    assert "5 customer-months judged again" in first.err
    main(command)
    again = capsys.readouterr()
    assert "0 customer-months judged again" in again.err
    assert again.out == first.out
    digest = again.err.rsplit("sha256 ", 1)[1].strip()
    main([*command, "--rebuild"])
    rebuilt = capsys.readouterr()
    assert "5 customer-months judged again" in rebuilt.err
    assert rebuilt.err.rsplit("sha256 ", 1)[1].strip() == digest
    assert rebuilt.out == first.out


def _x6(findings, claim_id: str) -> list[str]:
    return [f.outcome for f in findings if f.claim_id == claim_id and f.rule == "X6"]


def test_x6_reads_last_months_claims_and_a_change_to_them_makes_the_month_stale(tmp_path, capsys):
    """Norrköping X6 (004 "ersättning från fjärde dagen"): an urgent need begun 29 October is
    on its fourth and fifth day on 1 and 2 November, paid as granted from 1 November. The
    kept verdict reads October's claims of the need: changing them judges the customer again,
    equal to a full run and to `--rebuild`."""
    url, b = _store(tmp_path, random.Random(5))
    b.order("c-1003", "egenvard", 600, valid_from="2026-11-01")
    for day in ("2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"):
        b.claim(f"u-{day[5:]}", "c-1003", "s-10", "egenvard", f"{day}T10:00", f"{day}T10:30",
                reason="bradskande", registered_via="manual", registered_at=f"{day}T11:00")  # fmt: skip
    claims = b.root / "claims.csv"
    _claims(b)
    orders = b.root / "orders.csv"
    b.write()
    assert orders.exists()

    def both() -> tuple[list[str], object]:
        result, judged = verify_store_kept(url, claims, "norrkoping", MONTH, orders=orders)
        full = verify_store(url, claims, "norrkoping", MONTH, orders=orders)
        assert result.findings == full.findings
        assert result.billing == full.billing
        return judged, result

    judged, result = both()
    assert judged == sorted(CUSTOMERS)
    assert _x6(result.findings, "u-11-01") == [] and _x6(result.findings, "u-11-02") == []
    assert both()[0] == []
    # October's first day of the need was not urgent after all: 1 November is day 3
    first = next(row for row in b.claims if row["claim_id"] == "u-10-29")
    first["reason"] = ""
    _claims(b)
    judged, result = both()
    assert "c-1003" in judged  # stale by its October claims alone
    assert _x6(result.findings, "u-11-01") == ["reject"]
    assert _x6(result.findings, "u-11-02") == []
    # the incremental answer is the rebuilt one (one more change, then the CLI both ways)
    first["reason"] = "bradskande"
    _claims(b)
    command = ["verify", url, "--claims", str(claims), "--orders", str(orders), "--profile",
               "norrkoping", "--month", MONTH]  # fmt: skip
    main(command)
    incremental = capsys.readouterr()
    assert "customer-months judged again" in incremental.err
    assert "customer-months judged again" in incremental.err
    main([*command, "--rebuild"])
    rebuilt = capsys.readouterr()
    assert rebuilt.out == incremental.out
    assert rebuilt.err.rsplit("sha256 ", 1)[1] == incremental.err.rsplit("sha256 ", 1)[1]
