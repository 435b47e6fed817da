"""A polled input that reports a change only once it has settled: a door contact, a button, a
tamper switch (the lock's and the alarm's roles; a tag has none, so this stays off its heap).

    from device.board.debounce import Debounced
    door = Debounced(board_hal.input("door"), clock=time.ticks_ms)
    if door.update() is True: ...      # the door has been open for 30 ms

Board layer: imports nothing of the device's.
"""


class Debounced:
    """An input read by polling, reporting a change only once it has held for `stable_ms`
    (a contact bounces for a few ms; a door frame rattles). update() -> True (became active),
    False (became inactive) or None (no settled change). Does not allocate."""

    def __init__(self, source, stable_ms=30, clock=None):
        import time

        self._source = source
        self._stable_ms = stable_ms
        self._clock = clock or time.ticks_ms
        self._ticks_diff = time.ticks_diff
        self.state = bool(source.value())
        self._seen = self.state
        self._since = self._clock()

    def update(self):
        now = self._clock()
        level = bool(self._source.value())
        if level != self._seen:
            self._seen = level
            self._since = now
            return None
        if level != self.state and self._ticks_diff(now, self._since) >= self._stable_ms:
            self.state = level
            return level
        return None
