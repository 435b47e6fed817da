"""The safety-alarm unit: alarm call input, check-in (green) and check-out (yellow) buttons.

    alarm = Alarm(emit, hal.input("alarm_call"), hal.input("green"), hal.input("yellow"))
    alarm.poll()                 # every ~20 ms: inputs, and the 30-minute answer deadline
    alarm.call(); alarm.checkin(); alarm.checkout()   # the same, called directly

`alarm_call` carries the call number in this boot; `alarm_checkin`/`alarm_checkout` carry the
call they answer (the oldest unanswered call for a check-in; the checked-in call for a
check-out). A call with no check-in after `answer_ms` (Upplands-Bro §8: 30 minutes) is recorded
as a `health` event {"alarm": n, "unanswered_s": s}, once per call. `clock` is injectable so
tests do not wait half an hour.
"""

import time

from micropython import const

from device.board.debounce import Debounced

_ANSWER_MS = const(1800000)  # RULES.md A3: check-in within 30 min of the call
_BUTTON_STABLE_MS = const(30)


class Alarm:
    def __init__(self, emit, call_input=None, green=None, yellow=None, feedback=None,
                 answer_ms=_ANSWER_MS, clock=None, tamper=None):
        self.emit = emit
        self.feedback = feedback
        self.answer_ms = answer_ms
        self.clock = clock or time.ticks_ms
        self.calls = 0
        self.unanswered = {}  # call number -> ticks of the call, until checked in or overdue
        self.overdue = []  # calls recorded as not answered in time (still open for check-in)
        self.current = None  # the call staff checked in to
        self.tamper = tamper  # device.roles.tamper, where the board has a tamper input
        self._inputs = []
        for source, action in ((call_input, self.call), (green, self.checkin),
                               (yellow, self.checkout)):
            if source is not None:
                self._inputs.append((Debounced(source, _BUTTON_STABLE_MS, self.clock), action))

    def call(self):
        self.calls += 1
        self.unanswered[self.calls] = self.clock()
        self.emit("alarm_call", None, {"alarm": self.calls})
        return self.calls

    def checkin(self, cred=None):
        waiting = sorted(self.unanswered) + self.overdue
        answered = min(waiting) if waiting else None
        self.emit("alarm_checkin", cred, {"alarm": answered} if answered is not None else None)
        if answered is not None:
            self.unanswered.pop(answered, None)
            if answered in self.overdue:
                self.overdue.remove(answered)
        self.current = answered
        self._show("arrive")
        return answered

    def checkout(self, cred=None):
        answered = self.current
        self.emit("alarm_checkout", cred, {"alarm": answered} if answered is not None else None)
        self.current = None
        self._show("depart")
        return answered

    def _show(self, kind):
        if self.feedback is not None:
            try:
                self.feedback.show(kind)
            except Exception:
                pass

    def poll(self):
        if self.tamper is not None:
            self.tamper.poll()
        for debounced, action in self._inputs:
            if debounced.update() is True:
                action()
        now = self.clock()
        for number in sorted(self.unanswered):
            waited = time.ticks_diff(now, self.unanswered[number])
            if waited >= self.answer_ms:
                del self.unanswered[number]
                self.overdue.append(number)
                self.emit("health", None, {"alarm": number, "unanswered_s": waited // 1000})
