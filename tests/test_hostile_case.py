"""Faulty case bundles (issue #25): a time in a form FORMATS.md §3 does not name (the Swedish
07.30 was read as 07:00:00.3) and a bundle without its evidence file are refused, exit 2, with
file, line and field; never judged on a wrong interval or on no evidence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvitto.cli import main
from kvitto.store.db import open_store
from kvitto.verify.case import parse_time

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "examples" / "case-minimal"


@pytest.fixture
def case(tmp_path) -> Path:
    if not EXAMPLE.exists():
        pytest.skip(f"shared examples not beside the checkout ({EXAMPLE})")
    return Path(shutil.copytree(EXAMPLE, tmp_path / "case"))


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def verify(case: Path, capsys) -> tuple[int, str, str]:
    return run(["verify", str(case), "--profile", "norrtalje", "--month", "2026-10"], capsys)


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "field,old,new,hint",
    [
        ("start", "2026-10-01T08:03", "2026-10-01 08.03", "with a colon (07:30), not a dot"),
        ("end", "2026-10-01T08:30,tag", "2026-10-01T8.30,tag", "not a dot"),
        ("start", "2026-10-01T08:03", "20261001T0803", "expected YYYY-MM-DDTHH:MM"),
        ("start", "2026-10-01T08:03", "2026-10-01T08", "expected YYYY-MM-DDTHH:MM"),
        ("start", "2026-10-01T08:03", "2026-W40-4T08:03", "expected YYYY-MM-DDTHH:MM"),
        ("start", "2026-10-01T08:03", "2026-10-01T08:03+0200", "expected YYYY-MM-DDTHH:MM"),
    ],
    ids=["swedish-dot", "swedish-no-zero", "basic-format", "hour-only", "week-date", "offset"],
)
def test_a_time_in_another_form_is_refused_with_file_line_and_field(
    case, capsys, field, old, new, hint
):
    replace_in(case / "claims.csv", old, new)
    value = new.split(",")[0]
    code, out, err = verify(case, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"kvitto: {case / 'claims.csv'} line 2, field {field}: {value!r}")
    assert hint in err and "Traceback" not in err


def test_an_order_date_in_another_form_is_refused(case, capsys):
    replace_in(case / "orders.csv", "2026-01-01", "20260101")
    code, _, err = verify(case, capsys)
    assert code == 2
    assert err.startswith(f"kvitto: {case / 'orders.csv'} line 2, field valid_from: '20260101'")


def test_the_documented_forms_still_read():
    assert parse_time("2026-11-11 07:30") == parse_time("2026-11-11T07:30:00+01:00")
    assert parse_time("2026-11-11T06:30Z") == parse_time("2026-11-11T07:30:00.000+01:00")


def test_export_case_refuses_a_claims_file_verify_would_refuse(case, tmp_path, capsys):
    replace_in(case / "claims.csv", "2026-10-01T08:03", "2026-10-01 08.03")
    store_url = f"sqlite:///{tmp_path}/kvitto.db"
    open_store(store_url).close()
    code, _, err = run(
        [
            "export-case", "--store", store_url, "--month", "2026-10",
            "--claims", str(case / "claims.csv"), "--orders", str(case / "orders.csv"),
            "--out", str(tmp_path / "out"),
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert err.startswith(f"kvitto: {case / 'claims.csv'} line 2, field start: ")
    assert not (tmp_path / "out" / "claims.csv").exists()


def test_a_bundle_without_its_evidence_file_is_refused(case, capsys):
    (case / "evidence.cbor-seq").unlink()
    code, out, err = verify(case, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"kvitto: {case / 'evidence.cbor-seq'}: missing from the case bundle")


def test_an_empty_evidence_file_is_a_case_without_events(case, capsys):
    (case / "evidence.cbor-seq").write_bytes(b"")
    code, out, err = verify(case, capsys)
    assert code == 0, err
    assert out
