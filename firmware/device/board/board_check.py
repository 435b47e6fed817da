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
_MIN_WATCHDOG_MS = const(1000)
_MAX_WATCHDOG_MS = const(60000)

CHIPS = ("esp32", "esp32s3", "sim")
HALS = ("machine", "sim")
ROLES = ("tag", "lock", "alarm")
INPUTS = ("door", "exit", "alarm_call", "green", "yellow")
# Each role needs these parts of a board; the check names the missing one.
ROLE_NEEDS = {
    "tag": (),
    "lock": ("relay", "inputs.door", "inputs.exit"),
    "alarm": ("inputs.alarm_call", "inputs.green", "inputs.yellow"),
}
_TOP = ("name", "description", "chip", "hal", "roles", "flash", "buses", "pn532", "led",
        "buzzer", "relay", "inputs", "watchdog_ms")
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
        number = self.integer(field, 0, _ESP32_LAST_PIN if chip != "sim" else 255)
        if output and chip == "esp32" and number >= _ESP32_FIRST_INPUT_ONLY:
            self.fail(field, "GPIO%d is input only on the ESP32 (GPIO34-39)" % number)
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

    for role in roles:
        for needed in ROLE_NEEDS[role]:
            if check.get(needed, False) is None:
                check.fail(needed, "is missing, and role '%s' needs it" % role)
    return board
