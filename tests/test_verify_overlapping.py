"""Issue #25.6: a claims file of many overlapping rows is refused while it is read, and the
rules' own work over overlapping rows stays linear (sort and sweep; bench/verify.py part 3
measures 1,000,000 rows)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import kvitto.verify.case_csv
from kvitto.verify.check import verify_case

# The bench's own bundle (the demo day's claims, every copy overlapping the others), so the
# test and bench/verify.py's 1,000,000-row figure measure the same file. Loaded by path, as
# test_mutants loads bench/mutants.py: bench/ on sys.path would shadow the firmware's `device`.
_spec = importlib.util.spec_from_file_location(
    "kvitto_bench_verify", Path(__file__).resolve().parent.parent / "bench" / "verify.py"
)
assert _spec is not None and _spec.loader is not None
bench_verify = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench_verify  # dataclasses look their module up while the class is made
_spec.loader.exec_module(bench_verify)
case = bench_verify.overlapping_case


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
