"""The device application: one firmware, the role chosen by /config.json, the board by board.json.

    from device import app
    app.start()                      # main.py: load board + config, run the role forever
    # tests: App(settings, board, hal, clock=Clock(fake_ticks)).run() with the sim HAL

Data flows one way (STYLE.md): hal -> reader -> visits / lock / alarm -> journal -> link. Every
event is journaled (`record`) before its feedback and long before it is signed and published.
Each long-running task beats a heartbeat; the supervisor feeds the watchdog only while every
task is alive and has beaten recently, so a hung task resets the board (and the journal brings
everything back). A task that raises is restarted and reported as a `health` event, so a failing
PN532 never stops the alarm buttons or publishing. A missing or bad config is printed and shown
as a red blink (device.board.startup), never a crash loop, and the serial REPL stays usable for
provisioning.
"""

import asyncio
import os
import sys
import time

from micropython import const

import device
from device.board import memory
from device.evidence import identity
from device.link.clock import Clock

_TICK_MS = const(20)  # role inputs (door, buttons) are polled at 50 Hz
_SUPERVISE_MS = const(500)
_ROLE_STALE_MS = const(3000)
_READER_STALE_MS = const(120000)  # the reader may back off up to 60 s while the PN532 is down
_NTP_EVERY_MS = const(21600000)  # 6 h
_NTP_RETRY_MS = const(60000)
_RESTART_PAUSE_MS = const(1000)
_FIRST_REPORT_MS = const(5000)  # the boot's health report, once the reader has had its start
_REPORT_FILL = const(50)  # a journal this full keeps its room for visits: no health reports
_RESUME_BYTES = const(24576)  # shed work comes back above this (memory.low's 12 KiB: no flapping)
# the boot path and the board and config loaders: start() drops them once the app is built
BOOT_ONLY = ("device.board.startup", "device.board.boards", "device.board.config",
             "device.board.errors")


def _join(root, name):
    return root + "/" + name if root else name


class App:
    """The running device. `clock` and the timing knobs are injectable for tests."""

    def __init__(self, settings, board, board_hal, journal=None, clock=None, watchdog_ms=None,
                 role_stale_ms=_ROLE_STALE_MS, reader_stale_ms=_READER_STALE_MS, link=True,
                 answer_ms=None):
        from device.evidence.journal import Journal
        from device.roles.visits import Feedback, Visits

        self.settings = settings
        self.board = board
        self.hal = board_hal
        self.device_id = settings["device"]
        self.role = settings["role"]  # one the board supports: start() checked it
        root = board_hal.fs_root
        identity.use_root(root)
        self.clock = clock or Clock()
        self.journal = journal or Journal(_join(root, "journal"))
        self.feedback = Feedback(board_hal.led, board_hal.buzzer)
        self.visits = Visits(self.record, self.feedback, clock=self.clock.ticks,
                             debounce_ms=settings["visits"]["debounce_ms"],
                             state_path=_join(root, "visits.bin"))
        self.config_path = _join(root, "config.json")
        self.watchdog_ms = watchdog_ms or board["watchdog_ms"]
        self.stale_ms = {"role": role_stale_ms, "reader": reader_stale_ms}
        self.beats = {}
        self.tasks = {}
        self.restarts = 0
        self.shedding = False  # memory low: tag mode and log lines are off (device.board.memory)
        self.health_ms = settings["health_s"] * 1000
        self._report_seq = 0  # the last health report journaled (the next waits for its ack)
        self._report_next = time.ticks_add(self.clock.ticks(), _FIRST_REPORT_MS)
        self.reader = None
        self.trial = None  # device.link.ota.Trial while an updated firmware is on trial
        self.update = None  # device.link.ota.Update while an image arrives
        self._ota_state = _join(root, "ota.state")
        self._boot_seq = 0
        self._trial_since = 0
        self.link = None
        self._want_link = link
        self.lock = None
        self.alarm = None
        if self.role != "tag":
            from device.roles import wiring  # the lock's and alarm's, never on a tag's heap

            wiring.build(self, board, board_hal, root, answer_ms)
        # one Ed25519 signature at a time (tag URL or event): see device.drivers.tag_mode.TagMode
        self._signing = asyncio.Lock()
        board_hal.app = self  # the sim's control channel reads state from here

    # -- the one way in to the journal
    def record(self, kind, cred=None, x=None):
        """Journal one event now (durable on return); the link signs and publishes it later. Out
        of memory, optional work is shed and the event tried once more before the error goes
        up (the journal itself never leaves a half-written record behind: Journal.append)."""
        from device.evidence import event

        journal = self.journal
        for retry in (False, True):
            try:
                t, sync = self.clock.quality()
                payload = event.build_payload(self.device_id, journal.next_seq, journal.boot,
                                              self.clock.uptime_ms(), kind, journal.prev_hash,
                                              t=t, sync=sync, cred=cred, x=x)
                seq = journal.append(payload)
                break
            except MemoryError:
                if retry:
                    raise
                memory.exhausted()
                self.shed()
        if self.link is not None:
            try:
                self.link.notify()
            except Exception as error:
                self.log("link notify failed: %s" % error)
        return seq

    def log(self, line):
        if self.shedding:
            return  # low on memory: a log line is optional work
        self.hal.log(line)  # MachineHal: the UART; the sim: its console

    # -- low memory: optional work goes first, before anything the evidence needs fails
    def shed(self):
        """Drop optional work while memory is low: tag mode (its module and signer) and log
        lines. Taps, the journal and the link go on."""
        if self.shedding:
            return
        self.shedding = True
        if self.reader is not None and self.reader.tag_mode is not None:
            self.reader.tag_mode = None
            device.forget("device.drivers.tag_mode")
        memory.exhausted() if memory.low() else None
        try:
            self.record("health", None, {"mem": "low", "least": memory.least_free()})
        except MemoryError:
            pass  # the event is optional; the taps' are not

    # -- taps, from the reader
    def on_tap(self, tap):
        if tap.cred is None:
            self.visits.refuse()  # a phone without the app, a card we cannot read: red
            return
        if self.lock is not None:
            self.lock.tap(tap.cred, tap.kind, tap.extra)
        else:
            self.visits.tap(tap.cred, tap.kind, tap.extra)

    def on_health(self, fields):
        self.record("health", None, fields)

    # -- signed commands (FORMATS.md §2) the link has already verified
    def on_command(self, kind, x):
        """`time` or `config`: device.roles.commands, loaded for the command and dropped after."""
        from device.roles import commands

        try:
            commands.obey(self, kind, x)
        finally:
            device.forget("device.roles.commands")

    # -- firmware updates (issue #22; device.link.ota, loaded only when needed)
    async def on_ota(self, x):
        """FORMATS additions `ota`: an update offered (device.link.ota, loaded for it)."""
        from device.link import ota

        await ota.offer(self, x)

    async def on_ota_chunk(self, message):
        if self.update is not None:  # no offer: nothing to write into, nothing to load
            from device.link import ota

            await ota.take_chunk(self, message)

    def handlers(self):
        handlers = {"time": lambda x: self.on_command("time", x),
                    "config": lambda x: self.on_command("config", x), "ota": self.on_ota,
                    "ota_chunk": self.on_ota_chunk}
        if self.lock is not None:
            from device.roles import wiring

            wiring.add_lock_commands(self, handlers)  # allow, revoke
        return handlers

    # -- tasks: each beats (self.beats[name] = now) once per round, for alive()
    async def _role_loop(self):
        poll = self.lock.poll if self.lock else self.alarm.poll if self.alarm else None
        while True:
            if poll is not None:
                poll()
            await asyncio.sleep_ms(_TICK_MS)
            self.beats["role"] = self.clock.ticks()

    def _make_tag_mode(self):
        """Tag mode (docs/nfc.md): phones read a URL signed by the device key. Its counter is
        kept on flash so a URL is never issued twice across reboots."""
        if not self.settings.get("tag_mode"):
            return None
        from device.evidence import ed25519
        from device.drivers.tag_mode import TagMode

        counter = 0
        try:
            with open(_join(self.hal.fs_root, "tag.ctr")) as file:
                counter = int(file.read())
        except (OSError, ValueError):
            pass
        return TagMode(self.device_id, ed25519.signer(identity.secret_for_signer()),
                       # a tag URL before the first sync says t=0: unknown
                       counter=counter, clock=lambda: self.clock.now() or 0,
                       on_read=self.on_tag_read,
                       signing=self._signing)

    def on_tag_read(self, counter):
        path = _join(self.hal.fs_root, "tag.ctr")
        with open(path + ".new", "w") as file:
            file.write(str(counter))
        os.rename(path + ".new", path)  # littlefs: atomic
        self.record("tag_read", None, {"ctr": counter})

    async def _reader_loop(self):
        if self.reader is None:
            try:
                from device.drivers import pn532, pn532_bus
                from device.roles.reader import Reader

                kind = self.board["pn532"]["bus"]
                irq, reset = self.hal.pn532_pins()
                bus = self.hal.bus(kind, pn532.I2C_TIMEOUT_US)  # the PN532 stretches SCL
                nfc = pn532.PN532(pn532_bus.open_transport(kind, bus, irq), reset=reset)
                self.reader = Reader(nfc, self.on_tap, self.device_id, irq=irq,
                                     rng=self.hal.urandom, salt=self.settings["salt"],
                                     on_health=self.on_health, tag_mode=self._make_tag_mode())
            except MemoryError:
                raise  # not a missing reader: _guard sheds optional work and tries again
            except Exception as error:
                # no reader: the rest of the device (buttons, lock, publishing) runs on
                self.stale_ms.pop("reader", None)
                self.record("health", None, {"reader": "missing", "error": str(error)[:40]})
                return
        while True:
            await self.reader.step()
            self.beats["reader"] = self.clock.ticks()

    async def _link_loop(self):
        # Started again after a failure (a MemoryError, say): the failed link's client and
        # buffers go before the new ones are made, or both would be on the heap at once.
        self.link = None
        from device.link.collector import Link, journal_signer  # every image has it

        wifi = self.settings.get("wifi")
        if wifi is not None:
            self.hal.network_start(wifi["ssid"], wifi["password"])
            while not self.hal.network_connected():
                await asyncio.sleep_ms(500)  # never block the loop: the watchdog is fed meanwhile
        broker = self.settings["broker"]
        root = self.hal.fs_root
        ssl = None
        if broker["tls"]:
            # the broker's CA, pinned: PEM text, or a file on the device (config broker.ca)
            ca = broker["ca"]
            if ca and not ca.startswith("-----BEGIN"):
                ca = _join(root, ca)
            ssl = {"ca": ca}
        sign_event = journal_signer(self.journal, identity.secret_for_signer(), self.device_id)

        async def sign(seq, payload):
            async with self._signing:  # never beside a tag URL's signature (drivers.tag_mode)
                return await sign_event(seq, payload)

        # now: FORMATS.md §2 expiry needs the time; clock.now() is None before the first sync
        # (device.evidence.event: the sequence number alone refuses replays), so a `time`
        # command can set the clock
        self.link = Link(self.device_id, self.journal, sign,
                         org_public=self.settings["org_public_key"], host=broker["host"],
                         port=broker["port"], user=broker["user"], password=broker["password"],
                         ssl=ssl, handlers=self.handlers(), state_path=_join(root, "link.state"),
                         now=self.clock.now)
        await self.link.run()

    async def _clock_loop(self):
        hosts = self.settings["ntp"]  # not empty: run() starts this task only then
        while True:
            try:
                # the SNTP code is loaded for one sync and dropped after it
                from device.link import ntp

                try:
                    offset = await ntp.sync(self.clock, hosts, rng=self.hal.urandom)
                finally:
                    device.forget("device.link.ntp")
                self.record("clock_sync", None, {"offset_ms": offset, "src": "ntp"})
                self.hal.set_rtc(self.clock.now())
                await asyncio.sleep_ms(_NTP_EVERY_MS)
            except Exception as error:
                self.log("ntp: %s" % error)
                await asyncio.sleep_ms(_NTP_RETRY_MS)

    async def _guard(self, name, factory):
        """Run a task; if it raises, report it and start it again (the others run on)."""
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.restarts += 1
                self.log("task %s failed: %r" % (name, error))
                try:
                    self.record("health", None, {"task": name, "error": str(error)[:40]})
                except Exception:
                    pass  # the journal itself failing: the watchdog decides
                if isinstance(error, MemoryError):
                    memory.exhausted()
                    self.shed()
                await asyncio.sleep_ms(_RESTART_PAUSE_MS)

    def alive(self):
        """True while every supervised task runs and has beaten within its allowance."""
        now = self.clock.ticks()
        for name, limit in self.stale_ms.items():
            task = self.tasks.get(name)
            if task is not None and task.done():
                return False
            last = self.beats.get(name)
            if last is not None and time.ticks_diff(now, last) > limit:
                return False
        return True

    async def _supervise(self, watchdog):
        while True:
            if self.alive():
                watchdog.feed()
            self.clock.uptime_ms()  # keeps uptime exact across ticks_ms wrap-around
            try:
                # the heap: shed when memory.low(), take the work back up above _RESUME_BYTES
                if not self.shedding:
                    if memory.low():
                        self.shed()
                elif memory.free() > _RESUME_BYTES:
                    self.shedding = False
                    if self.reader is not None and self.reader.tag_mode is None:
                        self.reader.tag_mode = self._make_tag_mode()
                    self.record("health", None, {"mem": "ok", "least": memory.least_free()})
            except MemoryError:
                memory.exhausted()
            if self.trial is not None:
                self.trial.judge(self)
            try:
                # The health report (issue #22; docs/formats-v1-additions.md, `health` with `fw`):
                # at boot and every health_s, while the link is connected. Reports never crowd
                # visits out of the journal: none while offline or while the journal is half
                # full, and at most one unsent (the next waits for the collector's ack of the
                # last, and is the freshest one then). Its fields are device.roles.health's,
                # loaded for the report and dropped after.
                now = self.clock.ticks()
                link = self.link
                journal = self.journal
                if (time.ticks_diff(now, self._report_next) >= 0 and link is not None
                        and link.client.connected and self._report_seq <= journal.acked
                        and journal.fill() < _REPORT_FILL):
                    self._report_next = time.ticks_add(now, self.health_ms)
                    from device.roles import health

                    try:
                        fields = health.report(self)
                    finally:
                        device.forget("device.roles.health")
                    self._report_seq = self.record("health", None, fields)
                elif journal.health_due():
                    # 80 % full, or events lost while full: the host must hear of it
                    self.record("health", None, self.journal.health())
            except Exception as error:
                self.log("journal health: %r" % (error,))
            await asyncio.sleep_ms(_SUPERVISE_MS)

    async def run(self):
        memory.settle()
        loop = asyncio.get_event_loop()
        # last resort for a task outside _guard: report, never crash the loop
        loop.set_exception_handler(
            lambda loop, context: self.log("unhandled: %r" % (context.get("exception"),)))
        watchdog = self.hal.watchdog(self.watchdog_ms)
        self._boot_seq = self.record("boot", None, {"reset": self.hal.reset_cause(),
                                                    "fw": device.VERSION})
        # after an update: the new firmware on trial, or a rollback to journal; the OTA code is
        # loaded only when its state file says an update happened
        try:
            os.stat(self._ota_state)
        except OSError:
            pass  # no update happened
        else:
            from device.link import ota

            trial = ota.Trial.at_boot(self.hal.partitions(), self._ota_state, self.record)
            if trial is None or trial.done:
                device.forget("device.link.ota")
            else:
                self.trial = trial
                self._trial_since = self.clock.ticks()
        now = self.clock.ticks()
        for name in self.stale_ms:
            self.beats[name] = now
        # no NTP hosts, no clock task: its frames would stay on the heap, done
        for name, body, wanted in (("role", self._role_loop, True),
                                   ("reader", self._reader_loop, True),
                                   ("link", self._link_loop, self._want_link),
                                   ("clock", self._clock_loop, self.settings["ntp"])):
            if wanted:
                self.tasks[name] = asyncio.create_task(self._guard(name, body))
        for index, coroutine in enumerate(self.hal.extra_tasks()):
            self.tasks["sim%d" % index] = asyncio.create_task(coroutine)
        await self._supervise(watchdog)


def start():
    """Entry point from main.py: never returns on a board."""
    from device.board import startup

    board, board_hal, settings, problem = startup.load()
    identity.use_root(board_hal.fs_root)  # provisioning's scripts find the key and config
    if problem is not None:  # config.json missing or bad
        startup.refuse(board_hal, problem)
        return
    try:
        identity.load_or_create(board_hal.urandom, board_hal.fs_root)
        application = App(settings, board, board_hal)
    except Exception as error:
        startup.refuse(board_hal, "cannot start: %r" % (error,))
        return
    # Boot is over: its code and the board and config loaders leave the heap before the link
    # loads (a `config` command loads config again for itself: device.roles.commands).
    del startup
    for name in BOOT_ONLY:
        device.forget(name)
    try:
        asyncio.run(application.run())
    except KeyboardInterrupt:
        raise  # the serial console (mpremote) stops the app on a real board
    except Exception as error:
        sys.print_exception(error)  # type: ignore[attr-defined]
        board_hal.reset()
