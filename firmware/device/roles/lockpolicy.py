"""When a lock opens for an allowed credential (issue #23): the customer's visit windows from a
signed `schedule` command, one-off `window` grants, and the configured fallback when the lock
holds no schedule it can use. Only the lock role imports it (device.roles.wiring).

    policy = Policy("schedule.json", "open_for_allowed", now=clock.now)
    opens, reason = policy.decide()      # (True, "window") / (False, "outside_window") / ...
    policy.on_schedule(x)                # a verified command's x; PolicyError if refused

`decide(now, schedule, grants, fallback)` is the whole rule as a pure function; the Lock asks
it on every tap by an allowed credential and the property test holds the Lock to it.
"""

import json
import os

from micropython import const

FALLBACKS = ("open_for_allowed", "deny")
_MAX_WINDOWS = const(128)  # a week of visits, several a day; the command stays under 2 KB
_MAX_GRANTS = const(8)
_MAX_TOLERANCE_S = const(7200)
_MAX_SPAN_S = const(86400)  # no planned visit or one-off grant is longer than a day


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
        if fallback not in FALLBACKS:
            raise PolicyError("fallback must be one of %s" % ", ".join(FALLBACKS))
        self.path = path
        self.fallback = fallback
        self.now = now
        self.schedule = None
        self.grants = []
        try:
            with open(path) as file:
                held = json.loads(file.read())
            schedule = held.get("schedule")
            self.schedule = None if schedule is None else check_schedule(schedule)
            self.grants = [_span(grant) for grant in held.get("grants", [])]
        except (OSError, ValueError, AttributeError, PolicyError):
            # never had one (a new install), or a file no lock wrote: the fallback decides
            self.schedule, self.grants = None, []

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

    def on_window(self, x):
        """A verified `window` command: a one-off grant [start, end] (an unplanned visit)."""
        for key in x:
            if key not in ("start", "end"):
                raise PolicyError("unknown field %s" % key)
        grant = _span([x.get("start"), x.get("end")])
        now = self.now()
        grants = [g for g in self.grants if now is None or g[1] >= now]  # drop the spent ones
        if len(grants) >= _MAX_GRANTS:
            grants.pop(0)
        grants.append(grant)
        self.grants = grants
        self._save()

    def _save(self):
        temporary = self.path + ".new"
        with open(temporary, "w") as file:
            file.write(json.dumps({"schedule": self.schedule, "grants": self.grants}))
        os.rename(temporary, self.path)
