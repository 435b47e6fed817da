"""Issue #25.6: a claims file of many overlapping rows is refused while it is read, and the
rules' own work over overlapping rows stays linear (sort and sweep; bench/verify.py part 3
measures 1,000,000 rows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kvitto.verify.case_csv
from kvitto.verify.check import verify_case

DAY = [  # the demo day's claims (kvitto demo): every copy overlaps the others
    ("c-2001", "s-01", "omsorg", "07:30", "08:15", "lock", ""),
    ("c-2001", "s-02", "omsorg", "07:32", "08:15", "lock", "1"),
    ("c-1001", "s-03", "omsorg", "09:00", "09:40", "tag", ""),
    ("c-1002", "s-03", "omsorg", "09:40", "10:05", "tag", ""),
    ("c-2001", "s-04", "tillsyn", "11:14", "11:35", "alarm_unit", ""),
    ("c-1001", "s-01", "avbojt-besok", "12:00", "12:01", "tag", ""),
    ("c-1002", "s-04", "omsorg", "13:00", "13:30", "tag", ""),
    ("c-1001", "s-02", "omsorg", "15:00", "16:10", "tag", ""),
    ("c-1002", "s-01", "omsorg", "16:30", "17:00", "manual", ""),
    ("c-1002", "s-02", "omsorg", "22:30", "22:50", "tag", ""),
    ("c-2001", "s-02", "tillsyn", "02:31", "02:48", "alarm_unit", ""),
    ("c-1001", "s-01", "paklaedning", "19:00", "19:20", "manual", ""),
]


def case(root: Path, rows: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    registry = []
    for customer in ("c-1001", "c-1002", "c-2001"):
        registry += ["[[customer]]", f'id = "{customer}"']
    for number in range(1, 5):
        registry += ["[[credential]]", f'id = "{number:032x}"', f'staff = "s-0{number}"',
                     'provider = "p-1"', 'kind = "badge"']  # fmt: skip
    (root / "registry.toml").write_text("\n".join(registry) + "\n")
    orders = ["customer,activity,granted_minutes_month,valid_from,valid_to,double_staffing,"
              "tag_exempt"]  # fmt: skip
    for customer in ("c-1001", "c-1002", "c-2001"):
        for activity in ("omsorg", "tillsyn", "paklaedning"):
            orders.append(f"{customer},{activity},3000,2026-01-01,,1,0")
    (root / "orders.csv").write_text("\n".join(orders) + "\n")
    lines = ["claim_id,customer,staff,activity,start,end,registered_via,registered_at,"
             "approved_at,adjusted_at,double_staffing,count,reason,planned_start,planned_end,"
             "notified_at,proof"]  # fmt: skip
    for number in range(rows):
        customer, staff, activity, start, end, via, double = DAY[number % len(DAY)]
        day = "2026-11-11T"
        lines.append(f"x{number:07d},{customer},{staff},{activity},{day}{start},{day}{end},"
                     f"{via},{day}{end},{day}18:00,,{double},,,,,,")  # fmt: skip
    (root / "claims.csv").write_text("\n".join(lines) + "\n")
    (root / "evidence.cbor-seq").write_bytes(b"")  # no events: the claims alone are the load
    return root


def test_20k_overlapping_rows_are_refused_with_one_clear_line(tmp_path):
    folder = case(tmp_path / "case", 20_000)
    run = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(folder), "--profile", "huddinge",
         "--month", "2026-11"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "claims.csv line" in lines[0] and "field customer" in lines[0]
    assert "more than 500 claim rows for c-2001 on 2026-11-11" in lines[0]


def test_a_busy_day_under_the_bound_is_verified(tmp_path):
    # 40 copies of the day: 160 rows at c-2001 on one day, under the bound; S2 still pays
    # one of each double-staffed pair and rejects the rest of the copies
    result = verify_case(case(tmp_path / "case", 480), "huddinge", "2026-11")
    assert len(result.claims) == 480
    s2 = [f for f in result.findings if f.rule == "S2" and f.outcome == "reject"]
    assert s2 and all(f.customer in ("c-2001", "c-1001", "c-1002") for f in s2)


def test_20k_overlapping_rows_complete_when_the_bound_is_lifted(tmp_path, monkeypatch):
    """Without the refusal the rules still finish: no pairwise work over the rows."""
    monkeypatch.setattr(kvitto.verify.case_csv, "MAX_CLAIMS_PER_CUSTOMER_DAY", 10**9)
    result = verify_case(case(tmp_path / "case", 20_000), "huddinge", "2026-11")
    assert len(result.claims) == 20_000
    rejected = {f.claim_id for f in result.findings if f.rule == "S2" and f.outcome == "reject"}
    copies = [c for c in result.claims if c.customer == "c-2001" and c.activity == "omsorg"]
    # the 07:30 visit registered by s-01 first: every s-02 copy is the second registration
    assert {c.staff for c in copies if c.claim_id in rejected} == {"s-02"}
    assert sum(1 for c in copies if c.staff == "s-02" and c.claim_id not in rejected) == 0
