"""Report formats: JSON per FORMATS.md §4, CSV, and an offline HTML timeline."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from verify_support import standard

from kvitto.cli import main
from kvitto.verify.check import verify_case
from kvitto.verify.report import render


@pytest.fixture
def result(tmp_path):
    b = standard(tmp_path)
    b.visit("tag-0042", "s-07", "2026-10-01T08:02", "2026-10-01T08:31")
    b.visit("tag-0042", "s-07", "2026-10-25T10:05", "2026-10-25T10:40")  # DST day
    b.visit("tag-0042", "s-07", "2026-10-26T09:00", None)
    b.claim("k-1", "c-1001", "s-07", "226", "2026-10-01T08:03", "2026-10-01T08:30")
    b.claim("k-2", "c-1001", "s-07", "226", "2026-10-01T22:41", "2026-10-01T22:54")
    b.claim("k-3", "c-1001", "s-07", "226", "2026-10-25T10:00", "2026-10-25T10:45")
    b.write()
    return verify_case(tmp_path, "norrtalje", "2026-10")


def test_json_has_the_keys_of_formats_4(result):
    document = json.loads(render(result, "json"))
    assert list(document)[:4] == ["profile", "month", "findings", "billing"]
    assert {(f["claim_id"], f["rule"]) for f in document["findings"]} == {
        ("k-2", "E1"),
        ("k-2", "T1"),
        ("k-3", "E1"),
    }
    for row in document["billing"]:
        assert {"customer", "category", "payable_minutes", "count"} <= set(row)
    assert document["billing"][0]["payable_minutes"] == 27 + 35


def test_csv_carries_the_same_findings_and_billing(result):
    rows = list(csv.reader(io.StringIO(render(result, "csv"))))
    findings = [r for r in rows if r and r[0] == "finding"]
    assert {(r[3], r[5], r[6], r[7]) for r in findings} == {
        ("k-2", "E1", "reject", "0"),
        ("k-2", "T1", "follow_up", "13"),  # 000 §1.2.9: written documentation, not reject
        ("k-3", "E1", "adjust", "35"),
    }
    billing = [r for r in rows if r and r[0] == "billing"]
    assert billing == [
        ["billing", "norrtalje", "2026-10", "c-1001", "hemtjanst", "62", "0", "0", "0"]
    ]
    # RULES.md "not_checked": what the profile leaves to people, with its source
    not_checked = [r for r in rows if r and r[0] == "not_checked"]
    assert ["not_checked", "X2", ""] == not_checked[1][:3] and not_checked[1][4] == "000 §1.2.6.2"


def test_html_is_offline_and_marks_deviations_on_the_timeline(result):
    page = render(result, "html")
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page)
    assert "<script" not in page
    assert "c-1001" in page and "Underlag för ersättning" in page
    assert page.count("class='bar claim reject'") == 1
    assert page.count("class='bar claim adjust'") == 1
    assert page.count("class='bar evidence open'") == 1
    assert "10:00–10:45" in page and "10:05–10:40" in page  # claim and presence, in tables


def test_cli_writes_each_format(tmp_path, result, capsys):
    case = str(tmp_path)
    for output_format in ("json", "csv", "html"):
        out = tmp_path / f"report.{output_format}"
        main(["verify", case, "--profile", "norrtalje", "--month", "2026-10",
              "--format", output_format, "--out", str(out)])  # fmt: skip
        assert out.read_text() == render(result, output_format)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "solna", "--month", "2026-10"], "no profile 'solna'"),
        (["--profile", "norrtalje", "--month", "2026-13"], "--month"),
    ],
)
def test_cli_unusable_input_exits_2(tmp_path, result, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
