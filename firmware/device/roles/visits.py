"""Arrive/depart per credential at this door, and the light and sound staff see and hear.

    visits = Visits(on_event, Feedback(hal.led, hal.buzzer))
    visits.tap(cred, "badge")         # -> "arrive" (green), next tap "depart" (blue)
    visits.refuse()                   # red: unknown card, reader error

`on_event(type, cred, x)` must journal and return (DESIGN.md: journal first, then feedback,
then sign and publish); the feedback is set before `tap` returns, and nothing here waits for
signing. Open visits live in RAM: after a reboot the next tap of a credential arrives again
and the host pairs events by time (a boot event marks the gap).
"""

import asyncio
import os
import time

from micropython import const

_DEBOUNCE_MS = const(3000)  # a second tap this soon is the same tap (staff re-tapping)
_LIGHT_MS = const(1500)
_CRED_BYTES = const(16)  # FORMATS.md §1 key 8: credential ids are bstr(16)
_MAX_OPEN = const(16)  # a door sees a few staff at once; a forgotten departure must not grow RAM


class Feedback:
    """LED colour (hal.led.show) and buzzer pattern (hal.buzzer.set). `show` sets the light and
    starts the sound at once; the rest of the pattern and the light's end run as a task."""

    def __init__(self, led=None, buzzer=None, light_ms=_LIGHT_MS):
        self.led = led
        self.buzzer = buzzer
        self.light_ms = light_ms
        self._task = None

    def show(self, kind):
        # the light's colour, and the buzzer's on/off durations in ms, starting with "on"
        if kind == "arrive":
            colour, pattern = "green", (80,)
        elif kind == "depart":
            colour, pattern = "blue", (80, 80, 80)
        elif kind == "refused":
            colour, pattern = "red", (400,)
        else:
            raise KeyError(kind)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.led is not None:
            self.led.show(colour)
        if self.buzzer is not None:
            self.buzzer.set(True)
        finish = self._finish(pattern)
        try:
            self._task = asyncio.create_task(finish)
        except RuntimeError:
            finish.close()  # no running loop (a synchronous caller): the light stays on

    async def _finish(self, pattern):
        try:
            on = True
            spent = 0
            for duration in pattern:
                await asyncio.sleep_ms(duration)
                spent += duration
                on = not on
                if self.buzzer is not None:
                    self.buzzer.set(on)
            if self.buzzer is not None:
                self.buzzer.set(False)
            if self.light_ms > spent:
                await asyncio.sleep_ms(self.light_ms - spent)
            if self.led is not None:
                self.led.show("off")
        except asyncio.CancelledError:
            if self.buzzer is not None:
                self.buzzer.set(False)


class Visits:
    """Which credentials have an open visit at this door. Two open at once is double
    staffing; the host decides whether it was ordered."""

    def __init__(self, on_event, feedback=None, debounce_ms=_DEBOUNCE_MS, clock=None,
                 max_open=_MAX_OPEN, state_path=None):
        self.on_event = on_event
        self.feedback = feedback
        self.debounce_ms = debounce_ms
        self.clock = clock if clock is not None else time.ticks_ms
        self.max_open = max_open
        self.open = {}  # cred -> ticks_ms of arrival
        self._last = {}  # cred -> ticks_ms of its last counted tap
        # Open visits survive a power cut: without this, the staff member's leaving tap after
        # a reboot would journal a second arrive and the visit would never close.
        self.state_path = state_path
        data = b""
        if state_path is not None:
            try:
                with open(state_path, "rb") as state:
                    data = state.read()
            except OSError:
                pass  # first boot: nobody is here
        now = self.clock()
        # whole 16-byte credential ids only: a torn file (power cut mid-write) loses its tail
        for start in range(0, len(data) - len(data) % _CRED_BYTES, _CRED_BYTES):
            if len(self.open) < max_open:
                self.open[bytes(data[start:start + _CRED_BYTES])] = now

    def _save(self):
        if self.state_path is None:
            return
        try:
            temporary = self.state_path + ".new"
            with open(temporary, "wb") as state:
                for cred in self.open:
                    if len(cred) == _CRED_BYTES:
                        state.write(cred)
            os.rename(temporary, self.state_path)  # littlefs: rename is atomic
        except OSError:
            pass  # the journal has the event; a lost state file costs one extra arrive

    def tap(self, cred, via, extra=None):
        """Count one tap: "arrive", "depart", "refused" (journal failed) or None (debounced)."""
        now = self.clock()
        last = self._last.get(cred)
        if last is not None and time.ticks_diff(now, last) < self.debounce_ms:
            return None
        kind = "depart" if cred in self.open else "arrive"
        x = {"via": via}
        if extra:
            for key in extra:
                x[key] = extra[key]
        try:
            self.on_event(kind, cred, x)
        except Exception:
            # not journaled = not counted: red, and the state stays as it was
            self._show("refused")
            return "refused"
        self._last = {c: t for c, t in self._last.items()
                      if time.ticks_diff(now, t) < self.debounce_ms}
        self._last[cred] = now
        if kind == "arrive":
            if len(self.open) >= self.max_open:
                # forget the longest-open visit: its next tap arrives again and the host
                # sees an arrive without a depart (a deviation it reports)
                oldest = None
                for other in self.open:
                    if oldest is None or time.ticks_diff(self.open[other], self.open[oldest]) < 0:
                        oldest = other
                del self.open[oldest]
            self.open[cred] = now
        else:
            del self.open[cred]
        self._show(kind)  # feedback first: the state file must not delay the light
        self._save()
        return kind

    def refuse(self):
        self._show("refused")

    def _show(self, kind):
        if self.feedback is not None:
            try:
                self.feedback.show(kind)
            except Exception:
                pass  # a broken LED must not lose a visit
