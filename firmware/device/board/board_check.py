"""The checks a board file must pass (device.board.boards.validate), in their own module: they
run once at boot, and device.board.boards drops this module afterwards so its tables and
functions leave the heap (device.forget).

    from device.board import board_check
    board_check.validate(json.loads(text), "board.json")   # raises errors.BoardError
"""

from device.board.errors import BoardError

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython: the same module, checked by the same tests

    def const(value):
        return value


_ESP32_LAST_PIN = const(39)
_ESP32_FIRST_INPUT_ONLY = const(34)  # ESP32 datasheet §2.2: GPIO34-39 are input only
_S3_LAST_PIN = const(48)
_APP_ALIGN = const(0x10000)  # ESP-IDF: app partitions start on a 64 KiB boundary
_SECTOR = const(0x1000)
_FIRST_PARTITION = const(0x9000)  # after the bootloader and the partition table at 0x8000
_MIN_WATCHDOG_MS = const(1000)
_MAX_WATCHDOG_MS = const(60000)

CHIPS = ("esp32", "esp32s3", "sim")
HALS = ("machine", "sim")
ROLES = ("tag", "lock", "alarm")
INPUTS = ("door", "exit", "alarm_call", "green", "yellow", "tamper")
# Each role needs these parts of a board; the check names the missing one.
ROLE_NEEDS = {
    "tag": (),
    "lock": ("relay", "inputs.door", "inputs.exit"),
    "alarm": ("inputs.alarm_call", "inputs.green", "inputs.yellow"),
}
_TOP = ("name", "description", "chip", "hal", "roles", "flash", "buses", "pn532", "led",
        "buzzer", "relay", "inputs", "watchdog_ms", "psram", "firmware", "partitions")
# Pins a chip does not offer for wiring: absent, or taken by the module's flash and PSRAM
# (ESP32: GPIO6-11 flash, GPIO16-17 PSRAM on WROVER; ESP32-S3: GPIO22-25 absent, 26-32 flash
# and PSRAM, 33-37 octal PSRAM only: not refused here).
_NOT_WIRED = {
    "esp32": ((6, 11, "the module's SPI flash"),),
    "esp32s3": ((22, 25, "absent on the ESP32-S3"), (26, 32, "the module's SPI flash and PSRAM")),
}
_PSRAM_PINS = ((16, 17, "the PSRAM of an ESP32 module with PSRAM (WROVER)"),)
_PARTITION_TYPES = {
    "app": ("factory", "ota_0", "ota_1"),
    "data": ("nvs", "phy", "ota", "fat", "spiffs", "littlefs"),
}
_FIRMWARE_BUILDS = ("stock", "frozen")
_BUS_PINS = {
    "i2c": ("scl", "sda"),
    "spi": ("sck", "mosi", "miso", "cs"),
    "uart": ("tx", "rx"),
}
_BUS_SPEED = {"i2c": "freq", "spi": "baudrate", "uart": "baudrate"}


class _Check:
    def __init__(self, source, board):
        self.source = source
        self.board = board
        self.pins = {}  # pin number -> field that uses it, to refuse a pin used twice

    def fail(self, field, problem):
        raise BoardError("%s: field '%s': %s" % (self.source, field, problem))

    def get(self, field, required=True):
        node = self.board
        for part in field.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]  # partitions.3.offset
                continue
            if not isinstance(node, dict) or part not in node:
                if required:
                    self.fail(field, "is missing")
                return None
            node = node[part]
        return node

    def integer(self, field, low, high):
        value = self.get(field)
        # bool is an int in Python; a JSON true is not a number here
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(field, "must be a whole number, got %r" % (value,))
        if value < low or value > high:
            self.fail(field, "must be between %d and %d, got %d" % (low, high, value))
        return value

    def choice(self, field, options, required=True):
        value = self.get(field, required)
        if value is None and not required:
            return None
        if value not in options:
            self.fail(field, "must be one of %s, got %r" % (", ".join(options), value))
        return value

    def mapping(self, field):
        value = self.get(field)
        if not isinstance(value, dict):
            self.fail(field, "must be an object, got %r" % (value,))
        return value

    def has(self, field):
        return self.get(field, False) is not None

    def pin(self, field, output=False):
        chip = self.board.get("chip")
        last = 255 if chip == "sim" else _S3_LAST_PIN if chip == "esp32s3" else _ESP32_LAST_PIN
        number = self.integer(field, 0, last)
        if output and chip == "esp32" and number >= _ESP32_FIRST_INPUT_ONLY:
            self.fail(field, "GPIO%d is input only on the ESP32 (GPIO34-39)" % number)
        taken = _NOT_WIRED.get(chip, ())
        if chip == "esp32" and self.board.get("psram"):
            taken = taken + _PSRAM_PINS
        for low, high, why in taken:
            if low <= number <= high:
                self.fail(field, "GPIO%d is not free: GPIO%d-%d are %s" % (number, low, high, why))
        if number in self.pins:
            self.fail(field, "pin %d is already used by '%s'" % (number, self.pins[number]))
        self.pins[number] = field
        return number

    def level(self, field):
        return self.integer(field, 0, 1)


def validate(board, source):
    """Check a decoded board file; returns it unchanged or raises BoardError."""
    if not isinstance(board, dict):
        raise BoardError("%s: a board file must hold a JSON object" % source)
    check = _Check(source, board)
    for key in sorted(board):
        if key not in _TOP:
            check.fail(key, "unknown field (known: %s)" % ", ".join(_TOP))
    name = check.get("name")
    if not isinstance(name, str) or not name:
        check.fail("name", "must be a non-empty string")
    check.choice("chip", CHIPS)
    check.choice("hal", HALS)
    roles = check.get("roles")
    if not isinstance(roles, list) or not roles:
        check.fail("roles", "must be a non-empty list of %s" % ", ".join(ROLES))
    for role in roles:
        if role not in ROLES:
            check.fail("roles", "unknown role %r (known: %s)" % (role, ", ".join(ROLES)))

    # Flash layout: the image builder writes the filesystem at fs_offset (littlefs, block_size).
    block = check.integer("flash.block_size", 128, 65536)
    size = check.integer("flash.size", 65536, 1 << 28)
    offset = check.integer("flash.fs_offset", 0, size)
    fs_size = check.integer("flash.fs_size", block * 2, size)
    if offset % block:
        check.fail("flash.fs_offset", "must be a multiple of flash.block_size (%d)" % block)
    if fs_size % block:
        check.fail("flash.fs_size", "must be a multiple of flash.block_size (%d)" % block)
    if offset + fs_size > size:
        check.fail("flash.fs_size", "fs_offset + fs_size (%d) exceeds flash.size (%d)"
                   % (offset + fs_size, size))

    buses = check.mapping("buses")
    for kind in sorted(buses):
        if kind not in _BUS_PINS:
            check.fail("buses." + kind, "unknown bus (known: i2c, spi, uart)")
        check.mapping("buses." + kind)
        check.integer("buses.%s.id" % kind, 0, 2)
        for pin_name in _BUS_PINS[kind]:
            check.pin("buses.%s.%s" % (kind, pin_name), output=pin_name not in ("miso", "rx"))
        check.integer("buses.%s.%s" % (kind, _BUS_SPEED[kind]), 1000, 80000000)

    check.mapping("pn532")
    bus = check.choice("pn532.bus", ("i2c", "spi", "uart"))
    if bus not in buses:
        check.fail("pn532.bus", "names bus '%s' but buses has no '%s'" % (bus, bus))
    if check.get("pn532.irq", False) is not None:
        check.pin("pn532.irq")
    if check.get("pn532.reset", False) is not None:
        check.pin("pn532.reset", output=True)

    check.mapping("led")
    kind = check.choice("led.kind", ("ws2812", "rgb"))
    if kind == "ws2812":
        check.pin("led.pin", output=True)
        check.integer("led.count", 1, 64)
    else:
        for colour in ("r", "g", "b"):
            check.pin("led." + colour, output=True)
        check.level("led.active")

    if check.has("buzzer"):
        check.mapping("buzzer")
        check.pin("buzzer.pin", output=True)
        check.level("buzzer.active")

    if check.has("relay"):
        check.mapping("relay")
        check.pin("relay.pin", output=True)
        check.level("relay.active")
        check.choice("relay.mode", ("pulse", "hold"))
        check.integer("relay.pulse_ms", 50, 30000)

    inputs = check.mapping("inputs")
    for input_name in sorted(inputs):
        if input_name not in INPUTS:
            check.fail("inputs." + input_name, "unknown input (known: %s)" % ", ".join(INPUTS))
        check.mapping("inputs." + input_name)
        check.pin("inputs.%s.pin" % input_name)
        check.level("inputs.%s.active" % input_name)
        check.choice("inputs.%s.pull" % input_name, ("up", "down", None), False)

    check.integer("watchdog_ms", _MIN_WATCHDOG_MS, _MAX_WATCHDOG_MS)
    if check.has("psram"):
        check.integer("psram", 0, 1 << 26)
    if check.has("firmware"):
        check.mapping("firmware")
        check.choice("firmware.build", _FIRMWARE_BUILDS)
        download = check.get("firmware.download")
        if not isinstance(download, str) or not download:
            check.fail("firmware.download", "must name MicroPython's board build, got %r"
                       % (download,))
    if check.has("partitions"):
        _partitions(check, size, offset, fs_size)

    for role in roles:
        for needed in ROLE_NEEDS[role]:
            if check.get(needed, False) is None:
                check.fail(needed, "is missing, and role '%s' needs it" % role)
    return board


def _partitions(check, flash_size, fs_offset, fs_size):
    """The board's partition table (ESP-IDF's CSV as data): in flash order, aligned, inside the
    flash, no overlap; two OTA app slots come with otadata; the `vfs` entry is where the
    filesystem is (flash.fs_offset and fs_size say the same)."""
    table = check.get("partitions")
    if not isinstance(table, list) or not table:
        check.fail("partitions", "must be a non-empty list of partitions")
    names = {}
    end = _FIRST_PARTITION
    for index, entry in enumerate(table):
        where = "partitions.%d" % index
        if not isinstance(entry, dict):
            check.fail(where, "must be an object, got %r" % (entry,))
        for key in sorted(entry):
            if key not in ("name", "type", "subtype", "offset", "size"):
                check.fail(where + "." + key, "unknown field (known: name, type, subtype, "
                           "offset, size)")
        name = entry.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 16:
            check.fail(where + ".name", "must be a label of 1-16 characters, got %r" % (name,))
        if name in names:
            check.fail(where + ".name", "'%s' is already partition %d" % (name, names[name]))
        names[name] = index
        kind = check.choice(where + ".type", ("app", "data"))
        check.choice(where + ".subtype", _PARTITION_TYPES[kind])
        start = check.integer(where + ".offset", 0, flash_size)
        length = check.integer(where + ".size", _SECTOR, flash_size)
        align = _APP_ALIGN if kind == "app" else _SECTOR
        if start % align or length % _SECTOR:
            check.fail(where + ".offset", "'%s' must start on a %d KiB boundary and be whole "
                       "4 KiB sectors" % (name, align // 1024))
        if start < end:
            check.fail(where + ".offset", "'%s' at 0x%x overlaps what comes before it (free "
                       "from 0x%x)" % (name, start, end))
        end = start + length
        if end > flash_size:
            check.fail(where + ".size", "'%s' ends at 0x%x, past flash.size (0x%x)"
                       % (name, end, flash_size))
    subtypes = [entry["subtype"] for entry in table]
    apps = [s for s in subtypes if s in ("factory", "ota_0", "ota_1")]
    if not apps:
        check.fail("partitions", "has no app partition (factory or ota_0)")
    if ("ota_0" in apps) != ("ota_1" in apps) or ("ota_0" in apps) != ("ota" in subtypes):
        check.fail("partitions", "OTA needs ota_0, ota_1 and otadata (subtype ota) together")
    if "vfs" not in names:
        check.fail("partitions", "has no 'vfs' partition (MicroPython's filesystem)")
    vfs = names["vfs"]
    where, length = table[vfs]["offset"], table[vfs]["size"]
    if (where, length) != (fs_offset, fs_size):
        check.fail("partitions.%d" % vfs, "'vfs' is at 0x%x, 0x%x bytes, but flash.fs_offset "
                   "and fs_size say 0x%x, 0x%x" % (where, length, fs_offset, fs_size))
