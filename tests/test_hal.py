"""The HAL: one interface, a real and a simulated implementation chosen by the board file;
only hal.py touches `machine`/`network`; the simulated watchdog resets a hung interpreter."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import micropython_env

ROOT = Path(__file__).resolve().parent.parent


def test_only_hal_imports_machine_or_network():
    offenders = []
    for path in sorted((ROOT / "firmware" / "device").rglob("*.py")):
        text = path.read_text()
        if re.search(r"^\s*(import|from)\s+(machine|network)\b", text, re.M):
            offenders.append(path.name)
    assert offenders == ["hal.py"]


def test_board_file_selects_the_sim_hal(micropython, tmp_path):
    out = micropython(
        f"""
        from device.board import boards, hal
        board = boards.load("{ROOT}/boards/sim.json")
        h = boards.open_hal(board, seed=b"s-07")
        print(type(h).__name__)
        h.led.show("green"); h.led.show("blue")
        print(h.led.colour, [c for _, c in h.led.history])
        h.relay.set(True); h.relay.set(False)
        print([s for _, s in h.relay.history])
        print(h.input("door").value()); h.set_input("door", True); print(h.input("door").value())
        try:
            h.led.show("purple")
        except ValueError as error:
            print("refused", error)
        try:
            h.input("doorbell")
        except ValueError as error:
            print("refused", error)
        a = h.urandom(40)
        h2 = boards.open_hal(board, seed=b"s-07")
        print(len(a), a == h2.urandom(40), a != boards.open_hal(board, seed=b"s-08").urandom(40))
        print(h.reset_cause())
        """
    )
    lines = out.strip().splitlines()
    assert lines[0] == "SimHal"
    assert lines[1] == "blue ['green', 'blue']"
    assert lines[2] == "[False, True, False]"
    assert lines[3:5] == ["False", "True"]
    assert lines[5] == "refused unknown LED colour 'purple'"
    assert lines[6] == "refused board sim has no input 'doorbell'"
    assert lines[7] == "40 True True"
    assert lines[8] == "power"


def test_machine_hal_builds_parts_from_the_board(micropython, tmp_path):
    # A stand-in `machine`/`neopixel` on the path: checks which pins and levels the real HAL asks for.
    fake = tmp_path / "fakes"
    fake.mkdir()
    (fake / "machine.py").write_text(
        "log = []\n"
        "PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5\n"
        "def reset_cause():\n    return 3\n"
        "class Pin:\n"
        "    IN, OUT, PULL_UP, PULL_DOWN = 1, 3, 2, 1\n"
        "    def __init__(self, n, mode=None, pull=None, value=None):\n"
        "        self.n = n; self.level = 1; log.append(('pin', n, mode, pull))\n"
        "    def value(self, v=None):\n"
        "        if v is None:\n            return self.level\n"
        "        self.level = v; log.append(('set', self.n, v))\n"
        "class WDT:\n    def __init__(self, timeout):\n        log.append(('wdt', timeout))\n"
        "class I2C:\n    def __init__(self, i, scl, sda, freq, timeout=50000):\n"
        "        log.append(('i2c', i, scl.n, sda.n, freq, timeout))\n"
    )
    (fake / "neopixel.py").write_text(
        "import machine\n"
        "class NeoPixel:\n"
        "    def __init__(self, pin, n):\n        self.px = [None] * n\n"
        "    def __setitem__(self, i, v):\n        self.px[i] = v\n"
        "    def write(self):\n        machine.log.append(('px', tuple(self.px)))\n"
    )
    out = micropython(
        f"""
        import machine
        from device.board import boards, hal
        h = boards.open_hal(boards.load("{ROOT}/boards/esp32-lock.json"))
        machine.log.clear()
        h.relay.set(True)
        h.led.show("red")
        print(h.input("door").value())
        from device.drivers.pn532 import I2C_TIMEOUT_US   # what the app passes (device.app)
        h.bus("i2c", I2C_TIMEOUT_US); h.watchdog(8000)
        print(machine.log)
        print(h.reset_cause())
        """,
        extra_path=[str(fake)],
    )
    door, log, cause = out.strip().splitlines()
    assert door == "False"  # pulled up, active low: an idle contact is not active
    assert "('set', 26, 1)" in log  # relay active high
    assert "('px', ((64, 0, 0),))" in log
    assert "('pin', 27, 1, 2)" in log  # door contact: input with pull-up
    # 100 ms of clock stretching, not the port's 50 ms default: the PN532 wakes slowly
    assert "('i2c', 0, 22, 21, 400000, 100000)" in log
    assert "('wdt', 8000)" in log
    assert cause == "wdt"


def test_flash_image_keeps_files_across_power_cuts(micropython, tmp_path):
    image = tmp_path / "flash.img"
    script = f"""
        import os
        from device.board import boards, hal
        h = boards.open_hal(boards.load("{ROOT}/boards/sim.json"), flash="{image}")
        print(h.fs_root, sorted(os.listdir(h.fs_root)))
        with open(h.fs_root + "/note.txt", "a") as f:
            f.write("x")
        """
    assert micropython(script).split() == ["/flash", "[]"]
    assert micropython(script).split() == ["/flash", "['note.txt']"]
    assert image.stat().st_size == 1048576  # sim.json: fs_size


def test_sim_watchdog_resets_a_hung_interpreter(micropython, tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        f"""
import time
from device.board import boards, hal
h = boards.open_hal(boards.load("{ROOT}/boards/sim.json"))
w = h.watchdog(300)
for _ in range(6):
    time.sleep_ms(100)
    w.feed()
print("fed for 600 ms")
while True:
    pass
"""
    )
    result = subprocess.run(
        [micropython.binary, str(script)],
        capture_output=True,
        text=True,
        timeout=20,
        env=micropython_env(),
    )
    assert result.returncode == -10, result  # SIGUSR1: the simulated chip reset
    assert "fed for 600 ms" in result.stdout
    assert "WDT: not fed for 300 ms" in result.stderr


def test_debounced_input_polling_does_not_allocate(micropython):
    out = micropython(
        """
        import micropython, time
        from device.board.debounce import Debounced
        class Line:
            def __init__(self):
                self.active = False
            def value(self):
                return self.active
        line = Line()
        debounced = Debounced(line, 30)
        changes = 0
        micropython.heap_lock()
        try:
            start = time.ticks_ms()
            while time.ticks_diff(time.ticks_ms(), start) < 200:
                line.active = time.ticks_diff(time.ticks_ms(), start) > 50
                if debounced.update() is not None:
                    changes += 1
        finally:
            micropython.heap_unlock()
        print(changes, debounced.state)
        """
    )
    assert out.split() == ["1", "True"]


def test_the_sim_boards_parts_allocate_nothing_while_they_run(micropython, tmp_path):
    # bench/device.py counts what a run adds to the heap as the role's: a simulated LED,
    # buzzer or relay, like the GPIO it stands for, takes no heap when it switches, and the
    # PN532 model is the board's from the start. The history keeps the last 64 changes.
    out = micropython(
        f"""
        import gc
        from device.board import boards
        board = boards.load("{ROOT}/boards/sim.json")
        h = boards.open_hal(board, seed=b"s-08")
        print(h.pn532 is not None)
        colours = ("green", "off", "blue", "red")
        h.led.show("green"); h.relay.set(True); h.relay.set(False)
        gc.collect()
        before = gc.mem_alloc()
        for i in range(300):
            h.led.show(colours[i % 4])
            h.buzzer.set(i % 2)
        gc.collect()
        print(gc.mem_alloc() - before)
        changes = [c for _, c in h.led.history]
        print(len(changes), changes[-4:], [s for _, s in h.buzzer.history][-3:])
        """
    )
    lines = out.splitlines()
    assert lines[0] == "True"
    assert int(lines[1]) <= 64  # one block of the loop's own at most; a list of tuples took 6 KiB
    assert lines[2] == "64 ['green', 'off', 'blue', 'red'] [True, False, True]"
