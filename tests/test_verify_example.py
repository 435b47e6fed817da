"""The shared example (an independent encoder's bundle) gives exactly expected.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvitto.verify.check import verify_case

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"


def example_dirs() -> list:
    if not EXAMPLES.exists():  # said, not an empty parameter set that pytest skips silently
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"shared examples not beside the checkout ({EXAMPLES})"))]  # fmt: skip
    return sorted(p for p in EXAMPLES.iterdir() if (p / "expected.json").exists())


@pytest.mark.parametrize("case", example_dirs(), ids=lambda p: p.name if p else "missing")
def test_example_gives_expected_findings(case: Path):
    expected = json.loads((case / "expected.json").read_text())
    meta = expected["meta"]
    result = verify_case(case, meta["profile"], meta["month"])
    for entry in expected["expect"]:
        found = result.findings_for(entry["claim_id"])
        if entry.get("none"):
            assert found == [], f"{entry['claim_id']}: expected no finding, got {found}"
            continue
        assert sorted({f.rule for f in found}) == sorted(entry["rule"]), (entry, found)
        assert {f.outcome for f in found} == {entry["outcome"]}, (entry, found)


def test_example_through_the_command(tmp_path):
    case = EXAMPLES / "case-minimal"
    if not case.exists():
        pytest.skip("shared examples not beside the checkout")
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", "norrtalje",
         "--month", "2026-10", "--format", "json", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    document = json.loads(out.read_text())
    assert document["profile"] == "norrtalje" and document["month"] == "2026-10"
    assert {(f["claim_id"], f["rule"], f["outcome"]) for f in document["findings"]} == {
        ("e-2", "E1", "reject"),
        ("e-3", "T1", "follow_up"),  # RULES.md T1 corrected: Norrtälje 000 §1.2.9
    }
    for finding in document["findings"]:
        # FORMATS.md §4's keys, and the section of the profile's document (issue #18)
        # the reason in words (--lang, Swedish by default) and as its code and parameters
        assert set(finding) == {
            "claim_id", "customer", "rule", "outcome", "payable_minutes", "reason", "source",
            "reason_code", "reason_args",
        }  # fmt: skip
    assert {f["rule"]: f["source"] for f in document["findings"]} == {
        "E1": "000 §1.2.1, §1.2.2.1, §1.2.2.4, §1.2.3.1, §1.2.4.2.1, §1.2.5.2.1",
        "T1": "000 §1.2.9",
    }
    assert document["billing"] == [
        # e-1 27 min + e-3 13 min: e-3's night visit is follow_up, payable (RULES.md T1)
        {"customer": "c-1001", "category": "hemtjanst", "payable_minutes": 27 + 13, "count": 0,
         "double_staffing_minutes": 0, "absence_minutes": 0}
    ]  # fmt: skip


def test_unusable_input_exits_2_naming_file_line_field(tmp_path):
    case = EXAMPLES / "case-minimal"
    if not case.exists():
        pytest.skip("shared examples not beside the checkout")
    broken = tmp_path / "case"
    broken.mkdir()
    for name in ("registry.toml", "orders.csv", "evidence.cbor-seq"):
        (broken / name).write_bytes((case / name).read_bytes())
    lines = (case / "claims.csv").read_text().splitlines()
    lines[2] = lines[2].replace("2026-10-01T13:30", "2026-10-01T13:3x", 1)
    (broken / "claims.csv").write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(broken), "--profile", "norrtalje",
         "--month", "2026-10"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    assert "claims.csv line 3, field end" in run.stderr
    assert run.stdout == ""
