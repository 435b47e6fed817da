"""Device time: uptime, SNTP (RFC 5905 / RFC 4330) and the organisation's signed `time` command,
and the time quality every event carries (FORMATS.md §1 keys 4-6: up, t, sync).

    clock = Clock()
    offset_ms = await ntp.sync(clock, ["pool.ntp.org"])   # link.ntp; or clock.set(t_ms)
    up, t, sync_age = clock.uptime_ms(), *clock.quality()   # t, sync_age None until set

No floats: milliseconds as integers throughout. Time is kept as "Unix ms at uptime u" =
base + u, so it never depends on the port's epoch (the ESP32's `time` starts in 2000).
The `ticks` clock is injectable for tests; call uptime_ms() at least every few days (the app
does on every event and supervisor tick) so ticks_ms wrap-around is never missed. The SNTP
packets and checks are device.link.ntp, which adjusts a Clock it is given; the app loads it only
while a sync runs, so this module never imports it.
"""

import time


class Clock:
    def __init__(self, ticks=None):
        # clock.ticks(): the millisecond ticks this clock runs on (time.ticks_ms or a test's fake)
        self.ticks = ticks or time.ticks_ms
        self._last = self.ticks()
        self._up = 0
        self._base = None  # Unix ms at uptime 0, once set
        self._synced_up = 0

    def uptime_ms(self):
        """Milliseconds since this boot (FORMATS.md §1 key 4), immune to ticks wrap-around."""
        now = self.ticks()
        self._up += time.ticks_diff(now, self._last)
        self._last = now
        return self._up

    def local_ms(self):
        """The device's idea of Unix ms; uptime alone while never set (base 0)."""
        return (self._base or 0) + self.uptime_ms()

    def now(self):
        """Unix seconds, or None when the clock was never set in this boot."""
        if self._base is None:
            return None
        return (self._base + self.uptime_ms()) // 1000

    def quality(self):
        """(t, sync age in seconds) for an event; (None, None) when never set (keys 5, 6)."""
        if self._base is None:
            return None, None
        up = self.uptime_ms()
        return (self._base + up) // 1000, (up - self._synced_up) // 1000

    def adjust(self, offset_ms):
        """Move the clock by offset_ms (measured against local_ms()). Returns offset_ms. The
        event that says so (clock_sync) names the source, ntp or cmd."""
        up = self.uptime_ms()
        self._base = (self._base or 0) + offset_ms
        self._synced_up = up
        return offset_ms

    def set(self, unix_ms):
        """Set the time outright (the org's signed `time` command). Returns the offset applied
        against the previous device time (against uptime alone when it was never set)."""
        return self.adjust(unix_ms - self.local_ms())
