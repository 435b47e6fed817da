"""A board's tamper switch (issue #23): the housing opened or the board taken off the wall.

    tamper = Tamper(hal.input("tamper"), emit)   # only when board.json names a tamper input
    tamper.poll()                                # from the role's poll, every ~20 ms

Every settled change of the input is a signed `tamper` event {"open": 1|0} (1: the switch is
active, the housing open; an event's x holds no booleans); the host raises the `tamper` alert until the next one says
closed. Only the lock and alarm roles load it (device.roles.wiring): the tag's heap never holds it.
"""

from device.board.debounce import Debounced


class Tamper:
    def __init__(self, source, emit, clock=None):
        self.input = Debounced(source, clock=clock)
        self.emit = emit
        if self.input.state:
            self.emit("tamper", None, {"open": 1})  # opened while the board was off

    def poll(self):
        change = self.input.update()
        if change is not None:
            self.emit("tamper", None, {"open": 1 if change else 0})
