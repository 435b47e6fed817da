"""The alarm role: call -> check-in -> check-out linked by call number; a call with no
check-in within 30 minutes is recorded (on an injected clock); buttons are debounced."""

from __future__ import annotations

from app_support import run_both

PRELUDE = """
from device.roles.alarm import Alarm
clock = FakeClock()
call, green, yellow = Line(), Line(), Line()
alarm = Alarm(emit, call, green, yellow, clock=clock)
def press(line, ms=60):
    line.active = True
    for _ in range(ms // 10):
        clock.advance(10); alarm.poll()
    line.active = False
    for _ in range(6):
        clock.advance(10); alarm.poll()
"""


def test_call_checkin_checkout(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + """
press(call); clock.advance(12 * 60000); alarm.poll()
press(green); clock.advance(15 * 60000); alarm.poll()
press(yellow)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "alarm_call None [('alarm', 1)]",
        "alarm_checkin None [('alarm', 1)]",
        "alarm_checkout None [('alarm', 1)]",
    ]


def test_unanswered_call_is_recorded_once_after_30_minutes(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + """
press(call)
clock.advance(29 * 60000 + 59000); alarm.poll()
print("at 29:59", len(events))
clock.advance(1000); alarm.poll()
clock.advance(60000); alarm.poll()
press(call)
press(green)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "at 29:59 1",
        "alarm_call None [('alarm', 1)]",
        "health None [('alarm', 1), ('unanswered_s', 1800)]",
        "alarm_call None [('alarm', 2)]",
        "alarm_checkin None [('alarm', 1)]",  # the oldest waiting call is answered first
    ]


def test_button_bounce_and_checkin_without_call(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + """
press(green, ms=10)    # a 10 ms blip is bounce, not a press
print("blip", len(events))
press(green); press(yellow)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == ["blip 0", "alarm_checkin None None", "alarm_checkout None None"]
