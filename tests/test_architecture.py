"""The host's import contracts (pyproject.toml, docs/architecture.md) hold, and would catch a
new circle: lint-imports on a copy of host/kvitto with one import added must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(
    tmp_path: Path, inject: tuple[str, str] | None = None
) -> subprocess.CompletedProcess:
    """lint-imports with the repository's contracts over a copy of host/kvitto, optionally with
    one line (module path, import statement) added to one module."""
    host = tmp_path / "host"
    shutil.copytree(
        ROOT / "host" / "kvitto", host / "kvitto", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if inject is not None:
        module, line = inject
        path = host / "kvitto" / module
        path.write_text(path.read_text() + f"\n{line}\n")
    # The copy first on the path; a wide terminal keeps each contract on one line.
    env = {**os.environ, "PYTHONPATH": str(host), "COLUMNS": "250"}
    return subprocess.run(
        [str(LINT_IMPORTS), str(tmp_path / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def verdicts(output: str) -> dict[str, str]:
    """{first words of a contract's name: KEPT or BROKEN} from lint-imports' summary."""
    out = {}
    for row in output.splitlines():
        if row.endswith((" KEPT", " BROKEN")):
            name, _, verdict = row.rpartition(" ")
            out[name.split(":")[0]] = verdict
    return out


def test_the_host_keeps_its_contracts(tmp_path):
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == {
        "Host layers": "KEPT",
        "Virtual boards and the demo are imported only by the CLI (and tests)": "KEPT",
        "No circles between the modules of any package": "KEPT",
    }


@pytest.mark.parametrize(
    ("module", "line", "contract", "named"),
    [
        # a layer importing upwards: the evidence checks reaching for the database
        (
            "evidence/cose.py",
            "import kvitto.store.db",
            "Host layers",
            "kvitto.evidence.cose -> kvitto.store.db",
        ),
        # two domains tied together: verify reaching into the collector
        (
            "verify/check.py",
            "import kvitto.collect.intake",
            "Host layers",
            "kvitto.verify.check -> kvitto.collect.intake",
        ),
        # the old circle inside install/: pki back to broker_config, which imports pki
        (
            "install/pki.py",
            "import kvitto.install.broker_config",
            "No circles",
            ".pki -> .broker_config",
        ),
        # the simulator used outside the CLI
        (
            "verify/report.py",
            "import kvitto.sim.board",
            "Virtual boards",
            "kvitto.verify.report -> kvitto.sim.board",
        ),
    ],
)
def test_a_new_back_import_breaks_a_contract(tmp_path, module, line, contract, named):
    result = lint_imports(tmp_path, (module, line))
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [name for name, verdict in verdicts(result.stdout).items() if verdict == "BROKEN"]
    assert [name for name in broken if name.startswith(contract)], result.stdout
    assert named in result.stdout.split("Broken contracts", 1)[1]


MAX_MODULE_LINES = 600  # issue #17: no host module over 600 lines


def test_no_host_module_is_longer_than_600_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / "host" / "kvitto").rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"host modules over {MAX_MODULE_LINES} lines (issue #17): " + ", ".join(
        f"{path} {n}" for path, n in long.items()
    )
