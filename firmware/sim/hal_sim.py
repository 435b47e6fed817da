"""The simulated board for the unix port: pins, buttons, relay, LED, door contact, alarm input,
watchdog, RNG and a file-backed flash, behind the same interface as device.board.hal.MachineHal.

    from sim.hal_sim import SimHal
    board_hal = SimHal(board, flash="/tmp/tag.img", seed=b"s-07")
    board_hal.set_input("door", True); board_hal.tap("badge", b"\\x04\\xa1\\xb2\\xc3")

Outputs keep a history (ticks, value) so tests can check feedback and relay timing. Like the
parts it stands for, the board allocates nothing while it runs: its history and its PN532 model
take their room when it is built, so bench/device.py, which counts what a run adds to the heap
as the role's, counts none of the board's.
Never part of a board image.
"""

import array
import hashlib
import os
import sys
import time

from micropython import const

from device.board.hal import COLOURS

_TAP_HOLD_MS = const(300)
_HISTORY = const(64)  # changes kept per output: enough for a test, bounded for a long run
_WDT_POLL_MS = const(50)


class _Changes:
    """An output's last _HISTORY changes, (ticks, value) oldest first when iterated, in room
    taken once: a GPIO allocates nothing when it switches, and nor does its model."""

    def __init__(self, values):
        self._values = values  # what each stored index stands for
        self._ticks = array.array("q", [0] * _HISTORY)
        self._index = bytearray(_HISTORY)
        self._next = 0
        self._count = 0

    def add(self, ticks, value):
        slot = self._next
        self._ticks[slot] = ticks
        self._index[slot] = self._values.index(value)
        self._next = (slot + 1) % _HISTORY
        self._count = min(self._count + 1, _HISTORY)

    def __iter__(self):
        for back in range(self._count, 0, -1):
            slot = (self._next - back) % _HISTORY
            yield self._ticks[slot], self._values[self._index[slot]]


class SimOutput:
    """Relay, buzzer or one LED channel: state plus a history of changes."""

    def __init__(self, ticks):
        self._ticks = ticks
        self.state = False
        self.history = _Changes((False, True))
        self.history.add(ticks(), False)  # like machine: outputs start inactive

    def set(self, on):
        on = bool(on)
        if on != self.state:
            self.history.add(self._ticks(), on)
        self.state = on


class SimLed:
    def __init__(self, ticks):
        self._ticks = ticks
        self.colour = "off"
        self.history = _Changes(tuple(COLOURS))

    def show(self, colour):
        if colour not in COLOURS:
            raise ValueError("unknown LED colour %r" % (colour,))
        self.colour = colour
        self.history.add(self._ticks(), colour)


class SimInput:
    """An input whose level the simulation (a test, or the control channel) sets."""

    def __init__(self):
        self.active = False

    def value(self):
        return self.active


class SimWatchdog:
    """machine.WDT on the unix port: a thread checks the last feed and, once the timeout has
    passed, ends the process with SIGUSR1 as the chip's reset would (the host restarts it on
    the same flash and reports reset cause "wdt"). It watches the whole interpreter, so even a
    task that blocks the loop is caught, like the real timer group watchdog (TRM §13)."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._last = time.ticks_ms()
        self.fired = False
        import _thread

        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self._last = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(_WDT_POLL_MS)
            if time.ticks_diff(time.ticks_ms(), self._last) > self.timeout_ms:
                self.fired = True
                sys.stderr.write("WDT: not fed for %d ms, resetting\n" % self.timeout_ms)
                # $PPID of the shell os.system starts is this interpreter
                os.system("kill -USR1 $PPID")
                return


class _Discard:
    """A list that keeps nothing: the simulator's per-frame logs (made for driver tests) would
    grow a long-running virtual board's heap by every poll."""

    def append(self, item):
        pass

    def clear(self):
        pass

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())


class SimReset(Exception):
    """hal.reset() on the unix port: main.py ends the process; the host restarts it."""


class _FileBlocks:
    """Block device over a file, used only when sim.flash (the shared one) is absent."""

    def __init__(self, path, block_size, block_count):
        self.path = path
        self.block_size = block_size
        self.block_count = block_count
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size < block_size * block_count:
            with open(path, "ab") as file:
                file.write(b"\xff" * (block_size * block_count - size))
        self._file = open(path, "r+b")

    def readblocks(self, block, buf, offset=0):
        self._file.seek(block * self.block_size + offset)
        self._file.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            offset = 0
        self._file.seek(block * self.block_size + offset)
        self._file.write(buf)
        self._file.flush()

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase
            self._file.seek(arg * self.block_size)
            self._file.write(b"\xff" * self.block_size)
            self._file.flush()
            return 0
        return 0


def _is_blank(path, block_size):
    """True when the image does not exist yet or holds only erased (0xFF) or zero bytes."""
    try:
        with open(path, "rb") as image:
            while True:
                chunk = image.read(block_size)
                if not chunk:
                    return True
                if chunk.count(b"\xff") != len(chunk) and chunk.count(b"\x00") != len(chunk):
                    return False
    except OSError:
        return True


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def mount_flash(path, board, mountpoint="/flash"):
    """Mount the board's littlefs image file at `mountpoint` (formatting a new or blank one)."""
    import vfs

    flash = board["flash"]
    block_size = flash["block_size"]
    block_count = flash["fs_size"] // block_size
    try:
        from sim.flash import FileBlockDevice

        device = FileBlockDevice(path, block_size=block_size, block_count=block_count)
    except ImportError:
        device = _FileBlocks(path, block_size, block_count)
    try:
        filesystem = vfs.VfsLfs2(device)
    except OSError:
        # Format only a blank image: a used one that fails to mount is a fault to see (after a
        # torn write, say), never a reason to wipe the journal.
        if not _is_blank(path, block_size):
            raise
        vfs.VfsLfs2.mkfs(device)
        filesystem = vfs.VfsLfs2(device)
    vfs.mount(filesystem, mountpoint)
    return mountpoint


def _board_file_table():
    """The partition table of the board file the virtual board runs (KVITTO_BOARD): the device
    drops it once checked (device.board.boards.parse), as a board's esp32.Partition reads the
    table from flash; the simulated one reads it from the file, so a virtual board has the
    slots of the board it stands for (the plain boards' 1.5 MiB ones, say)."""
    path = os.getenv("KVITTO_BOARD")
    if not path:
        return None
    import json

    try:
        with open(path) as file:
            return json.load(file).get("partitions")
    except (OSError, ValueError):
        return None


def _install_esp32():
    """`import esp32` on the unix port: the heap figures of sim.esp32 (issue #26)."""
    try:
        from sim import esp32
    except ImportError:  # a trimmed sim without it: code that asks for esp32 sees no module
        return
    esp32.install()
    esp32.leave_gc_heap()


class SimHal:
    """The `sim` board. `flash`: image file to mount at /flash (None: use the cwd as-is).
    `seed`: deterministic RNG for tests. `ticks`: injectable millisecond clock for outputs."""

    def __init__(self, board, flash=None, seed=None, ticks=None, reset_cause=None, control=None,
                 serial=False, keep_logs=False):
        self.board = board
        self._keep_logs = keep_logs
        self.app = None  # set by device.app.App: the control channel reads its journal
        self._control = control
        self._serial = serial
        self._ticks = ticks or time.ticks_ms
        self.led = SimLed(self._ticks)
        self.buzzer = SimOutput(self._ticks)
        self.relay = SimOutput(self._ticks)
        self._inputs = {name: SimInput() for name in board["inputs"]}
        self._seed = seed
        self._counter = 0
        # the PN532 model when sim.pn532sim is present: built here, with the board, not when the
        # reader first asks for its bus
        self.pn532 = None
        try:
            from sim import pn532sim
        except ImportError:
            pn532sim = None
        if pn532sim is not None:
            self.pn532 = pn532sim.PN532Sim()
            if not keep_logs:
                self.pn532.commands = _Discard()
        self.watchdogs = []
        self.fs_root = mount_flash(flash, board) if flash else ""
        self._reset_cause = reset_cause or os.getenv("KVITTO_RESET_CAUSE") or "power"
        _install_esp32()
        self._ota_path = flash + ".ota" if flash else None
        self._partitions = None
        if self._ota_path and _exists(self._ota_path):
            self.partitions()  # updated before: the bootloader chooses the slot at every start


    # -- the board's parts, as device.board.hal offers them
    def input(self, name):
        if name not in self._inputs:
            raise ValueError("board %s has no input '%s'" % (self.board["name"], name))
        return self._inputs[name]

    def has_input(self, name):
        return name in self._inputs

    def bus(self, kind, i2c_timeout_us=50_000):
        # the simulated I2C bus keeps the PN532's own clock-stretching limit (sim.pn532sim.bus)
        if kind not in self.board["buses"]:
            raise ValueError("board %s has no %s bus" % (self.board["name"], kind))
        if self.pn532 is None:
            raise ValueError("the PN532 simulator (sim.pn532sim) is not installed")
        from sim import pn532sim

        bus = pn532sim.bus(kind, self.pn532)
        if not self._keep_logs and hasattr(bus, "log"):
            bus.log = _Discard()
        return bus

    def pn532_pins(self):
        return None, None

    def watchdog(self, timeout_ms):
        watchdog = SimWatchdog(timeout_ms)
        self.watchdogs.append(watchdog)
        return watchdog

    def urandom(self, count):
        if self._seed is None:
            return os.urandom(count)
        out = b""
        while len(out) < count:  # SHA-256 in counter mode: repeatable keys in tests
            self._counter += 1
            out += hashlib.sha256(self._seed + self._counter.to_bytes(4, "big")).digest()
        return out[:count]

    def set_rtc(self, unix_seconds):
        pass  # the unix port's clock is the host's; device.link.clock keeps the offset

    def reset(self):
        if self._control:
            # a virtual board's process (kvitto.sim.board): end it as a reset ends the chip's
            # run, from any task; the host starts it again on the same flash
            sys.stderr.write("reset\n")
            os.system("kill -TERM $PPID")
            time.sleep_ms(1000)
        raise SimReset()

    def extra_tasks(self):
        """The control socket and the serial console, when the host asked for them."""
        tasks = []
        if self._control or self._serial:
            from sim import control

            if self._control:
                tasks.append(control.control_channel(self, self._control))
            if self._serial:
                tasks.append(control.serial_console())
        return tasks

    def log(self, line):
        # stdout is the serial console's (raw REPL) alone: logs go to stderr, the board's log
        sys.stderr.write(line + "\n")

    def reset_cause(self):
        return self._reset_cause if self._reset_cause in ("power", "wdt") else "other"

    def partitions(self):
        """sim.partition's esp32.Partition on `<flash image>.ota` (otadata and two app slots,
        the board's partition table or a default one); the bootloader runs on first use."""
        if self._partitions is None:
            from sim import partition
            from sim.flash import FileBlockDevice

            table = (self.board.get("partitions") or _board_file_table()
                     or partition.DEFAULT_TABLE)  # fmt: skip
            slots = [entry for entry in table if entry["type"] == "app" or
                     entry["subtype"] == "ota"]  # fmt: skip
            end = max(entry["offset"] + entry["size"] for entry in slots)
            base = min(entry["offset"] for entry in slots)
            device = FileBlockDevice(self._ota_path, 4096, (end - base) // 4096)
            partition.attach(device, slots)
            partition.boot()
            version = partition.running_version()
            if version:
                import device as firmware

                firmware.VERSION = version  # the simulated image's: the sim "runs" it
            self._partitions = partition.Partition
            stand_in = sys.modules.get("esp32")  # the unix port's esp32 stand-in, when present
            if stand_in is not None:
                stand_in.Partition = partition.Partition
        return self._partitions

    def network_start(self, ssid, password):
        pass  # the unix port's network is the host's (cut it with kvitto.netproxy)

    def network_connected(self):
        return True

    # -- the simulation's side: what a person at the door does
    def set_input(self, name, active):
        self.input(name).active = bool(active)

    def tap(self, kind, raw, hold_ms=_TAP_HOLD_MS, **card):
        """Hold a credential to the simulated PN532 (badge UID, ntag424, phone key id);
        `card`: the credential's secrets (sim.pn532sim.PN532Sim.present)."""
        if self.pn532 is None:
            raise ValueError("no PN532 model on this board (sim.pn532sim is not installed)")
        self.pn532.present(kind, raw, hold_ms, **card)
