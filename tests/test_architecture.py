"""The host's import contracts (pyproject.toml, docs/architecture.md) hold, and would catch a
new circle: lint-imports on a copy of host/kvitto with one import added must fail. The page
docs/architecture.md matches the tree: it names every host module and firmware module there is,
and none that is not."""

from __future__ import annotations

import os
import re
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


# -- docs/architecture.md matches the tree (issue #17) ----------------------------------------

DOC = ROOT / "docs" / "architecture.md"
HOST = ROOT / "host" / "kvitto"
DEVICE = ROOT / "firmware" / "device"


def host_rows() -> dict[str, str]:
    """The host table's rows: package folder -> its "owns" cell."""
    rows = {}
    for line in DOC.read_text().splitlines():
        if match := re.match(r"\| `([a-z_]+)/` \| (.*?) \| [^|]* \|$", line):
            rows[match.group(1)] = match.group(2)
    return rows


def parts_of(folder: Path) -> set[str]:
    """A package's modules by name and its folders as `name/`."""
    return {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {
        p.name + "/" for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"
    }


def named_in(folder: Path, name: str) -> bool:
    """`name` (a function, class or constant the row mentions) is defined or imported at the top
    level of one of the package's modules: a word in a comment does not count."""
    pattern = re.compile(
        rf"^(?:(?:async )?def |class ){name}\b|^{name}\s*[:=]|^(?:from \S+ )?import .*\b{name}\b",
        re.MULTILINE,
    )
    return any(pattern.search(p.read_text()) for p in folder.glob("*.py"))


def test_the_host_table_names_every_package_and_module_there_is():
    rows = host_rows()
    packages = {p.name for p in HOST.iterdir() if (p / "__init__.py").exists()}
    assert set(rows) == packages
    for package, owns in rows.items():
        folder = HOST / package
        words = set(re.findall(r"[a-z_0-9]+/?", owns))
        unnamed = sorted(part for part in parts_of(folder) if part not in words)
        assert not unnamed, f"docs/architecture.md, row {package}/, does not name {unnamed}"
        for token in re.findall(r"`([^`]+)`", owns):
            if " " in token or token in ("kvitto", "__init__"):
                continue  # a command, the package itself
            if "/" in token or "." in token:  # a path: in the package or from host/kvitto
                assert list(folder.glob(token)) or list(HOST.glob(token)), (package, token)
            else:  # a module of the package or a name one of them defines
                assert token in parts_of(folder) or named_in(folder, token), (package, token)


def test_the_readmes_tree_names_every_host_package():
    tree = (ROOT / "README.md").read_text().split("host/kvitto/", 1)[1].split("\ndocs/", 1)[0]
    listed = set(re.findall(r"^  ([a-z_]+)/ ", tree, re.MULTILINE))
    packages = {p.name for p in HOST.iterdir() if (p / "__init__.py").exists()}
    assert listed == packages - {"cli"}  # cli/ is named on the host/kvitto/ line itself
    assert "(cli/)" in (ROOT / "README.md").read_text()


def test_the_firmware_tree_in_the_doc_is_the_tree():
    """The tree under "The firmware" lists every module of device/ in its folder, no other."""
    block = DOC.read_text().split("## The firmware", 1)[1].split("```")[1]
    listed: set[str] = set()
    folder = None
    for line in block.splitlines():
        if line.startswith("  device/"):
            folder = ""
        elif folder is not None and (match := re.match(r"    ([a-z_]+)/", line)):
            folder = match.group(1) + "/"
        elif re.match(r"  [a-z]", line):
            folder = None  # past device/: sim/
        if folder is not None:
            listed.update(folder + name for name in re.findall(r"\b[a-z_0-9]+\.py\b", line))
    there = {p.relative_to(DEVICE).as_posix() for p in DEVICE.rglob("*.py")}
    listed, there = (
        {n for n in names if not n.endswith("__init__.py")} for names in (listed, there)
    )
    assert "app.py" in listed and "drivers/pn532.py" in listed  # the block was read
    assert (sorted(listed - there), sorted(there - listed)) == ([], []), "(not there, not listed)"
