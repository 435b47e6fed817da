"""Write MicroPython and a kvitto filesystem image to a board through esptool's Python API.

    plan = plan_flash("esp32-devkitc", Path("micropython.bin"), Path("fs.bin"), port=None)
    print(plan.esptool_chains())      # what will run: erase + write, then verify
    run_plan(plan)                    # esptool.main(chain) for each, with a rich progress bar

esptool is driven through its documented command chains (`esptool.main([...])`, the same
arguments as its command line) and its image API (`bin_image.LoadFirmwareImage`); its
human-readable output is never parsed. Offsets come from the board file: the filesystem at
flash.fs_offset, MicroPython at the chip's image offset (0x1000 on the ESP32, 0x0 on later chips).
A board file with a partition table (every ESP32 board: two OTA app slots, otadata and vfs) gets
it written at 0x8000 in place of the firmware's own (`with_partition_table`), and esptool is told
the board's flash size; an app larger than the board's slot (1.5 MiB on the 4 MB boards) is refused.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from esp_pylib.logger import EspLog
from esptool.logger import TemplateLogger, log

from kvitto.errors import KvittoError
from kvitto.install.image import Board, load_board

# Where MicroPython's (merged) firmware image starts, per chip: ESP-IDF's bootloader offset.
FIRMWARE_OFFSET = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
}
# ESP-IDF's partition table (gen_esp32part.py's binary format): at 0x8000, 32 bytes an entry,
# then an MD5 entry over the entries, padded with 0xFF to 0xC00 bytes.
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_BYTES = 0xC00
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
PARTITION_TYPES = {"app": 0x00, "data": 0x01}
PARTITION_SUBTYPES = {
    "app": {"factory": 0x00, "ota_0": 0x10, "ota_1": 0x11},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}
# USB-serial bridges on ESP32 boards (VID, PID) -> name; ports with other ids are not offered.
ESP32_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-JTAG/serial",
}
DEFAULT_BAUD = 460800
# esptool's image header: 8 bytes, then the 16-byte extended header of the ESP32 family.
IMAGE_HEADER_BYTES = 24
NO_BOARD = "PORT"  # a dry run with no board plugged in: the chains name it so


@dataclass(frozen=True)
class SerialPort:
    device: str
    bridge: str
    serial_number: str | None = None


def esp32_ports(comports: Callable[[], Sequence[Any]] | None = None) -> list[SerialPort]:
    """Serial ports whose USB VID:PID is a known ESP32 bridge (pyserial's list_ports)."""
    if comports is None:
        from serial.tools.list_ports import comports
    found = []
    for port in comports():
        bridge = ESP32_BRIDGES.get((port.vid, port.pid)) if port.vid is not None else None
        if bridge:
            found.append(SerialPort(port.device, bridge, port.serial_number))
    return sorted(found, key=lambda p: p.device)


def pick_port(port: str | None, comports: Callable[[], Sequence[Any]] | None = None) -> str:
    """The given port, or the only ESP32 bridge plugged in; otherwise say what to do."""
    if port:
        return port
    candidates = esp32_ports(comports)
    if not candidates:
        raise KvittoError(
            "no ESP32 USB bridge found (CP210x, CH340/CH9102, FTDI, Espressif USB-JTAG): "
            "plug the board in or give --port"
        )
    if len(candidates) > 1:
        names = ", ".join(f"{p.device} ({p.bridge})" for p in candidates)
        raise KvittoError(f"several ESP32 boards are plugged in: {names}; choose one with --port")
    return candidates[0].device


@dataclass(frozen=True)
class FlashPlan:
    """Everything `kvitto flash` will do; `esptool_chains()` are the exact esptool arguments."""

    board: str
    chip: str
    port: str
    baud: int
    firmware: str | None
    firmware_offset: int
    image: str
    fs_offset: int
    fs_size: int
    erase: bool = True
    connect_attempts: int = 7
    flash_size: str = "keep"  # the board's size ("8MB") when its own partition table is written

    def _connection(self, after: str) -> list[str]:
        return [
            "--chip", self.chip, "--port", self.port, "--baud", str(self.baud),
            "--before", "default-reset", "--after", after,
            "--connect-attempts", str(self.connect_attempts),
        ]  # fmt: skip

    def regions(self) -> list[str]:
        pairs = []
        if self.firmware:
            pairs += [hex(self.firmware_offset), self.firmware]
        return pairs + [hex(self.fs_offset), self.image]

    def esptool_chains(self) -> list[list[str]]:
        """Erase and write (esptool checks each region's MD5 after writing), then read the
        flash back in a separate verify-flash pass and reset the board into MicroPython."""
        write = [*self._connection("no-reset"), "write-flash"]
        if self.erase:
            write.append("--erase-all")
        write += ["--flash-size", self.flash_size, *self.regions()]
        # the same --flash-size: esptool writes it into the bootloader's header (and digest)
        # and compares against the file changed the same way, or verify-flash fails
        verify = [*self._connection("hard-reset"), "verify-flash", "--flash-size",
                  self.flash_size, *self.regions()]  # fmt: skip
        return [write, verify]

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["esptool"] = self.esptool_chains()
        return result


def check_firmware(path: Path, chip: str) -> None:
    """The file is an ESP firmware image for this chip (esptool's image loader decides); a file
    that is not gets one line naming it and what is wrong, before anything reaches a board."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    if not path.is_file():
        raise KvittoError(f"{path}: no such firmware file")
    size = path.stat().st_size
    if size < IMAGE_HEADER_BYTES:
        what = (
            "the file is empty"
            if size == 0
            else f"{size} bytes, shorter than its {IMAGE_HEADER_BYTES}-byte header"
        )
        raise KvittoError(f"{path}: not an {chip} firmware image: {what}")
    try:
        image = LoadFirmwareImage(chip, str(path))
    except (FatalError, ValueError, OSError, RuntimeError) as error:
        raise KvittoError(f"{path}: not an {chip} firmware image: {_reason(error)}") from None
    except Exception as error:  # the loader reading past the end of a cut-short file
        # A header that promises more than the file holds fails deep in the loader (struct,
        # ord(b""), an index): whatever it raises, the file is not an image.
        raise KvittoError(
            f"{path}: not an {chip} firmware image: cut short or garbled "
            f"(esptool's image loader: {type(error).__name__}: {_reason(error)})"
        ) from None
    # The loader reads a header it does not check: a random one passes with no segments and
    # a checksum that is not theirs; esptool's image-info calls such an image invalid.
    if not image.segments:
        raise KvittoError(f"{path}: not an {chip} firmware image: it holds no segments")
    if image.checksum != image.calculate_checksum():
        raise KvittoError(
            f"{path}: not an {chip} firmware image: its checksum 0x{image.checksum:02x} "
            f"does not match its segments (0x{image.calculate_checksum():02x})"
        )


def partition_table(partitions: list[dict[str, Any]]) -> bytes:
    """The board file's partition table in ESP-IDF's binary form (what gen_esp32part.py makes
    of the same CSV): the bootloader and MicroPython's esp32.Partition read it at 0x8000."""
    import hashlib

    entries = b"".join(
        struct.pack(
            "<2sBBLL16sL",
            _ENTRY_MAGIC,
            PARTITION_TYPES[entry["type"]],
            PARTITION_SUBTYPES[entry["type"]][entry["subtype"]],
            entry["offset"],
            entry["size"],
            entry["name"].encode(),
            0,
        )
        for entry in partitions
    )
    table = entries + _MD5_MAGIC + hashlib.md5(entries).digest()
    return table + b"\xff" * (PARTITION_TABLE_BYTES - len(table))


def with_partition_table(firmware: Path, layout: Board, out: Path) -> Path:
    """A copy of MicroPython's merged firmware (bootloader, partition table, app) with the
    board's own partition table in place of the stock one, written to `out`: the stock app lands
    in ota_0 and, with otadata erased, the bootloader starts it. Refused with one line when the
    file has no partition table where it should, or its app does not fit the app slot."""
    offset = FIRMWARE_OFFSET[layout.chip]
    data = bytearray(firmware.read_bytes())
    at = PARTITION_TABLE_OFFSET - offset
    if data[at : at + 2] != _ENTRY_MAGIC:
        raise KvittoError(
            f"{firmware}: no partition table at {PARTITION_TABLE_OFFSET:#x}: board "
            f"{layout.name} needs MicroPython's whole firmware file (bootloader, partition table "
            "and app, as micropython.org/download has it), not the app alone"
        )
    table = layout.data["partitions"]
    try:
        app = next(e for e in table if e["type"] == "app")
        binary = partition_table(table)
    except (KeyError, TypeError, StopIteration, struct.error, AttributeError):
        raise KvittoError(
            f"{layout.source}: field 'partitions' is not a partition table the board check "
            "accepts (name, type, subtype, offset, size; an app partition)"
        ) from None
    app_bytes = len(data) - (app["offset"] - offset)
    if app_bytes > app["size"]:
        raise KvittoError(
            f"{firmware}: its app ({app_bytes} bytes from {app['offset']:#x}) does not fit "
            f"partition {app['name']} of board {layout.name} ({app['size']} bytes): "
            + _smaller_firmware(layout)
        )
    data[at : at + PARTITION_TABLE_BYTES] = binary
    out.write_bytes(bytes(data))
    return out


def _smaller_firmware(layout: Board) -> str:
    """What to flash instead of a firmware too large for the board's app slot."""
    firmware = layout.data.get("firmware") or {}
    download = firmware.get("download", "MicroPython's board build")
    if firmware.get("build") == "frozen":
        board, _, variant = download.partition("-")
        build = f"BOARD={board}" + (f" BOARD_VARIANT={variant}" if variant else "")
        return (
            f"build it as {download} (make {build} FROZEN_MANIFEST=firmware/manifest.py; "
            "MicroPython's OTA variant is built smaller for this slot), and if that is still "
            "too large, leave modules the roles do not use out of the port's manifest"
        )
    return f"flash {download} from micropython.org"


def _reason(error: BaseException) -> str:
    """esptool's message in one line; some of its errors carry a %-format and its values."""
    args = error.args
    if len(args) > 1 and isinstance(args[0], str) and "%" in args[0]:
        with contextlib.suppress(TypeError, ValueError):
            return _first_line(args[0] % args[1:])
    return _first_line(error)


def plan_flash(
    board: str | Path,
    firmware: Path | None,
    image: Path,
    port: str | None = None,
    baud: int = DEFAULT_BAUD,
    erase: bool = True,
    comports: Callable[[], Sequence[Any]] | None = None,
) -> FlashPlan:
    """Check the files against the board's flash layout and decide the esptool chains."""
    layout: Board = load_board(board)
    if layout.chip not in FIRMWARE_OFFSET:
        raise KvittoError(f"board {layout.name}: chip {layout.chip!r} is not flashed by esptool")
    if not image.is_file():
        raise KvittoError(f"{image}: no such filesystem image (build it with `kvitto image`)")
    if image.stat().st_size != layout.fs_size:
        raise KvittoError(
            f"{image}: {image.stat().st_size} bytes, but board {layout.name}'s filesystem is "
            f"{layout.fs_size} bytes (build it with `kvitto image --board {layout.name}`)"
        )
    offset = FIRMWARE_OFFSET[layout.chip]
    flash_size = "keep"
    if firmware is not None:
        check_firmware(firmware, layout.chip)
        if "partitions" in layout.data:
            # the board's OTA layout replaces the stock table, in a copy beside the image
            firmware = with_partition_table(
                firmware, layout, image.with_name(f"{firmware.stem}.{layout.name}.bin")
            )
            flash_size = f"{layout.flash_size // 0x100000}MB"
        if offset + firmware.stat().st_size > layout.fs_offset:
            raise KvittoError(
                f"{firmware}: {firmware.stat().st_size} bytes from {offset:#x} would overwrite "
                f"the filesystem at {layout.fs_offset:#x}"
            )
    elif erase:
        raise KvittoError("--erase needs --firmware: erasing would remove MicroPython itself")
    return FlashPlan(
        board=layout.name,
        chip=layout.chip,
        port=pick_port(port, comports),
        baud=baud,
        firmware=str(firmware) if firmware else None,
        firmware_offset=offset,
        image=str(image),
        fs_offset=layout.fs_offset,
        fs_size=layout.fs_size,
        erase=erase,
        flash_size=flash_size,
    )


class _RichProgress(TemplateLogger):
    """esptool's documented custom-logger interface, drawing its progress as a rich bar."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.task: Any = None

    def print(self, *args: Any, **kwargs: Any) -> None:
        pass  # esptool's prose is not an interface; the bar and our summary are the output

    def note(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        self.progress.console.print(f"[yellow]esptool: {message}")

    def warn(self, message: str, suggestion: str | None = None) -> None:
        self.warning(message)

    def error(self, message: str) -> None:
        self.progress.console.print(f"[red]esptool: {message}")

    def err(self, message: str, suggestion: str | None = None) -> None:
        self.error(message)

    def debug(self, *args: Any) -> None:
        pass

    def stage(self, finish: bool = False) -> None:
        pass

    def set_verbosity(self, verbosity: str) -> None:
        pass

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        if self.task is None:
            self.task = self.progress.add_task(prefix.strip() or "flash", total=total_iters)
        self.progress.update(self.task, completed=cur_iter, total=total_iters)
        if cur_iter >= total_iters:
            self.task = None


@contextlib.contextmanager
def _progress_logger() -> Iterator[None]:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    previous = EspLog.instance
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()) as bar:
        cast(Any, log).set_logger(_RichProgress(bar))  # esptool's documented custom logger
        try:
            yield
        finally:
            EspLog.instance = previous


def run_esptool(chain: list[str]) -> None:
    """One esptool command chain through `esptool.main`; its failures become KvittoErrors."""
    import esptool
    import serial
    from esptool.util import FatalError

    try:
        esptool.main(chain)
    except FatalError as error:
        raise KvittoError(f"esptool {_command(chain)}: {_first_line(error)}") from None
    except serial.SerialException as error:
        raise KvittoError(
            f"esptool {_command(chain)}: serial port: {_first_line(error)}"
        ) from None
    except SystemExit as error:
        raise KvittoError(f"esptool {_command(chain)}: exited {error.code}") from None


ESPTOOL_COMMANDS = ("write-flash", "verify-flash", "erase-flash", "merge-bin", "image-info")


def _command(chain: list[str]) -> str:
    return next((arg for arg in chain if arg in ESPTOOL_COMMANDS), "?")


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def run_plan(
    plan: FlashPlan, runner: Callable[[list[str]], None] = run_esptool, progress: bool = True
) -> None:
    """Run the plan's chains in order; `runner` is esptool unless a test replaces it. Without
    `progress` esptool says nothing (for --format json, whose stdout is the report)."""
    context = _progress_logger() if progress else _silent_logger()
    with context:
        for chain in plan.esptool_chains():
            runner(chain)


class _Silent(TemplateLogger):
    """esptool's logger interface, saying nothing (our own report is the output)."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def stage(self, finish: bool = False) -> None:
        pass

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "",
                     suffix: str = "", bar_length: int = 30) -> None:  # fmt: skip
        pass

    def set_verbosity(self, verbosity: str) -> None:
        pass


@contextlib.contextmanager
def _silent_logger() -> Iterator[None]:
    previous = EspLog.instance
    cast(Any, log).set_logger(_Silent())
    try:
        yield
    finally:
        EspLog.instance = previous


def merge(plan: FlashPlan, out: Path) -> Path:
    """One file for factory programmers: firmware and filesystem at their offsets from 0x0
    (esptool merge-bin, which needs no chip)."""
    with _silent_logger():
        run_esptool(["--chip", plan.chip, "merge-bin", "--output", str(out), *plan.regions()])
    return out


def run_flash(
    board: str,
    firmware: str | None,
    image: str,
    port: str | None,
    baud: int,
    erase: bool,
    dry_run: bool,
    merged: str | None,
    output_format: str,
) -> FlashPlan:
    """`kvitto flash`: plan, then print it (--dry-run), merge it (--merged) or run it."""
    import click

    if merged and not port:
        port = "(none)"  # merging needs no board
    if dry_run and not port:  # a plan needs no board: show the one plugged in, if any
        try:
            port = pick_port(None)
        except KvittoError:
            port = NO_BOARD
    plan = plan_flash(board, Path(firmware) if firmware else None, Path(image), port, baud, erase)
    if merged:
        merge(plan, Path(merged))
    elif not dry_run:
        run_plan(plan, progress=output_format != "json")
    if output_format == "json":
        report = plan.as_dict()
        report["done"] = not dry_run and not merged
        report["merged"] = merged
        click.echo(json.dumps(report))
        return plan
    verb = "would run" if dry_run else "ran"
    if merged:
        click.echo(f"wrote {merged}: flash it at 0x0")
        return plan
    where = ", no board plugged in (give --port)" if plan.port == NO_BOARD else f" on {plan.port}"
    click.echo(f"board {plan.board} ({plan.chip}){where}:")
    if plan.firmware:
        click.echo(f"  MicroPython {plan.firmware} at {plan.firmware_offset:#x}")
    click.echo(f"  filesystem  {plan.image} at {plan.fs_offset:#x} ({plan.fs_size} bytes)")
    for chain in plan.esptool_chains():
        click.echo(f"  {verb}: esptool {' '.join(chain)}")
    return plan


def run_check(board: str, port: str | None, role: str, tls: bool, output_format: str) -> None:
    """`kvitto flash --check`: the memory pre-flight (kvitto.install.preflight) on a running
    board; one line either way, KvittoError (exit 2) when the board is short."""
    import click

    from kvitto.install.console import DeviceConsole
    from kvitto.install.preflight import preflight

    layout = load_board(board)
    console = DeviceConsole(pick_port(port))
    try:
        result = preflight(console, role, layout, wifi=True, tls=tls)  # boards reach out by Wi-Fi
    finally:
        console.close()
    click.echo(json.dumps(result.as_dict()) if output_format == "json" else result.line())
