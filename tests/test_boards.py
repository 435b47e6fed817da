"""Board files are data: every shipped board validates, and a broken one is refused with a
message that names the file and the field, the same under CPython and the unix port."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOARDS = sorted((ROOT / "boards").glob("*.json"))
sys.path.insert(0, str(ROOT / "firmware"))

from device.board import boards  # noqa: E402  (pure module: CPython runs it too)


def board(name: str) -> dict:
    return json.loads((ROOT / "boards" / f"{name}.json").read_text())


def test_every_shipped_board_is_valid():
    names = {path.stem for path in BOARDS}
    assert {"esp32-devkitc", "esp32-lock", "esp32-alarm", "sim"} <= names
    assert {"esp32s3-devkitc", "esp32-wrover"} <= names
    for path in BOARDS:
        loaded = boards.load(str(path))
        assert loaded["name"] == path.stem, "a board's name is its file name"


def test_roles_follow_the_parts():
    assert boards.load(str(ROOT / "boards/esp32-devkitc.json"))["roles"] == ["tag"]
    assert "lock" in board("esp32-lock")["roles"]
    assert "alarm" in board("esp32-alarm")["roles"]
    assert set(board("sim")["roles"]) == {"tag", "lock", "alarm"}


PLAIN = ("esp32-devkitc", "esp32-lock", "esp32-alarm")


def test_plain_boards_carry_the_esp32_generic_ota_partition_table():
    """The plain 4 MB boards (every lock and alarm board) take updates over the air: MicroPython's
    partitions-4MiB-ota.csv (ESP32_GENERIC's OTA variant), its implicit vfs made explicit: two
    1.5 MiB app slots, and the filesystem at 0x310000, 960 KiB, to the end of the flash."""
    for name in PLAIN:
        data = board(name)
        assert [(e["name"], e["type"], e["subtype"], e["offset"], e["size"])
                for e in data["partitions"]] == [
            ("nvs", "data", "nvs", 0x9000, 0x4000), ("otadata", "data", "ota", 0xD000, 0x2000),
            ("phy_init", "data", "phy", 0xF000, 0x1000),
            ("ota_0", "app", "ota_0", 0x10000, 0x180000),
            ("ota_1", "app", "ota_1", 0x190000, 0x180000),
            ("vfs", "data", "fat", 0x310000, 0xF0000),
        ], name  # fmt: skip
        flash = data["flash"]
        assert (flash["size"], flash["fs_offset"], flash["fs_size"], flash["block_size"]) == (
            0x400000, 0x310000, 0xF0000, 4096,
        )  # fmt: skip
        # the frozen build, made as MicroPython's OTA variant of ESP32_GENERIC
        assert data["firmware"] == {"build": "frozen", "download": "ESP32_GENERIC-OTA"}
        assert "partitions" not in boards.load(str(ROOT / "boards" / f"{name}.json"))


def test_every_esp32_board_has_two_app_slots():
    """No shipped board for a real chip is left without a second slot (issue #22)."""
    for path in BOARDS:
        data = json.loads(path.read_text())
        if data["hal"] != "machine":
            continue
        subtypes = {entry["subtype"] for entry in data.get("partitions", [])}
        assert {"ota_0", "ota_1", "ota"} <= subtypes, path.name


PLAIN_CASES = [
    ("partitions.5.offset", lambda b: partition(b, "ota_1").update(size=0x190000), "overlaps"),
    ("partitions.5", lambda b: b["flash"].update(fs_offset=0x200000, fs_size=0x200000),
     "flash.fs_offset"),
    ("partitions.5.size", lambda b: partition(b, "vfs").update(size=0x100000), "past flash.size"),
    ("partitions", lambda b: b["partitions"].pop(4), "OTA needs ota_0, ota_1 and otadata"),
]  # fmt: skip


@pytest.mark.parametrize(
    "field,change,problem", PLAIN_CASES, ids=[c[0] + ":" + c[2] for c in PLAIN_CASES]
)
def test_broken_plain_board_table_names_file_and_field(field, change, problem, tmp_path):
    path = tmp_path / "esp32-lock.json"
    path.write_text(json.dumps(broken("esp32-lock", change)))
    with pytest.raises(boards.BoardError) as error:
        boards.load(str(path))
    message = str(error.value)
    assert message.startswith(str(path) + ": field '" + field + "'"), message
    assert problem in message


def broken(name: str, change) -> dict:
    data = copy.deepcopy(board(name))
    change(data)
    return data


CASES = [
    ("relay.pin", lambda b: b["relay"].update(pin="26"), "must be a whole number"),
    ("relay.pin", lambda b: b["relay"].update(pin=35), "input only"),
    ("inputs.exit.pin", lambda b: b["inputs"]["exit"].update(pin=27), "already used"),
    ("relay", lambda b: b.pop("relay"), "role 'lock' needs it"),
    ("flash.fs_size", lambda b: b["flash"].update(fs_size=0x300000), "exceeds flash.size"),
    ("flash.fs_offset", lambda b: b["flash"].update(fs_offset=1000), "multiple of"),
    ("relais", lambda b: b.update(relais={}), "unknown field"),
    ("inputs.doorbell", lambda b: b["inputs"].update(doorbell={"pin": 5}), "unknown input"),
    ("roles", lambda b: b.update(roles=["door"]), "unknown role"),
    ("pn532.bus", lambda b: b["pn532"].update(bus="spi"), "buses has no 'spi'"),
    ("led.kind", lambda b: b["led"].update(kind="oled"), "must be one of"),
    ("watchdog_ms", lambda b: b.update(watchdog_ms=10), "between 1000 and 60000"),
]


@pytest.mark.parametrize("field,change,problem", CASES, ids=[c[0] + ":" + c[2] for c in CASES])
def test_broken_board_names_file_and_field(field, change, problem, tmp_path):
    path = tmp_path / "esp32-lock.json"
    path.write_text(json.dumps(broken("esp32-lock", change)))
    with pytest.raises(boards.BoardError) as error:
        boards.load(str(path))
    message = str(error.value)
    assert message.startswith(str(path) + ": field '" + field + "'"), message
    assert problem in message


def partition(data: dict, name: str) -> dict:
    return next(entry for entry in data["partitions"] if entry["name"] == name)


# The PSRAM boards' new fields: the partition table, PSRAM, the firmware to flash, the S3's pins.
S3_CASES = [
    ("buses.i2c.sda", lambda b: b["buses"]["i2c"].update(sda=22), "absent on the ESP32-S3"),
    ("led.pin", lambda b: b["led"].update(pin=30), "SPI flash and PSRAM"),
    ("buzzer.pin", lambda b: b["buzzer"].update(pin=49), "between 0 and 48"),
    ("partitions.4.offset", lambda b: partition(b, "ota_1").update(offset=0x270000), "overlaps"),
    ("partitions.3.offset", lambda b: partition(b, "ota_0").update(offset=0x11000), "64 KiB"),
    ("partitions.5.size", lambda b: partition(b, "vfs").update(size=0x400000), "past flash.size"),
    ("partitions.5", lambda b: b["flash"].update(fs_size=0x300000), "flash.fs_offset"),
    ("partitions", lambda b: b["partitions"].pop(1), "OTA needs ota_0, ota_1 and otadata"),
    ("partitions", lambda b: b["partitions"].pop(), "no 'vfs' partition"),
    ("partitions.0.subtype", lambda b: partition(b, "nvs").update(subtype="ota_0"), "one of"),
    ("partitions.2.name", lambda b: partition(b, "phy_init").update(name="nvs"), "already"),
    ("partitions.0.flags", lambda b: partition(b, "nvs").update(flags="encrypted"), "unknown"),
    ("firmware.build", lambda b: b["firmware"].update(build="custom"), "stock, frozen"),
    ("psram", lambda b: b.update(psram=-1), "between 0 and"),
]


@pytest.mark.parametrize(
    "field,change,problem", S3_CASES, ids=[c[0] + ":" + c[2] for c in S3_CASES]
)
def test_broken_psram_board_names_file_and_field(field, change, problem, tmp_path):
    path = tmp_path / "esp32s3-devkitc.json"
    path.write_text(json.dumps(broken("esp32s3-devkitc", change)))
    with pytest.raises(boards.BoardError) as error:
        boards.load(str(path))
    message = str(error.value)
    assert message.startswith(str(path) + ": field '" + field + "'"), message
    assert problem in message


def test_wrover_keeps_the_psram_pins_free(tmp_path):
    path = tmp_path / "esp32-wrover.json"
    path.write_text(json.dumps(broken("esp32-wrover", lambda b: b["buzzer"].update(pin=16))))
    with pytest.raises(boards.BoardError, match="'buzzer.pin': GPIO16 is not free.*PSRAM"):
        boards.load(str(path))
    # the same pin on a plain ESP32 (no PSRAM) is free
    board_data = broken("esp32-devkitc", lambda b: b["buzzer"].update(pin=16))
    assert boards.validate(board_data, "esp32-devkitc.json")["buzzer"]["pin"] == 16


def test_psram_boards_are_ota_ready_and_run_stock_firmware():
    for name, download in (("esp32s3-devkitc", "ESP32_GENERIC_S3"),
                           ("esp32-wrover", "ESP32_GENERIC-SPIRAM")):  # fmt: skip
        data = board(name)
        assert data["psram"] >= 2 * 1024 * 1024
        assert data["firmware"] == {"build": "stock", "download": download}
        table = {entry["name"]: entry for entry in data["partitions"]}
        # MicroPython's partitions-8MiBplus-ota.csv, its implicit vfs made explicit
        assert [(e["subtype"], e["offset"], e["size"]) for e in data["partitions"][:5]] == [
            ("nvs", 0x9000, 0x4000), ("ota", 0xD000, 0x2000), ("phy", 0xF000, 0x1000),
            ("ota_0", 0x10000, 0x270000), ("ota_1", 0x280000, 0x270000),
        ]  # fmt: skip
        vfs = table["vfs"]
        assert (vfs["offset"], vfs["size"]) == (
            data["flash"]["fs_offset"],
            data["flash"]["fs_size"],
        )
        assert vfs["offset"] + vfs["size"] == data["flash"]["size"] == 8 * 1024 * 1024
        # the device never reads the table (esp32.Partition does): dropped once checked
        assert "partitions" not in boards.load(str(ROOT / "boards" / f"{name}.json"))
    for name in PLAIN:
        assert board(name)["firmware"]["build"] == "frozen" and board(name)["psram"] == 0
        assert "frozen build" in board(name)["description"]


def test_unreadable_and_non_json_boards(tmp_path):
    with pytest.raises(boards.BoardError, match="cannot read the board file"):
        boards.load(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(boards.BoardError, match="bad.json: not valid JSON"):
        boards.load(str(bad))


def test_unix_port_gives_the_same_verdicts(micropython, tmp_path):
    cases = [("esp32-lock", *case) for case in CASES]
    cases += [("esp32s3-devkitc", *case) for case in S3_CASES]
    for index, (name, _, change, _) in enumerate(cases):
        (tmp_path / f"case{index}.json").write_text(json.dumps(broken(name, change)))
    out = micropython(
        f"""
        from device.board import boards
        for path in {[str(p) for p in BOARDS]!r}:
            print("ok", boards.load(path)["name"])
        for index in range({len(cases)}):
            try:
                boards.load("{tmp_path}/case%d.json" % index)
                print("accepted", index)
            except boards.BoardError as error:
                print(error)
        """
    )
    lines = out.strip().splitlines()
    assert lines[: len(BOARDS)] == [f"ok {p.stem}" for p in BOARDS]
    expected = []
    for index, (name, _, change, _) in enumerate(cases):
        try:
            boards.validate(broken(name, change), f"{tmp_path}/case{index}.json")
        except boards.BoardError as error:
            expected.append(str(error))
    assert len(expected) == len(cases) == len(lines) - len(BOARDS)
    # MicroPython prints reprs a little differently; the file, field and problem must agree
    for device_line, host_line, (_, field, _, problem) in zip(
        lines[len(BOARDS) :], expected, cases
    ):
        assert device_line.split(":")[:2] == host_line.split(":")[:2]
        assert f"'{field}'" in device_line and problem in device_line


def test_the_checks_leave_the_heap_after_use(micropython, tmp_path):
    # Board and config checks run once at boot (and on a rare config command): device.forget
    # drops their modules so the garbage collector takes their functions and tables back.
    config = {
        "device": "tag-0042",
        "role": "tag",
        "board": "sim",
        "broker": {"host": "127.0.0.1"},
        "salt": "00" * 16,
        "org_public_key": "11" * 32,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = micropython(
        f"""
        import gc, sys
        from device.board import boards, config
        from device.link.clock import Clock
        gc.collect()
        before = gc.mem_alloc()
        board = boards.load("{ROOT}/boards/sim.json")
        settings = config.load("{tmp_path}/config.json")
        Clock()
        loaded = sorted(m for m in sys.modules if m.startswith("device."))
        print("loaded", loaded)
        import device, device.board, device.link
        print("attributes", [n for n in ("board_check", "config_check") if hasattr(device.board, n)]
              + [n for n in ("ntp",) if hasattr(device.link, n)])
        from device.board import board_check
        gc.collect()
        with_checks = gc.mem_alloc()
        device.forget("device.board.board_check")
        del board_check
        gc.collect()
        print("freed", with_checks - gc.mem_alloc() > 0)
        """
    )
    assert (
        "loaded ['device.board', 'device.board.boards', 'device.board.config',"
        " 'device.board.errors', 'device.link', 'device.link.clock']" in out
    )
    assert "attributes []" in out
    assert "freed True" in out
