"""`kvitto flash` down to esptool's API boundary: the exact esptool chains, esptool's no-chip
commands (merge-bin, the image loader) run for real, port detection by USB VID:PID, and a
serial port with no chip behind it, where esptool itself has to give up."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from esptool.bin_image import ELFSection, ESP32FirmwareImage

from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.install.flash import (
    FlashPlan,
    _progress_logger,
    check_firmware,
    esp32_ports,
    merge,
    pick_port,
    plan_flash,
    run_esptool,
    run_plan,
)
from kvitto.install.image import build_image, load_board


def esp32_app_image(path: Path) -> Path:
    """A small but valid ESP32 firmware image made with esptool's own image writer."""
    image = ESP32FirmwareImage()
    image.entrypoint = 0x40080000
    image.segments = [
        ELFSection(b".dram0.data", 0x3FFB0000, bytes(range(64)), 0),
        ELFSection(b".iram0.text", 0x40080000, b"\x01" * 128, 0),
    ]
    image.save(str(path))
    return path


def merged_esp32_firmware(path: Path, app_bytes: int = 0x1000) -> Path:
    """A stock-style merged ESP32 firmware, as micropython.org has ESP32_GENERIC-OTA: the
    bootloader at 0x1000 (the file's start), the partition table at 0x8000, the app at 0x10000.
    The table is the 4 MiB OTA one the plain boards' files carry."""
    from kvitto.install.flash import partition_table

    esp32_app_image(path)  # the bootloader: esptool's image loader reads the file's start
    table = partition_table(load_board("esp32-devkitc").data["partitions"][:5])
    data = bytearray(path.read_bytes().ljust(0x7000, b"\xff")) + table
    data = data.ljust(0xF000, b"\xff") + b"\xe9" + bytes(range(256)) * (app_bytes // 256)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flash")
    firmware = merged_esp32_firmware(folder / "micropython.bin")
    image = folder / "fs.bin"
    build_image("esp32-devkitc", image)
    return firmware, image


@dataclass
class FakePort:
    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None = None


PORTS = [
    FakePort("/dev/ttyS0", None, None),
    FakePort("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001"),
    FakePort("/dev/ttyACM0", 0x2341, 0x0043),  # an Arduino: not an ESP32 bridge
]


def test_exact_esptool_chains(files):
    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/ttyUSB0")
    board = load_board("esp32-devkitc")
    connection = ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
                  "--before", "default-reset"]  # fmt: skip
    # the firmware goes in a copy carrying the board's OTA partition table
    copy = str(firmware.with_name("micropython.esp32-devkitc.bin"))
    regions = ["0x1000", copy, hex(board.fs_offset), str(image)]
    assert plan.esptool_chains() == [
        [*connection, "--after", "no-reset", "--connect-attempts", "7",
         "write-flash", "--erase-all", "--flash-size", "4MB", *regions],
        [*connection, "--after", "hard-reset", "--connect-attempts", "7",
         "verify-flash", "--flash-size", "4MB", *regions],
    ]  # fmt: skip


def test_chains_are_accepted_by_esptools_own_parser(files):
    """esptool's click parser takes every argument of both chains (parsed, not run)."""
    import esptool

    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/null")
    group = esptool.cli
    group._esp = None  # what esptool.main sets before parsing
    for chain in plan.esptool_chains():
        context = group.make_context("esptool", list(chain))
        with warnings.catch_warnings():  # click 8.2 moved protected_args into args
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = [*context.protected_args, *context.args]
        name, command, rest = group.resolve_command(context, pending)
        assert command is not None
        parsed = command.make_context(name, rest, parent=context).params
        assert len(parsed["addr_filename"]) == 2
        if name == "write-flash":
            assert parsed["erase_all"] is True
        assert context.params["chip"] == "esp32" and context.params["port"] == "/dev/null"


def test_run_plan_hands_the_chains_to_esptool_in_order(files):
    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/ttyUSB0")
    seen = []
    run_plan(plan, runner=seen.append, progress=False)
    assert seen == plan.esptool_chains()


def test_progress_goes_to_a_rich_bar_and_the_logger_is_restored():
    from esp_pylib.logger import EspLog
    from esptool.logger import log

    before = EspLog.instance
    with _progress_logger():
        assert EspLog.instance is not before
        log.progress_bar(50, 100, prefix="Writing")  # what esptool calls while writing
        log.progress_bar(100, 100, prefix="Writing")
    assert EspLog.instance is before


def test_merge_bin_runs_for_real(files, tmp_path):
    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/ttyUSB0")
    merged = merge(plan, tmp_path / "merged.bin")
    data = merged.read_bytes()
    board = load_board("esp32-devkitc")
    firmware_bytes = Path(str(plan.firmware)).read_bytes()
    assert data[:0x1000] == b"\xff" * 0x1000  # nothing below the bootloader offset
    assert data[0x1000 : 0x1000 + 4] == firmware_bytes[:4]
    assert data[0x1000 + 24 : 0x1000 + len(firmware_bytes)] == firmware_bytes[24:]
    assert data[board.fs_offset : board.fs_offset + board.fs_size] == image.read_bytes()


def test_firmware_is_checked_with_esptools_image_loader(files, tmp_path):
    firmware, _ = files
    check_firmware(firmware, "esp32")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(KvittoError, match="not an esp32 firmware image"):
        check_firmware(junk, "esp32")


def test_layout_mismatches_are_refused(files, tmp_path):
    firmware, image = files
    with pytest.raises(KvittoError, match="not flashed by esptool"):
        plan_flash("sim", firmware, image, port="p")
    small = tmp_path / "small.bin"
    small.write_bytes(b"\xff" * 4096)
    with pytest.raises(KvittoError, match="bytes, but board esp32-devkitc"):
        plan_flash("esp32-devkitc", firmware, small, port="p")
    with pytest.raises(KvittoError, match="needs --firmware"):
        plan_flash("esp32-devkitc", None, image, port="p")
    plan = plan_flash("esp32-devkitc", None, image, port="p", erase=False)
    assert plan.esptool_chains()[0][-2:] == [hex(plan.fs_offset), str(image)]


def test_ports_are_found_by_usb_bridge_ids():
    assert [p.device for p in esp32_ports(lambda: PORTS)] == ["/dev/ttyUSB0"]
    assert pick_port(None, lambda: PORTS) == "/dev/ttyUSB0"
    assert pick_port("/dev/ttyX", lambda: PORTS) == "/dev/ttyX"
    with pytest.raises(KvittoError, match="no ESP32 USB bridge"):
        pick_port(None, lambda: PORTS[:1])
    two = [*PORTS, FakePort("/dev/ttyUSB1", 0x1A86, 0x7523)]
    with pytest.raises(KvittoError, match="several ESP32 boards"):
        pick_port(None, lambda: two)


def test_dry_run_prints_the_plan_as_json(files):
    firmware, image = files
    result = CliRunner().invoke(
        cli,
        ["flash", "--board", "esp32-devkitc", "--firmware", str(firmware), "--image", str(image),
         "--port", "/dev/ttyUSB0", "--dry-run", "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["done"] is False
    assert report["esptool"][0][-4:] == [
        "0x1000",
        str(firmware.with_name("micropython.esp32-devkitc.bin")),
        hex(report["fs_offset"]),
        str(image),
    ]


def test_a_port_with_no_chip_behind_it_fails_inside_esptool(files):
    """A pty nobody answers on: esptool opens it, resets, syncs, and gives up."""
    firmware, image = files
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        plan = FlashPlan(
            board="esp32-devkitc", chip="esp32", port=port, baud=115200, firmware=str(firmware),
            firmware_offset=0x1000, image=str(image), fs_offset=0x310000, fs_size=0xF0000,
            connect_attempts=1,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(KvittoError, match="esptool write-flash"):
            run_esptool(plan.esptool_chains()[0])
        assert time.monotonic() - started < 60
    finally:
        os.close(master)
        os.close(slave)


def test_flash_plan_runs_through_esptool_against_a_fake_chip(files, monkeypatch):
    """The exact chains, through esptool.main, with esptool's erase, compressed write, MD5
    check and verify-flash running for real; only the chip is faked (installer_support)."""
    import esptool
    from installer_support import fake_esp32

    from kvitto.install import flash as flash_module

    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/ttyUSB0")
    chip = fake_esp32()
    progress_calls = []
    original = flash_module._RichProgress.progress_bar

    def counting(self, cur_iter, total_iters, *args, **kwargs):
        progress_calls.append((cur_iter, total_iters))
        original(self, cur_iter, total_iters, *args, **kwargs)

    monkeypatch.setattr(flash_module._RichProgress, "progress_bar", counting)
    run_plan(plan, runner=lambda chain: esptool.main(chain, esp=chip))
    assert chip.ops.index("ERASE_FLASH") < chip.ops.index("FLASH_DEFL_BEGIN")
    assert chip.ops.count("SPI_FLASH_MD5") == 4  # after each write, then verify-flash twice
    assert chip.ops[-1] == "hard_reset"  # into MicroPython at the end
    board = load_board("esp32-devkitc")
    assert chip.flash[board.fs_offset : board.fs_offset + board.fs_size] == image.read_bytes()
    written = Path(str(plan.firmware)).read_bytes()
    # esptool writes --flash-size into the bootloader's header (byte 3) and its digest; the
    # partition table and the app behind it are verbatim
    assert chip.flash[0x1000 + 4 : 0x1000 + 24] == written[4:24]
    assert chip.flash[0x8000 : 0x1000 + len(written)] == written[0x7000:]
    assert chip.flash[0x1000 + len(written) : 0x1000 + len(written) + 64] == b"\xff" * 64
    assert progress_calls and progress_calls[-1][0] == progress_calls[-1][1]


def test_a_flash_that_does_not_keep_its_data_fails_verification(files, monkeypatch):
    import esptool
    from installer_support import fake_esp32

    firmware, image = files
    plan = plan_flash("esp32-devkitc", firmware, image, port="/dev/ttyUSB0")
    chip = fake_esp32()
    good_program = chip.program
    stuck = plan.fs_offset + next(i for i, b in enumerate(image.read_bytes()) if b & 1)

    def stuck_bit(offset, data):
        good_program(offset, data)
        chip.flash[stuck] &= 0xFE  # one bit of the filesystem stuck at 0

    chip.program = stuck_bit
    real_main = esptool.main
    monkeypatch.setattr(esptool, "main", lambda argv: real_main(argv, esp=chip))
    with pytest.raises(KvittoError, match="esptool write-flash: .*MD5") as error:
        run_plan(plan, progress=False)  # kvitto's own runner: esptool errors -> KvittoError
    assert "\n" not in str(error.value)  # one line for the installer


def test_merged_json_output_is_the_report_alone(files, tmp_path):
    firmware, image = files
    out = tmp_path / "all.bin"
    result = CliRunner().invoke(
        cli,
        ["flash", "--board", "esp32-devkitc", "--firmware", str(firmware), "--image", str(image),
         "--merged", str(out), "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["merged"] == str(out)
    assert out.stat().st_size == load_board("esp32-devkitc").fs_offset + 0xF0000 == 0x400000


# -- bad firmware files and dry runs without a board (issue #17) ----------------------------


def _random_file(path: Path, size: int, seed: int, magic: bool) -> Path:
    import random

    data = bytearray(random.Random(seed).randbytes(size))
    if magic:
        data[0] = 0xE9  # esptool's image magic, so the loader reads on into the random header
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.bin", b"", "the file is empty"),
        ("two.bin", b"\xe9\x03", "2 bytes, shorter than its 24-byte header"),
        ("seven.bin", b"\xe9\x03\x02\x20\x00\x10\x08", "7 bytes, shorter than its 24-byte header"),
        ("header.bin", None, "append_digest"),  # random header behind the magic byte
        ("noise.bin", None, "magic"),  # random bytes, no magic
        # a whole header that names no segment, then the file ends where the checksum should be:
        # esptool's loader failed with a TypeError traceback from ord(b"")
        ("no-segments.bin", b"\xe9\x00\x02\x20" + bytes(20), "cut short or garbled"),
        # the same with its checksum byte: esptool's loader takes it, an image of nothing
        (
            "empty-image.bin",
            b"\xe9\x00\x02\x20" + bytes(20) + bytes(15) + b"\xef",
            "it holds no segments",
        ),
    ],
)
def test_a_bad_firmware_file_is_one_line_exit_2_and_nothing_is_written(
    files, tmp_path, monkeypatch, capsys, name, content, problem
):
    import esptool

    from kvitto.cli import main

    _, image = files
    path = tmp_path / name
    if content is None:
        _random_file(
            path, 4096, seed=17 if name == "header.bin" else 4, magic=name == "header.bin"
        )
    else:
        path.write_bytes(content)
    calls = []
    monkeypatch.setattr(esptool, "main", lambda *args, **kwargs: calls.append(args))
    argv = ["flash", "--board", "esp32-devkitc", "--firmware", str(path), "--image", str(image)]
    for extra in ([], ["--port", "/dev/ttyUSB0"]):
        with pytest.raises(SystemExit) as exited:
            main([*argv, *extra])
        assert exited.value.code == 2
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"kvitto: {path}: not an esp32 firmware image: ")
        assert problem in lines[0]
    assert calls == []  # esptool never ran: nothing reached a board


def test_random_headers_never_escape_as_a_traceback(tmp_path):
    """Fixed seed, bounded: short files behind the image magic with few segments, where
    esptool's loader reads past the end; each is refused with one line naming it."""
    import random

    rng = random.Random(1717)
    path = tmp_path / "fuzz.bin"
    for _ in range(400):
        chip, chip_id = rng.choice([("esp32", 0), ("esp32s3", 9)])
        data = bytearray(rng.randbytes(rng.choice([24, 25, 26, 28, 32, 40, 64])))
        # the fields the loader checks made plausible, so that it reads on: magic, a few
        # segments, the chip's id, append_digest 0 or 1
        data[0], data[1] = 0xE9, rng.choice([0, 0, 1, 2, 16])
        data[12:14], data[23] = chip_id.to_bytes(2, "little"), rng.choice([0, 1])
        path.write_bytes(bytes(data))
        with pytest.raises(KvittoError) as refused:  # random bytes are never an image
            check_firmware(path, chip)
        assert str(refused.value).startswith(f"{path}: not an {chip} firmware image: ")
        assert "\n" not in str(refused.value)


def test_dry_run_without_a_board_prints_the_plan(files, monkeypatch):
    import kvitto.install.flash as flash_module

    firmware, image = files
    monkeypatch.setattr(flash_module, "esp32_ports", lambda comports=None: [])
    result = CliRunner().invoke(
        cli,
        ["flash", "--board", "esp32-devkitc", "--firmware", str(firmware), "--image", str(image),
         "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "board esp32-devkitc (esp32), no board plugged in (give --port):"
    copy = firmware.with_name("micropython.esp32-devkitc.bin")
    assert f"MicroPython {copy} at 0x1000" in lines[1]
    assert f"filesystem  {image} at 0x310000" in lines[2]
    assert [line.split()[:3] for line in lines[3:]] == [["would", "run:", "esptool"]] * 2
    assert "--port PORT" in lines[3] and "write-flash" in lines[3]
    json_run = CliRunner().invoke(
        cli,
        ["flash", "--board", "esp32-devkitc", "--firmware", str(firmware), "--image", str(image),
         "--dry-run", "--format", "json"],
    )  # fmt: skip
    assert json_run.exit_code == 0, json_run.output
    report = json.loads(json_run.output)
    assert report["done"] is False and report["chip"] == "esp32"
    assert report["firmware_offset"] == 0x1000 and report["fs_offset"] == 0x310000


def merged_s3_firmware(path: Path, app_bytes: int = 0x1000) -> Path:
    """A stock-style merged ESP32-S3 firmware: bootloader at 0x0, MicroPython's own partition
    table (factory app, vfs) at 0x8000, the app at 0x10000."""
    from esptool.bin_image import ESP32S3FirmwareImage

    from kvitto.install.flash import partition_table

    loader = ESP32S3FirmwareImage()
    loader.entrypoint = 0x40380000
    loader.segments = [ELFSection(b".iram0.text", 0x40380000, b"\x02" * 128, 0)]
    loader.save(str(path))
    stock = partition_table([
        {"name": "nvs", "type": "data", "subtype": "nvs", "offset": 0x9000, "size": 0x6000},
        {"name": "phy_init", "type": "data", "subtype": "phy", "offset": 0xF000, "size": 0x1000},
        {"name": "factory", "type": "app", "subtype": "factory", "offset": 0x10000,
         "size": 0x1F0000},
        {"name": "vfs", "type": "data", "subtype": "fat", "offset": 0x200000, "size": 0x600000},
    ])  # fmt: skip
    data = bytearray(path.read_bytes().ljust(0x8000, b"\xff")) + stock
    data = data.ljust(0x10000, b"\xff") + b"\xe9" + bytes(range(256)) * (app_bytes // 256)
    path.write_bytes(bytes(data))
    return path


def test_psram_board_gets_its_ota_partition_table(tmp_path):
    """The S3 board's OTA layout replaces the stock table in a copy of the firmware; the app
    stays at 0x10000 (ota_0), the filesystem goes where the table's vfs says."""
    import hashlib
    import struct

    firmware = merged_s3_firmware(tmp_path / "ESP32_GENERIC_S3.bin")
    image = tmp_path / "fs.bin"
    build_image("esp32s3-devkitc", image)
    plan = plan_flash("esp32s3-devkitc", firmware, image, port="/dev/ttyACM0")
    board = load_board("esp32s3-devkitc")
    assert plan.firmware == str(tmp_path / "ESP32_GENERIC_S3.esp32s3-devkitc.bin")
    assert plan.firmware_offset == 0 and plan.fs_offset == 0x4F0000 == board.fs_offset
    write = plan.esptool_chains()[0]
    assert write[write.index("--flash-size") + 1] == "8MB"
    written = Path(plan.firmware).read_bytes()
    original = firmware.read_bytes()
    assert written[:0x8000] == original[:0x8000] and written[0x9000:] == original[0x9000:]
    table = written[0x8000 : 0x8000 + 0xC00]
    entries = [struct.unpack("<2sBBLL16sL", table[i : i + 32]) for i in range(0, 6 * 32, 32)]
    assert [(e[5].rstrip(b"\0").decode(), e[1], e[2], e[3], e[4]) for e in entries] == [
        ("nvs", 1, 0x02, 0x9000, 0x4000), ("otadata", 1, 0x00, 0xD000, 0x2000),
        ("phy_init", 1, 0x01, 0xF000, 0x1000), ("ota_0", 0, 0x10, 0x10000, 0x270000),
        ("ota_1", 0, 0x11, 0x280000, 0x270000), ("vfs", 1, 0x81, 0x4F0000, 0x310000),
    ]  # fmt: skip
    # ESP-IDF's MD5 entry closes the table, the rest is erased flash
    assert table[192:208] == b"\xeb\xeb" + b"\xff" * 14
    assert table[208:224] == hashlib.md5(table[:192]).digest()
    assert table[224:] == b"\xff" * (0xC00 - 224)


def test_psram_board_refuses_an_app_only_or_oversized_firmware(tmp_path):
    image = tmp_path / "fs.bin"
    build_image("esp32s3-devkitc", image)
    app_only = tmp_path / "app.bin"
    merged = merged_s3_firmware(tmp_path / "s3.bin")
    app_only.write_bytes(merged.read_bytes()[:0x1000])  # the image loader still accepts it
    with pytest.raises(KvittoError, match="no partition table at 0x8000.*whole firmware file"):
        plan_flash("esp32s3-devkitc", app_only, image, port="/dev/ttyACM0")
    too_big = merged_s3_firmware(tmp_path / "big.bin", app_bytes=0x270000 + 0x100)
    with pytest.raises(KvittoError, match="does not fit partition ota_0"):
        plan_flash("esp32s3-devkitc", too_big, image, port="/dev/ttyACM0")


@pytest.mark.parametrize("name", ["esp32-devkitc", "esp32-lock", "esp32-alarm"])
def test_plain_board_gets_the_4mib_ota_partition_table(tmp_path, name):
    """Every plain 4 MB ESP32 board (every lock and alarm board among them) gets MicroPython's
    partitions-4MiB-ota.csv with its implicit vfs made explicit: two 1.5 MiB app slots and
    otadata, so it takes updates over the air; the filesystem moves to 0x310000 (960 KiB)."""
    import struct

    firmware = merged_esp32_firmware(tmp_path / "ESP32_GENERIC-OTA.bin")
    image = tmp_path / "fs.bin"
    report = build_image(name, image, frozen=True)
    assert (report.fs_offset, report.fs_size, report.block_count) == (0x310000, 0xF0000, 240)
    plan = plan_flash(name, firmware, image, port="/dev/ttyUSB0")
    assert plan.firmware == str(tmp_path / f"ESP32_GENERIC-OTA.{name}.bin")
    assert plan.firmware_offset == 0x1000 and plan.fs_offset == 0x310000
    write = plan.esptool_chains()[0]
    assert write[write.index("--flash-size") + 1] == "4MB"
    written = Path(plan.firmware).read_bytes()
    table = written[0x7000 : 0x7000 + 0xC00]  # flash 0x8000: the file starts at 0x1000
    entries = [struct.unpack("<2sBBLL16sL", table[i : i + 32]) for i in range(0, 6 * 32, 32)]
    assert [(e[5].rstrip(b"\0").decode(), e[1], e[2], e[3], e[4]) for e in entries] == [
        ("nvs", 1, 0x02, 0x9000, 0x4000), ("otadata", 1, 0x00, 0xD000, 0x2000),
        ("phy_init", 1, 0x01, 0xF000, 0x1000), ("ota_0", 0, 0x10, 0x10000, 0x180000),
        ("ota_1", 0, 0x11, 0x190000, 0x180000), ("vfs", 1, 0x81, 0x310000, 0xF0000),
    ]  # fmt: skip
    assert table[192:194] == b"\xeb\xeb"  # the MD5 entry follows the six
    assert written[0xF000:] == firmware.read_bytes()[0xF000:]  # the app, at 0x10000 (ota_0)


def test_plain_board_refuses_a_firmware_larger_than_its_1_5_mib_slot(tmp_path, capsys):
    """An app that does not fit the 1.5 MiB ota_0 of a plain board is refused in one line that
    names the OTA build to make; one that just fits is accepted."""
    from kvitto.cli import main

    image = tmp_path / "fs.bin"
    build_image("esp32-lock", image, frozen=True)
    fits = merged_esp32_firmware(tmp_path / "fits.bin", app_bytes=0x180000 - 0x100)
    assert plan_flash("esp32-lock", fits, image, port="/dev/ttyUSB0").firmware
    too_big = merged_esp32_firmware(tmp_path / "big.bin", app_bytes=0x180000 + 0x100)
    with pytest.raises(SystemExit) as exited:
        main(["flash", "--board", "esp32-lock", "--firmware", str(too_big), "--image",
              str(image), "--port", "/dev/ttyUSB0", "--dry-run"])  # fmt: skip
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(
        f"kvitto: {too_big}: its app (1573121 bytes from 0x10000) does not fit partition ota_0 "
        "of board esp32-lock (1572864 bytes): build it as ESP32_GENERIC-OTA (make "
        "BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=firmware/manifest.py"
    ), err
    assert not (tmp_path / "big.esp32-lock.bin").exists()  # nothing written for the board
