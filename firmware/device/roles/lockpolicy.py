"""When a lock opens for an allowed credential (issue #23): the customer's visit windows from a
signed `schedule` command, one-off `window` grants, and the configured fallback when the lock
holds no schedule it can use. Only the lock role imports it (device.roles.wiring).

    policy = Policy("schedule.json", "open_for_allowed", now=clock.now)
    opens, reason = policy.decide()      # (True, "window") / (False, "outside_window") / ...
    policy.on_schedule(x)                # a verified command's x; PolicyError if refused

`decide(now, schedule, grants, fallback)` is the whole rule as a pure function; the Lock asks
it on every tap by an allowed credential and the property test holds the Lock to it.

An alarm grant (a `window` naming an `alarm` event and the `creds` of the provider on alarm
duty) is apart from that rule: while it runs, those credentials open whatever the schedule
(`alarm_for(cred)` -> the alarm event's name, which the unlock carries); the host sends the
same alarm again with `end` at the check-out to close it.
"""

import json
import os

from micropython import const

_MAX_WINDOWS = const(128)  # a week of visits, several a day; the command stays under 2 KB
_MAX_GRANTS = const(8)
_MAX_TOLERANCE_S = const(7200)
_MAX_SPAN_S = const(86400)  # no planned visit or one-off grant is longer than a day
_MAX_ALARMS = const(4)  # open alarm grants held at once
_MAX_ALARM_CREDS = const(32)  # credentials of the provider on alarm duty in one grant
_MAX_ALARM_REF = const(40)  # "alarm-0301 #17": the alarm call event's name


class PolicyError(Exception):
    """A `schedule` or `window` command the lock does not take; the text says why (≤ 64)."""


def decide(now, schedule, grants, fallback):
    """(opens, reason) for an allowed credential at Unix time `now` (None: clock never set).

    reason, opening: "grant" (a one-off window), "window" (a planned visit ± tolerance),
    "fallback" (the lock holds no usable schedule and the fallback is open_for_allowed);
    refusing: "outside_window", or "fallback" when the fallback is deny. `schedule` is None or
    {"until": s, "tol": s, "w": [[start, end], ...]}; `grants` a list of [start, end].
    Without a clock nothing can be judged; after `until` the schedule is stale (a long outage).
    """
    if now is None:
        return fallback == "open_for_allowed", "fallback"
    for start, end in grants:
        if start <= now <= end:
            return True, "grant"
    if schedule is None or now > schedule["until"]:
        return fallback == "open_for_allowed", "fallback"
    tolerance = schedule["tol"]
    for start, end in schedule["w"]:
        if start - tolerance <= now <= end + tolerance:
            return True, "window"
    return False, "outside_window"


def _uint(x, key):
    value = x.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError("%s must be an unsigned integer" % key)
    return value


def _span(pair):
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise PolicyError("a window is [start, end]")
    start, end = pair
    for value in pair:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError("window times must be unsigned integers")
    if end < start or end - start > _MAX_SPAN_S:
        raise PolicyError("window %d..%d: end before start or over a day" % (start, end))
    return [start, end]


def check_schedule(x):
    """The held form of a `schedule` command's x, or PolicyError (docs/formats.md §2.3)."""
    for key in x:
        if key not in ("issued", "until", "tol", "w"):
            raise PolicyError("unknown field %s" % key)
    issued = _uint(x, "issued")
    until = _uint(x, "until")
    tolerance = _uint(x, "tol")
    if tolerance > _MAX_TOLERANCE_S:
        raise PolicyError("tol over %d s" % _MAX_TOLERANCE_S)
    windows = x.get("w")
    if not isinstance(windows, list) or len(windows) > _MAX_WINDOWS:
        raise PolicyError("w must be a list of at most %d windows" % _MAX_WINDOWS)
    return {"issued": issued, "until": until, "tol": tolerance, "w": [_span(w) for w in windows]}


class Policy:
    """The schedule and grants a lock holds, on flash in one JSON file rewritten through a
    temporary file and rename (littlefs renames atomically: a power cut leaves the old file or
    the new one), so a lock decides after a reboot from what it held before it."""

    def __init__(self, path, fallback, now):
        if fallback not in ("open_for_allowed", "deny"):
            raise PolicyError("fallback must be open_for_allowed or deny")
        self.path = path
        self.fallback = fallback
        self.now = now
        self.schedule = None
        self.grants = []
        self.alarms = []  # [start, end, alarm event name, [credential id hex, ...]]
        try:
            with open(path) as file:
                held = json.loads(file.read())
            schedule = held.get("schedule")
            self.schedule = None if schedule is None else check_schedule(schedule)
            self.grants = [_span(grant) for grant in held.get("grants", [])]
            self.alarms = [
                _span(a[:2]) + [str(a[2]), [str(c) for c in a[3]]] for a in held.get("alarms", [])
            ]
        except (OSError, ValueError, AttributeError, TypeError, IndexError, PolicyError):
            # never had one (a new install), or a file no lock wrote: the fallback decides
            self.schedule, self.grants, self.alarms = None, [], []

    def decide(self):
        return decide(self.now(), self.schedule, self.grants, self.fallback)

    def on_schedule(self, x):
        """A verified `schedule` command: replaces the held schedule if it was issued later than
        it (an older or replayed schedule is refused: the commands' sequence alone would let a
        restored host database send last week's plan again). Returns the number of windows."""
        schedule = check_schedule(x)
        held = self.schedule["issued"] if self.schedule else -1
        if schedule["issued"] <= held:
            raise PolicyError("old: issued %d, holding %d" % (schedule["issued"], held))
        self.schedule = schedule
        self._save()
        return len(schedule["w"])

    def alarm_for(self, cred):
        """The alarm event's name if an open alarm grant lets `cred` in now, else None."""
        now = self.now()
        if now is None or cred is None or not self.alarms:
            return None
        hexed = bytes(cred).hex()
        for start, end, ref, creds in self.alarms:
            if start <= now <= end and hexed in creds:
                return ref
        return None

    def on_window(self, x):
        """A verified `window` command: a one-off grant [start, end] (an unplanned visit), or
        with `alarm` and `creds` an alarm grant for the provider on alarm duty."""
        for key in x:
            if key not in ("start", "end", "alarm", "creds"):
                raise PolicyError("unknown field %s" % key)
        grant = _span([x.get("start"), x.get("end")])
        now = self.now()
        if "alarm" in x or "creds" in x:
            ref, creds = x.get("alarm"), x.get("creds", [])
            if not isinstance(ref, str) or not 0 < len(ref) <= _MAX_ALARM_REF:
                raise PolicyError("alarm must name the alarm event (1-%d chars)" % _MAX_ALARM_REF)
            if not isinstance(creds, (list, tuple)) or len(creds) > _MAX_ALARM_CREDS:
                raise PolicyError("creds: at most %d credential ids" % _MAX_ALARM_CREDS)
            for cred in creds:
                if not isinstance(cred, (bytes, bytearray)) or len(cred) != 16:
                    raise PolicyError("a credential id must be 16 bytes")
            # the same alarm again replaces it (its check-out closes it); spent ones are dropped
            alarms = [a for a in self.alarms if a[2] != ref and (now is None or a[1] >= now)]
            if len(alarms) >= _MAX_ALARMS:
                alarms.pop(0)
            alarms.append(grant + [ref, [bytes(c).hex() for c in creds]])
            self.alarms = alarms
            self._save()
            return None
        grants = [g for g in self.grants if now is None or g[1] >= now]  # drop the spent ones
        if len(grants) >= _MAX_GRANTS:
            grants.pop(0)
        grants.append(grant)
        self.grants = grants
        self._save()

    def _save(self):
        temporary = self.path + ".new"
        with open(temporary, "w") as file:
            file.write(json.dumps({"schedule": self.schedule, "grants": self.grants,
                                   "alarms": self.alarms}))
        os.rename(temporary, self.path)
