"""What a new user's mistakes get (issue #24): one line, exit status 2, nothing changed —
never a traceback, and never an answer from the wrong data."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_kvitto
from verify_support import standard

from kvitto.store.db import open_store


@pytest.fixture
def case(tmp_path: Path) -> Path:
    bundle = standard(tmp_path / "case")
    bundle.visit("tag-0042", "s-07", "2026-11-03T08:00", "2026-11-03T08:30")
    bundle.claim("k-1", "c-1001", "s-07", "226", "2026-11-03T08:00", "2026-11-03T08:30")
    return bundle.write()


def one_line_exit_2(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_out_into_a_missing_folder_is_one_line(case, tmp_path, monkeypatch):
    """#24 item 10: --out nodir/r.html was a FileNotFoundError traceback."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_kvitto(["verify", str(case), "--profile", "norrtalje", "--month",
                               "2026-11", "--format", "html", "--out", "nodir/r.html"])  # fmt: skip
    assert "nodir" in one_line_exit_2(code, err)
    assert not (tmp_path / "nodir").exists()


def test_a_month_without_claims_is_not_an_all_clear(case):
    """#24 item 12: --month 2026-10 on a November case gave exit 0 and empty findings."""
    code, out, err = run_kvitto(
        ["verify", str(case), "--profile", "norrtalje", "--month", "2026-10"]
    )
    line = one_line_exit_2(code, err)
    assert "2026-10" in line and "none of the 1 claims" in line and out == ""
    code, out, err = run_kvitto(
        ["verify", str(case), "--profile", "norrtalje", "--month", "2026-11"]
    )
    assert code == 0 and '"k-1"' not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["command", "list", "--open"],
        ["command", "allow", "--device", "lock-0201", "--staff", "s-07"],
        ["revoke", "--device", "tag-0042"],
        [
            "export-case",
            "--month",
            "2026-11",
            "--claims",
            "{claims}",
            "--orders",
            "{orders}",
            "--out",
            "{tmp}/out",
        ],
        [
            "verify",
            "{store}",
            "--profile",
            "norrtalje",
            "--month",
            "2026-11",
            "--claims",
            "{claims}",
        ],
        ["broker-config", "--out", "{tmp}/etc"],
        ["ingest", "{evidence}"],
        ["quarantine", "list"],
        ["registry", "list", "devices"],
        # kvitto serve's commands read or add to the same store
        ["serve"],
        ["user", "add", "samordnare-p9", "--role", "admin", "--password", "lösenord-123"],
        ["user", "list"],
        ["provider", "add", "p-9", "--municipality", "huddinge"],
        ["import-claims", "{claims}", "--provider", "p-9"],
        ["judge", "--provider", "p-9", "--month", "2026-11"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_misspelled_store_is_refused_not_created(argv, case, tmp_path, monkeypatch):
    """#24 item 11: sqlite:///kvito.db silently made a new, empty store; `command list --open`
    then said "no open commands" (exit 0) and `verify` crashed on a missing table."""
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "kvitto.db"
    open_store(f"sqlite:///{real}").close()
    typo = "sqlite:///kvito.db"
    values = {
        "claims": str(case / "claims.csv"),
        "orders": str(case / "orders.csv"),
        "tmp": str(tmp_path),
        "store": typo,
        "evidence": str(case / "evidence.cbor-seq"),
    }
    argv = [part.format(**values) for part in argv]
    if argv[0] != "verify":
        argv += ["--store", typo]
    if argv[0] == "serve":  # were the store made, the test must fail, not serve forever

        def serving(*args, **kwargs):
            raise AssertionError("kvitto serve started on a store that does not exist")

        monkeypatch.setattr("uvicorn.run", serving)
    code, out, err = run_kvitto(argv)
    line = one_line_exit_2(code, err)
    assert "kvito.db" in line and "does not exist" in line and "kvitto init" in line
    assert not (tmp_path / "kvito.db").exists()


def test_init_creates_the_store_the_others_then_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_kvitto(["init", "--store", "sqlite:///kvitto.db"])
    assert code == 0 and "ready" in out
    code, out, err = run_kvitto(["command", "list", "--open", "--store", "sqlite:///kvitto.db"])
    assert code == 0, err


def test_semicolon_claims_with_a_bom_as_swedish_excel_saves_them(case):
    """#24 item 13: a ';'-separated claims.csv (Swedish Excel's default, often with a UTF-8
    BOM) failed with a 17-column "header lacks" message."""
    import json

    code, out, err = run_kvitto(
        ["verify", str(case), "--profile", "norrtalje", "--month", "2026-11"]
    )
    assert code == 0, err
    with_commas = json.loads(out)
    claims = case / "claims.csv"
    text = claims.read_text()
    claims.write_text("\ufeff" + text.replace(",", ";"), encoding="utf-8")
    code, out, err = run_kvitto(
        ["verify", str(case), "--profile", "norrtalje", "--month", "2026-11"]
    )
    assert code == 0, err
    assert json.loads(out) == with_commas
    # a header that is wrong all the same names the separator it was read with
    claims.write_text(text.replace(",", "|"), encoding="utf-8")
    code, out, err = run_kvitto(
        ["verify", str(case), "--profile", "norrtalje", "--month", "2026-11"]
    )
    line = one_line_exit_2(code, err)
    assert "header lacks" in line and "1 columns separated by ','" in line
