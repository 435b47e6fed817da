"""The digital lock: allowlist on flash, strike relay, door contact, exit button, auto-relock.

    lock = Lock(hal.relay, hal.input("door"), hal.input("exit"), emit, Allowlist("allow.bin"))
    lock.tap(cred, "badge")      # -> "unlock" | "arrive" | "depart" | "deny"
    lock.poll()                  # every ~20 ms: door contact, exit button, pulse end, relock

`emit(type, cred, x)` journals the event and returns (journal first, then the relay and the
light). Taps: an enrolled credential unlocks a locked, closed door; an enrolled credential
tapping while the door is open or still unlocked registers `arrive` without unlocking (Haninge
"Registrera ankomst": the second of two staff); a credential whose visit is open tapping again
registers `depart` (the staff member leaves; no strike); anything else is `deny`. The door locks again
when it closes after being opened, or `relock_ms` after an unlock nobody used; a door held open
`door_open_ms` says so once more (`door_open` with `held_s`). The allowlist
changes only through signed `allow`/`revoke` commands (FORMATS.md §2) and works offline.
With a `policy` (device.roles.lockpolicy, issue #23) an allowed credential unlocks only when
the policy says so (a visit window, a one-off grant, the fallback); its unlock and deny events
then carry the policy's `reason` and the configured `fallback`. While an alarm grant runs, the
credentials of the provider on alarm duty it names open whatever the schedule, allowlisted or
not: the unlock's reason is `alarm` and its `alarm` the alarm call event's name.
"""

import os
import time

from micropython import const

from device.board.debounce import Debounced

_CRED_BYTES = const(16)  # FORMATS.md §1 key 8: credential id is bstr(16)
_MAX_CREDS = const(512)
_MAX_PRESENT = const(16)  # open visits at one door, like the tag role's cap


def _fields(via, extra):
    x = {"via": via}
    if extra:
        for key in extra:
            x[key] = extra[key]
    return x


class Allowlist:
    """Credential ids allowed to unlock, kept as one file of 16-byte ids. Rewritten whole on
    each change through a temporary file and rename (littlefs rename is atomic), so a power cut
    leaves the old list or the new one, never a mix. A bad file or command: ValueError."""

    def __init__(self, path="allow.bin"):
        self.path = path
        self._creds = set()
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            data = b""
        if len(data) % _CRED_BYTES:
            raise ValueError("%s: %d bytes is not a whole number of 16-byte credential ids"
                            % (path, len(data)))
        for start in range(0, len(data), _CRED_BYTES):
            self._creds.add(bytes(data[start:start + _CRED_BYTES]))

    def __contains__(self, cred):
        return cred is not None and bytes(cred) in self._creds

    def _check(self, creds):
        if not isinstance(creds, (list, tuple)):
            raise ValueError("creds must be a list of 16-byte credential ids")
        for cred in creds:
            if not isinstance(cred, (bytes, bytearray)) or len(cred) != _CRED_BYTES:
                raise ValueError("a credential id must be 16 bytes, got %r" % (cred,))

    def allow(self, creds):
        self._check(creds)
        if len(self._creds | set(bytes(c) for c in creds)) > _MAX_CREDS:
            raise ValueError("the allowlist holds at most %d credentials" % _MAX_CREDS)
        self._creds.update(bytes(c) for c in creds)
        self._save()

    def revoke(self, creds):
        self._check(creds)
        for cred in creds:
            self._creds.discard(bytes(cred))
        self._save()

    def _save(self):
        temporary = self.path + ".new"
        with open(temporary, "wb") as file:
            for cred in sorted(self._creds):
                file.write(cred)
        os.rename(temporary, self.path)


class Lock:
    """Lock role logic over a relay (hal's output: `set(on)`, `state`) and two inputs; `clock`
    is injectable for tests."""

    def __init__(self, relay, door, exit_button, emit, allowlist, feedback=None, mode="pulse",
                 pulse_ms=3000, relock_ms=8000, clock=None, policy=None, door_open_ms=300000,
                 tamper=None):
        self.relay = relay
        self.policy = policy
        self.door_open_ms = door_open_ms  # held open this long: one more door_open, with held_s
        self._door_since = 0  # ticks the door opened; None once its held-open event is out
        self.emit = emit
        self.allowlist = allowlist
        self.feedback = feedback
        self.mode = mode
        self.pulse_ms = pulse_ms
        self.relock_ms = relock_ms
        self.clock = clock or time.ticks_ms
        self.door = Debounced(door, clock=self.clock)
        self.exit = Debounced(exit_button, clock=self.clock)
        self.locked = True
        self.opened = False  # the door has opened since the last unlock
        self.present = []  # credential ids whose visit at this door is open (arrival order)
        self._unlocked_at = 0
        self.tamper = tamper  # device.roles.tamper, where the board has a tamper input
        relay.set(False)

    def tap(self, cred, via, extra=None):
        """One credential at the reader: unlock, register arrival, or deny. `extra` is the
        tap's proof (an NTAG 424 SUN, a phone's nonce and answer): every event of the tap
        carries it, so the host can check a lock's taps as it checks a tag's."""
        if cred in self.present:
            # the same credential again closes its visit (Haninge "Registrera avgång"; Phoniro
            # Lock's place receipt): leaving staff tap on the way out, no strike needed. Before
            # the allowlist: the alarm duty whose grant closed at check-out, or staff revoked
            # while inside, still say when they left
            self.present.remove(cred)
            self.emit("depart", cred, _fields("lock", extra))
            self._show("depart")
            return "depart"
        alarm = self.policy.alarm_for(cred) if self.policy is not None else None
        if alarm is None and cred not in self.allowlist:
            self.emit("deny", cred, self._why(_fields(via, extra), "unknown"))
            self._show("refused")
            return "deny"
        strike = self.locked and not self.door.state
        reason = None
        if strike and alarm is not None:
            reason = "alarm"  # an open alarm: the provider on alarm duty, whatever the schedule
        elif strike and self.policy is not None:
            opens, reason = self.policy.decide()
            if not opens:  # allowed, but no visit is due: the door stays shut
                self.emit("deny", cred, self._why(_fields(via, extra), reason))
                self._show("refused")
                return "deny"
        if len(self.present) >= _MAX_PRESENT:
            self.present.pop(0)  # bounded: the oldest never tapped out; the host flags it open
        self.present.append(cred)
        if not strike:
            # second staff while the door is open: present, but no reason to drive the strike
            self.emit("arrive", cred, _fields("lock", extra))
            self._show("arrive")
            return "arrive"
        x = self._why(_fields(via, extra), reason)
        if alarm is not None:
            x["alarm"] = alarm  # the alarm and the unlock linked in the evidence
        self.emit("unlock", cred, x)
        self._unlock()
        self._show("arrive")
        return "unlock"

    def _why(self, x, reason):
        # issue #23: with a policy, every tap's unlock or deny says why and what the lock
        # would do without a schedule, so the host sees the rule the door followed
        if self.policy is not None:
            x["reason"] = reason
            x["fallback"] = self.policy.fallback
        return x

    def _unlock(self):
        self.locked = False
        self.opened = False
        self._unlocked_at = self.clock()
        self.relay.set(True)

    def _lock(self):
        self.relay.set(False)
        self.locked = True
        self.opened = False
        self.emit("lock", None, None)

    def _show(self, kind):
        if self.feedback is not None:
            try:
                self.feedback.show(kind)
            except Exception:
                pass  # a broken LED must not stop the lock

    def poll(self):
        """Door contact, exit button, end of the strike pulse, relock. Call every ~20 ms."""
        now = self.clock()
        if self.tamper is not None:
            self.tamper.poll()
        change = self.door.update()
        if change is True:
            self.emit("door_open", None, None)
            self._door_since = now
            if not self.locked:
                self.opened = True
        elif change is False:
            self.emit("door_close", None, None)
            if not self.locked and self.opened:
                self._lock()  # relock on close (the door was used)
        if self.exit.update() is True and self.locked and not self.door.state:
            # the exit button inside: unlock for leaving (no credential)
            self.emit("unlock", None, {"via": "exit"})
            self._unlock()
        if self.door.state and self._door_since is not None:
            held = time.ticks_diff(now, self._door_since)
            if held >= self.door_open_ms:
                # issue #23: a door left open is said once per opening; the fleet view alerts
                # until the door_close that follows it
                self._door_since = None
                self.emit("door_open", None, {"held_s": held // 1000})
        if self.locked:
            return
        held = time.ticks_diff(now, self._unlocked_at)
        if self.relay.state and self.mode == "pulse" and held >= self.pulse_ms:
            self.relay.set(False)  # a strike needs only a pulse; the latch holds the door
        if not self.opened and not self.door.state and held >= self.relock_ms:
            self._lock()  # unlocked but never opened: lock again

    def configure(self, settings):
        """config.json's `lock` section, after a signed `config` command changed it."""
        self.relock_ms = settings["relock_ms"]
        self.door_open_ms = settings["door_open_s"] * 1000
        if self.policy is not None:
            self.policy.fallback = settings["fallback"]
