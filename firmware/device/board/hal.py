"""The hardware layer: the only module that imports `machine` and `network`.

    from device.board import boards
    board_hal = boards.open_hal(boards.load("boards/esp32-lock.json"))
    board_hal.led.show("green"); board_hal.relay.set(True); print(board_hal.input("door").value())

`boards.open_hal(board)` picks the implementation the board file names (`"hal": "machine"`:
MachineHal here, for a real ESP32; `"hal": "sim"`: the unix port's simulated board in
firmware/sim/hal_sim.py, which imports this module's names). Both offer the same interface, so
role logic never knows which it drives:

    led.show(colour)       colour in COLOURS ("off", "green", "blue", "red", "yellow", "white")
    buzzer.set(on)         relay.set(on)        input(name).value() -> active?
    bus(kind)              the PN532's I2C/SPI/UART object; pn532_pins() -> (irq, reset)
    watchdog(timeout_ms)   object with feed(); urandom(n); reset(); reset_cause(); fs_root

A part the board file does not have, or an unknown colour, is a ValueError naming it.
"""

import os

# Colours staff know from their phones (DESIGN.md, Taps): green arrive, blue depart, red refused.
COLOURS = {
    "off": (0, 0, 0),
    "green": (0, 64, 0),
    "blue": (0, 0, 64),
    "red": (64, 0, 0),
    "yellow": (48, 40, 0),
    "white": (40, 40, 40),
}


class _Gpio:
    """A GPIO with an active level from the board file. An output: set(on) drives it (a part the
    board does not have, pin None, takes commands and does nothing). An input: value() is True
    at the active level."""

    state = False  # an output's last set()

    def __init__(self, pin, active=1):
        self._pin = pin
        self._active = active

    def set(self, on):
        self.state = bool(on)
        if self._pin is not None:
            self._pin.value(self._active if on else 1 - self._active)

    def value(self):
        return self._pin.value() == self._active


class _Led:
    """The status LED: the first `count` WS2812 pixels through the neopixel module, or three
    GPIO outputs, one per colour channel (any non-zero channel is lit)."""

    def __init__(self, pixels, count=0):
        self._pin = pixels  # a neopixel.NeoPixel, or the (red, green, blue) outputs
        self._count = count
        self.colour = "off"

    def show(self, colour):
        rgb = COLOURS.get(colour)
        if rgb is None:
            raise ValueError("unknown LED colour %r" % (colour,))
        if self._count:
            for index in range(self._count):
                self._pin[index] = rgb
            self._pin.write()
        else:
            for channel, level in zip(self._pin, rgb):
                channel.set(level > 0)
        self.colour = colour


class MachineHal:
    """The real board through `machine` (ESP32 port)."""

    fs_root = ""  # the board's filesystem is mounted at / by the port's _boot.py

    def __init__(self, board):
        import machine

        self._machine = machine
        self.board = board
        led = board["led"]
        if led["kind"] == "ws2812":
            import neopixel

            pixels = neopixel.NeoPixel(machine.Pin(led["pin"], machine.Pin.OUT), led["count"])
            self.led = _Led(pixels, led["count"])
        else:
            self.led = _Led(tuple(self._output(led[c], led["active"]) for c in "rgb"))
        self.buzzer = self._output(board.get("buzzer"))
        self.relay = self._output(board.get("relay"))
        self._inputs = {}
        self._station = None  # the Wi-Fi station, once network_start() made it

    def _output(self, spec, active=None):
        """An output on `spec` (a board file's {"pin", "active"}, or a pin number with `active`);
        None: a part the board does not have."""
        if spec is None:
            return _Gpio(None)
        if active is None:
            spec, active = spec["pin"], spec["active"]
        output = _Gpio(self._machine.Pin(spec, self._machine.Pin.OUT), active)
        output.set(False)
        return output

    def input(self, name):
        if name not in self._inputs:
            spec = self.board["inputs"].get(name)
            if spec is None:
                raise ValueError("board %s has no input '%s'" % (self.board["name"], name))
            pin = self._machine.Pin
            pull = spec.get("pull")
            if pull is None:
                gpio = pin(spec["pin"], pin.IN)
            else:
                gpio = pin(spec["pin"], pin.IN, pin.PULL_UP if pull == "up" else pin.PULL_DOWN)
            self._inputs[name] = _Gpio(gpio, spec["active"])
        return self._inputs[name]

    def has_input(self, name):
        return name in self.board["inputs"]

    def bus(self, kind, i2c_timeout_us=50_000):
        """The board's bus of `kind`; the driver on it names its I2C clock-stretching limit
        (device.drivers.pn532.I2C_TIMEOUT_US), the app passes it in: 50 ms is the port's."""
        spec = self.board["buses"].get(kind)
        if spec is None:
            raise ValueError("board %s has no %s bus" % (self.board["name"], kind))
        machine = self._machine
        pin = machine.Pin
        if kind == "i2c":
            return machine.I2C(spec["id"], scl=pin(spec["scl"]), sda=pin(spec["sda"]),
                               freq=spec["freq"], timeout=i2c_timeout_us)
        if kind == "spi":
            # PN532 UM §6.2.5: SPI mode 0, LSB first; the driver handles bit order if needed.
            return machine.SPI(spec["id"], baudrate=spec["baudrate"], sck=pin(spec["sck"]),
                               mosi=pin(spec["mosi"]), miso=pin(spec["miso"]))
        return machine.UART(spec["id"], baudrate=spec["baudrate"], tx=spec["tx"], rx=spec["rx"])

    def pn532_pins(self):
        """(irq input or None, reset output or None) for the PN532 (UM §6.2: IRQ low = ready)."""
        spec = self.board["pn532"]
        pin = self._machine.Pin
        irq = pin(spec["irq"], pin.IN, pin.PULL_UP) if "irq" in spec else None
        reset = pin(spec["reset"], pin.OUT, value=1) if "reset" in spec else None
        return irq, reset

    def watchdog(self, timeout_ms):
        return self._machine.WDT(timeout=timeout_ms)

    def urandom(self, count):
        return os.urandom(count)  # ESP32: hardware RNG (TRM §25) once the radio is on

    def set_rtc(self, unix_seconds):
        # the ESP32 port's epoch is 2000-01-01 (FORMATS.md §1, key 5); 946684800 = 2000 - 1970
        import time

        parts = time.gmtime(unix_seconds - 946684800)
        # RTC.datetime: (year, month, day, weekday, hours, minutes, seconds, subseconds)
        self._machine.RTC().datetime(
            (parts[0], parts[1], parts[2], parts[6], parts[3], parts[4], parts[5], 0))

    def reset(self):
        self._machine.reset()

    def extra_tasks(self):
        return []  # the sim board adds its serial console and control channel here

    def log(self, line):
        print(line)  # the UART: what a person with a serial cable sees

    def reset_cause(self):
        machine = self._machine
        # the names are the same on the sim board (sim.hal_sim)
        return {
            machine.PWRON_RESET: "power",
            machine.HARD_RESET: "power",
            machine.WDT_RESET: "wdt",
            machine.SOFT_RESET: "soft",
        }.get(machine.reset_cause(), "other")

    def network_start(self, ssid, password):
        """Join Wi-Fi in station mode without waiting (the app polls network_connected())."""
        import network

        self._station = network.WLAN(network.STA_IF)
        self._station.active(True)
        if not self._station.isconnected():
            self._station.connect(ssid, password)

    def network_connected(self):
        return self._station is not None and self._station.isconnected()

    def partitions(self):
        """esp32.Partition: the app slots and otadata for updates (device.link.ota)."""
        import esp32

        return esp32.Partition

    def rssi(self):
        """The Wi-Fi signal in dBm, None while not joined (or on wired Ethernet)."""
        station = self._station
        if station is None or not station.isconnected():
            return None
        try:
            return station.status("rssi")
        except Exception:
            return None
