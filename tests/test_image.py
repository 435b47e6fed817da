"""`kvitto image`: a littlefs2 image with the firmware as .mpy, the board file and the device
config, which the unix port mounts through `vfs.VfsLfs2` and boots from (no firmware/ on the
path: every import comes out of the image)."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from kvitto.cli import cli
from kvitto.errors import KvittoError
from kvitto.install.image import BOARD_FILE, CONFIG_FILE, build_image, load_board, read_image
from kvitto.paths import FIRMWARE


def device_config(device="tag-0042", board="sim", role="tag"):
    return {
        "device": device,
        "role": role,
        "board": board,
        "broker": {"host": "127.0.0.1", "port": 1883, "user": device, "password": "p" * 43},
        "salt": "11" * 32,
        "org_public_key": "22" * 32,
        "ntp": [],
    }


# Mounts an image file the way a virtual board does, then boots main.py from it with only the
# image and the port's frozen modules importable.
BOOT_FROM_IMAGE = """
import os, sys, vfs
from sim.flash import FileBlockDevice

image = sys.argv[1]
size = os.stat(image)[6]
device = FileBlockDevice(image, block_size=4096, block_count=size // 4096)
vfs.mount(vfs.VfsLfs2(device), "/flash")
sys.path[:] = ["/flash", ".frozen"]
for name in list(sys.modules):
    if name == "device" or name.startswith("device.") or name.startswith("sim"):
        del sys.modules[name]
os.chdir("/flash")
print("files", sorted(os.listdir("/flash")))
print("config", open("config.json").read())
sys.argv.append("--selftest")  # a builtin module: mutate, not rebind
exec(open("main.py").read(), {"__name__": "__main__"})
import device
print("device from", device.__file__)
"""


@pytest.fixture(scope="module")
def sim_image(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "sim.bin"
    report = build_image("sim", out, device_config())
    return out, report


def test_image_holds_firmware_board_and_config(sim_image):
    path, report = sim_image
    board = load_board("sim")
    assert path.stat().st_size == board.fs_size == report.fs_size
    assert report.fs_offset == board.fs_offset
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the config carries a password
    files = read_image(path, "sim")
    assert json.loads(files[CONFIG_FILE]) == device_config()
    assert json.loads(files[BOARD_FILE])["name"] == "sim"
    assert files["main.py"].startswith(b'"""')  # boot entry stays source
    assert "device/__init__.mpy" in files and "device/__init__.py" not in files
    assert any(name.startswith("sim/") for name in files)  # simulated HAL for the sim board
    assert files["device/__init__.mpy"][:1] == b"M"  # .mpy magic


def test_unix_port_mounts_the_image_and_boots_from_it(micropython, sim_image, tmp_path):
    path, _ = sim_image
    copy = tmp_path / "flash.bin"
    copy.write_bytes(path.read_bytes())  # mounting may write (mtime attributes)
    out = micropython(BOOT_FROM_IMAGE, args=[str(copy)])
    assert "'main.py'" in out and "'device'" in out and "'config.json'" in out
    assert '"device": "tag-0042"' in out
    assert "kvitto firmware" in out  # main.py ran
    assert "device from /flash/device/__init__.mpy" in out


def test_real_board_image_leaves_the_simulator_out(tmp_path):
    report = build_image("esp32-devkitc", tmp_path / "fs.bin")
    assert not [name for name in report.files if name.startswith("sim/")]
    assert CONFIG_FILE not in report.files  # a generic image: provisioning writes the config
    files = read_image(tmp_path / "fs.bin", "esp32-devkitc")
    # mpy header: magic 'M', version 6; the arch nibble is xtensawin (9) only with native code,
    # so check the compiler ran rather than the arch.
    header = files["device/__init__.mpy"]
    assert header[0:2] == b"M\x06"


def test_frozen_firmware_image_leaves_the_device_package_out(tmp_path):
    # The firmware built with firmware/manifest.py has device/ in flash; a copy on littlefs
    # would shadow it (and load its bytecode into the heap), so the image goes without.
    result = CliRunner().invoke(
        cli,
        ["image", "--board", "esp32-devkitc", "--frozen", "--out", str(tmp_path / "fs.bin")]
        + ["--format", "json"],
    )
    assert result.exit_code == 0, result.output
    names = set(json.loads(result.output)["files"])
    assert names == {"boot.py", "main.py", "board.json"}
    manifest = (FIRMWARE / "manifest.py").read_text()
    assert 'package("device")' in manifest


def test_same_input_gives_the_same_file_list(tmp_path):
    first = build_image("sim", tmp_path / "a.bin", device_config())
    second = build_image("sim", tmp_path / "b.bin", device_config(device="tag-0043"))
    assert first.files.keys() == second.files.keys()
    assert first.sha256 != second.sha256


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c.pop("salt"), "field 'salt' is missing"),
        (lambda c: c.update(device="Tag 42"), "field 'device'"),
        (lambda c: c.update(board="esp32-lock"), "field 'board'"),
        (lambda c: c.update(salt="zz"), "field 'salt' must be hex"),
    ],
    ids=["missing-salt", "bad-device", "other-board", "bad-salt"],
)
def test_bad_config_is_refused_naming_the_field(tmp_path, change, message):
    config = device_config()
    change(config)
    path = tmp_path / "tag.json"
    path.write_text(json.dumps(config))
    with pytest.raises(KvittoError, match=message) as error:
        build_image("sim", tmp_path / "fs.bin", path)
    assert str(path) in str(error.value)


def test_role_the_board_lacks_is_refused(tmp_path):
    with pytest.raises(KvittoError, match="field 'role'"):
        build_image(
            "esp32-devkitc", tmp_path / "fs.bin", device_config("tag-1", "esp32-devkitc", "lock")
        )


def test_bad_board_files_name_the_field(tmp_path):
    board = json.loads(load_board("sim").source.read_text())
    board["flash"]["fs_size"] = board["flash"]["size"] * 2
    path = tmp_path / "big.json"
    path.write_text(json.dumps(board))
    with pytest.raises(KvittoError, match="field 'flash'"):
        load_board(path)
    with pytest.raises(KvittoError, match="no such board file"):
        load_board("no-such-board")


def test_files_too_big_for_the_filesystem(tmp_path):
    board = json.loads(load_board("sim").source.read_text())
    board["flash"]["fs_size"] = 4 * 4096
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(board))
    with pytest.raises(KvittoError, match="do not fit"):
        build_image(path, tmp_path / "fs.bin")


def test_cli_image_json(tmp_path):
    config = tmp_path / "tag.json"
    config.write_text(json.dumps(device_config()))
    result = CliRunner().invoke(
        cli,
        ["image", "--board", "sim", "--config", str(config), "--out", str(tmp_path / "fs.bin")]
        + ["--format", "json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["device"] == "tag-0042" and report["board"] == "sim"


def test_virtual_board_mounts_the_image_and_runs(sim_image, tmp_path):
    """The image as a virtual board's flash: it reads config.json from it, boots and taps."""
    from kvitto.sim.board import VirtualBoard

    path, _ = sim_image
    (tmp_path / "flash.img").write_bytes(path.read_bytes())
    board = VirtualBoard(tmp_path, "tag-0042", provision=False, proxy=False)
    board.start()
    try:
        status = board.wait_ready(60)
        assert status["device"] == "tag-0042"
        board.tap("badge", "04a1b2c3")
        events = board.wait_events(2, 30)
        assert [event["type"] for event in events[:2]] == ["boot", "arrive"]
        # credential id = HMAC-SHA256(salt from the image's config, UID)[:16]
        from kvitto.install.enroll import credential_id

        assert events[1]["cred"] == credential_id(bytes.fromhex("11" * 32), "04a1b2c3")
    finally:
        board.stop()


# A virtual board whose code, too, comes out of the image: the launcher mounts a read-only copy
# at /rom and runs /rom/main.py with only /rom and the port's frozen modules importable, while
# the board's data flash (config, key, journal) is the image itself, mounted by the sim HAL.
ROM_LAUNCHER = """
import sys, vfs

class RomBlocks:
    def __init__(self, path):
        self.file = open(path, "rb")
        self.file.seek(0, 2)
        self.count = self.file.tell() // 4096

    def readblocks(self, block, buf, offset=0):
        self.file.seek(block * 4096 + offset)
        self.file.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        raise OSError(30)  # EROFS

    def ioctl(self, op, arg):
        return {4: self.count, 5: 4096}.get(op, 0)

vfs.mount(vfs.VfsLfs2(RomBlocks(%r), mtime=False), "/rom", readonly=True)
sys.path[:] = ["/rom", ".frozen"]
exec(open("/rom/main.py").read(), {"__name__": "__main__"})
"""


def test_virtual_board_runs_the_compiled_firmware_from_the_image(sim_image, tmp_path, monkeypatch):
    import kvitto.sim.board
    from kvitto.sim.board import VirtualBoard

    path, _ = sim_image
    rom = tmp_path / "rom.img"
    rom.write_bytes(path.read_bytes())
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    (launcher / "main.py").write_text(ROM_LAUNCHER % str(rom))
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "sim.json").write_bytes(read_image(path, "sim")[BOARD_FILE])  # the image's own
    monkeypatch.setattr(kvitto.sim.board, "FIRMWARE", launcher)
    monkeypatch.setattr(kvitto.sim.board, "BOARDS", boards)
    monkeypatch.setattr(kvitto.sim.board, "micropython_path", lambda *extra: ".frozen")
    board_dir = tmp_path / "board"
    board_dir.mkdir()
    (board_dir / "flash.img").write_bytes(path.read_bytes())
    board = VirtualBoard(board_dir, "tag-0042", provision=False, proxy=False)
    board.start()
    try:
        assert board.wait_ready(60)["device"] == "tag-0042"
        board.tap("badge", "04a1b2c3")
        assert [e["type"] for e in board.wait_events(2, 30)[:2]] == ["boot", "arrive"]
        from mpremote.transport_serial import SerialTransport

        console = SerialTransport(board.serial_port)
        console.enter_raw_repl(soft_reset=False)
        out = console.exec(
            "import device, sim.hal_sim; print(device.__file__, sim.hal_sim.__file__)"
        )
        console.close()
        assert out.decode().split() == ["/rom/device/__init__.mpy", "/rom/sim/hal_sim.mpy"]
    finally:
        board.stop()


SIGN_FROM_IMAGE = """
import gc, os, sys, vfs
from sim.flash import FileBlockDevice

image = sys.argv[1]
device = FileBlockDevice(image, block_size=4096, block_count=os.stat(image)[6] // 4096)
vfs.mount(vfs.VfsLfs2(device), "/flash")
sys.path[:] = ["/flash", ".frozen"]
for name in list(sys.modules):
    if name == "device" or name.startswith("device.") or name.startswith("sim"):
        del sys.modules[name]
from device.evidence import ed25519
print("from", ed25519.__file__)
print("signature", ed25519.sign(bytes(range(32)), b"kvitto").hex())
print("table module loaded", "device.evidence.ed25519_table" in sys.modules)
"""


def test_stock_image_reads_the_ed25519_table_from_a_file_not_the_heap(
    micropython, sim_image, tmp_path
):
    """On a stock firmware an imported .mpy copies its bytes constants into the heap; the image
    carries the 16 KiB comb table as a file too, and signing reads it from there, giving the
    same signatures as the table constant does."""
    from kvitto.install.image import TABLE_MODULE

    path, _ = sim_image
    files = read_image(path, "sim")
    table = files["device/evidence/ed25519_table.bin"]
    namespace: dict = {}
    exec((FIRMWARE / TABLE_MODULE).read_text(), namespace)
    assert table == namespace["TABLE"] and len(table) == 255 * 64
    copy = tmp_path / "flash.bin"
    copy.write_bytes(path.read_bytes())
    out = micropython(SIGN_FROM_IMAGE, args=[str(copy)])
    assert "from /flash/device/evidence/ed25519.mpy" in out
    assert "table module loaded False" in out
    # the same signature from the source tree, where the constant is used (frozen builds too)
    source = micropython(
        "from device.evidence import ed25519\n"
        "import sys\n"
        "print('signature', ed25519.sign(bytes(range(32)), b'kvitto').hex())\n"
        "print('table module loaded', 'device.evidence.ed25519_table' in sys.modules)\n"
    )
    signature = [line for line in out.splitlines() if line.startswith("signature")]
    assert signature == [line for line in source.splitlines() if line.startswith("signature")]
    assert "table module loaded True" in source
    # and RFC 8032 as the cryptography package computes it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    expected = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).sign(b"kvitto").hex()
    assert signature == [f"signature {expected}"]
