"""The memory pre-flight: a board is asked over its serial console (mpremote) what memory it has,
and one too small for the role is refused with one line before anything is registered. Virtual
boards report what a real one would: their `-X heapsize` as gc.mem_free() and ESP-IDF's heap
through the unix port's esp32 stand-in (firmware/sim/esp32.py)."""

from __future__ import annotations

import json

import pytest

from kvitto.cli import main
from kvitto.errors import KvittoError
from kvitto.install.image import load_board
from kvitto.install.pki import ensure_org
from kvitto.install.preflight import ROLE_HEAP_KIB, judge
from kvitto.sim.board import VirtualBoard
from kvitto.store.db import open_store
from kvitto.store.registry import Registry

KIB = 1024
# What a stock ESP32_GENERIC build says on a plain ESP32-DevKitC after boot: a 64 KB GC heap,
# ESP-IDF's free internal RAM in several regions, device/ as .mpy files on the filesystem.
PLAIN_STOCK = {
    "version": [1, 25, 0], "machine": "Generic ESP32 module with ESP32", "free": 60 * KIB,
    "alloc": 4 * KIB, "device": "device",
    "idf": [[7288, 0, 0, 0], [16648, 4, 4, 4], [94608, 60 * KIB, 30 * KIB, 50 * KIB],
            [113840, 50 * KIB, 40 * KIB, 45 * KIB]],
}  # fmt: skip
# An ESP32-S3 N8R2 on ESP32_GENERIC_S3: the GC heap in PSRAM, internal RAM left to ESP-IDF.
S3_STOCK = {
    "version": [1, 25, 0], "machine": "Generic ESP32S3 module with Octal-SPIRAM with ESP32S3",
    "free": 1900 * KIB, "alloc": 100 * KIB, "device": "/device",
    "idf": [[250000, 180 * KIB, 110 * KIB, 170 * KIB], [2 * KIB * KIB, 40 * KIB, 30 * KIB, 0]],
}  # fmt: skip


def test_plain_esp32_on_stock_firmware_is_refused_with_what_to_do_instead():
    result = judge(PLAIN_STOCK, "tag", "/dev/ttyUSB0", load_board("esp32-devkitc"), True, True)
    assert not result.ok
    line = result.line()
    assert line.startswith("/dev/ttyUSB0: pre-flight refused for tag: MicroPython 1.25.0, stock")
    assert "no PSRAM, gc.mem_free 60 KiB, ESP-IDF heap 110 KiB free" in line
    need = ROLE_HEAP_KIB["stock"]["tag"] + 8
    assert "75 KiB of heap for MicroPython (Wi-Fi and TLS keep 95 KiB" in line
    assert f"the tag role needs {need} KiB on stock firmware" in line
    assert "frozen build" in line and "esp32s3-devkitc" in line
    assert "\n" not in line
    # the same board with device/ frozen in: its smaller need fits
    frozen = dict(PLAIN_STOCK, device=".frozen/device")  # its __path__; __file__ has no prefix
    assert judge(frozen, "tag", "p", load_board("esp32-devkitc"), True, True).ok


def test_psram_board_on_stock_firmware_passes():
    result = judge(S3_STOCK, "tag", "/dev/ttyACM0", load_board("esp32s3-devkitc"), True, True)
    assert result.ok, result.line()
    assert result.psram_kib == 2048 and result.firmware == "stock"
    assert result.line().startswith("/dev/ttyACM0: pre-flight ok for tag")


def test_a_wrover_flashed_without_spiram_support_is_told_which_firmware():
    # ESP32_GENERIC (no SPIRAM) on a WROVER: the PSRAM is unused, the heap as a plain ESP32's,
    # with Wi-Fi and TLS to the broker (with Wi-Fi alone its 125 KiB of room is near the need)
    result = judge(PLAIN_STOCK, "tag", "p", load_board("esp32-wrover"), True, True)
    assert not result.ok
    assert "esp32-wrover has 4096 KiB of PSRAM but this firmware does not use it" in result.line()
    assert "flash ESP32_GENERIC-SPIRAM" in result.line()


@pytest.mark.parametrize(
    "change,problem",
    [
        (dict(version=[1, 20, 0]), "needs MicroPython 1.23.0 or newer"),
        (dict(device=None), "the kvitto firmware is not on the board"),
        (dict(idf=[[94608, 30 * KIB, 30 * KIB, 30 * KIB]], free=3000 * KIB),
         "ESP-IDF has 30 KiB of internal RAM free, Wi-Fi and TLS need 95"),
    ],
)  # fmt: skip
def test_other_refusals(change, problem):
    result = judge(dict(PLAIN_STOCK, **change), "tag", "p", None, True, True)
    assert not result.ok and problem in result.line()


def test_an_unreadable_answer_is_one_line():
    with pytest.raises(KvittoError, match="memory report is unreadable"):
        judge({"version": "x"}, "tag", "p", None, True, True)


@pytest.fixture
def small_and_large(tmp_path):
    """Two virtual boards fresh from `kvitto flash`: one with a plain ESP32's memory (a small
    heap, ESP-IDF nearly full), one with PSRAM."""
    small = VirtualBoard(tmp_path / "small", "small", provision=False, proxy=False,
                         heap="512K", gc_heap_kib=100, idf_heap="100")  # fmt: skip
    large = VirtualBoard(tmp_path / "large", "large", provision=False, proxy=False,
                         heap="2M", idf_heap="150,2048")  # fmt: skip
    for board in (small, large):
        board.start()
    for board in (small, large):
        board.wait_ready(60, app=False)
    yield small, large
    for board in (small, large):
        board.stop()


def kvitto(capsys, *args: str) -> tuple[int, str, str]:
    """`kvitto ARGS` as the installer runs it (exit status, stdout, stderr)."""
    try:
        main(list(args))
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_virtual_boards_small_refused_large_accepted(tmp_path, capsys, small_and_large):
    small, large = small_and_large
    pki = tmp_path / "pki"
    ensure_org(pki)
    (pki / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")  # --tls puts it in the config
    url = f"sqlite:///{tmp_path / 'kvitto.db'}"
    open_store(url).close()  # `kvitto init`

    def provision(board, device):
        return kvitto(
            capsys, "provision", "--port", board.serial_port, "--device", device, "--customer",
            "c-1001", "--role", "tag", "--board", "sim", "--store", url, "--pki", str(pki),
            "--broker-host", "127.0.0.1", "--tls", "--label-dir", str(tmp_path / "labels"),
            "--wifi-ssid", "care-net", "--wifi-open", "--no-reset", "--ntp", "pool.ntp.org",
        )  # fmt: skip

    status, out, err = provision(small, "tag-0501")
    assert status == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"kvitto: {small.serial_port}: pre-flight refused for tag")
    assert "gc.mem_free" in lines[0] and "ESP-IDF heap 100 KiB free" in lines[0]
    assert "frozen build" in lines[0]
    # refused before registration: no device, no key asked for
    assert Registry(open_store(url)).device("tag-0501") is None

    status, out, err = provision(large, "tag-0502")
    assert status == 0, out + err
    assert Registry(open_store(url)).device("tag-0502") is not None

    # `kvitto flash --check` alone asks the same questions of a running board
    status, out, err = kvitto(capsys, "flash", "--check", "--board", "sim", "--port",
                              small.serial_port, "--tls")  # fmt: skip
    assert status == 2 and "pre-flight refused" in err
    status, out, err = kvitto(capsys, "flash", "--check", "--board", "sim", "--port",
                              large.serial_port, "--format", "json")  # fmt: skip
    assert status == 0, out + err
    report = json.loads(out)
    assert report["ok"] and report["psram_kib"] == 2048 and report["gc_total_kib"] >= 2000
    assert report["version"].startswith("1.") and report["firmware"] == "stock"


def test_frozen_is_told_by_the_package_path_the_port_reports(micropython):
    """The unix port has asyncio frozen in: its `__path__` carries the `.frozen` entry it was
    found under (its `__file__` does not), as a frozen `device` does on a board."""
    from kvitto.install.preflight import firmware_kind

    out = micropython("import asyncio, device\nprint(asyncio.__path__)\nprint(device.__path__)")
    frozen, from_files = out.split()
    assert firmware_kind(frozen) == "frozen" and firmware_kind(from_files) == "stock"
    assert firmware_kind(None) is None
