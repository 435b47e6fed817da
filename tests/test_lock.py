"""The lock role: known tap unlocks, the door's use relocks, unknown is denied, a second
staff member while the door is open arrives without unlocking; the allowlist lives on flash."""

from __future__ import annotations

from app_support import run_both

KNOWN = "aa" * 16
SECOND = "bb" * 16
STRANGER = "cc" * 16

PRELUDE = f"""
from device.roles.lock import Lock, Allowlist
clock = FakeClock()
door, exit_button, relay = Line(), Line(), Relay()
allow = Allowlist("allow.bin")
allow.allow([bytes.fromhex("{KNOWN}"), bytes.fromhex("{SECOND}")])
lock = Lock(relay, door, exit_button, emit, allow, pulse_ms=3000, relock_ms=8000, clock=clock)
def settle(ms=50):
    for _ in range(ms // 10):
        clock.advance(10)
        lock.poll()
"""


def test_known_tap_unlocks_door_use_relocks_and_second_staff_arrives(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"), relay.state)
settle(3100)
print("pulse over", relay.state, lock.locked)
door.active = True; settle()
print(lock.tap(bytes.fromhex("{SECOND}"), "phone"), relay.changes)
door.active = False; settle()
print("locked", lock.locked)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "unlock True",
        "pulse over False False",
        "arrive [True, False]",
        "locked True",
        f"unlock {KNOWN} [('via', 'badge')]",
        "door_open None None",
        f"arrive {SECOND} [('via', 'lock')]",
        "door_close None None",
        "lock None None",
    ]


def test_same_credential_again_departs_without_driving_the_strike(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"))
settle(9000)
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"), relay.changes)
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"))
show()
""",
        tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == "unlock"
    assert lines[1] == "depart [True, False]"  # the strike moved once: for the arrival only
    assert lines[2] == "unlock"  # a new visit
    assert lines[3:] == [
        f"unlock {KNOWN} [('via', 'badge')]",
        "lock None None",
        f"depart {KNOWN} [('via', 'lock')]",
        f"unlock {KNOWN} [('via', 'badge')]",
    ]


def test_staff_revoked_while_inside_still_depart_and_are_then_denied(micropython, tmp_path):
    # the alarm duty whose grant closed at check-out leaves the same way (issue #23): the
    # departure is evidence of the visit's end, and it moves no strike
    out = run_both(
        micropython,
        PRELUDE
        + f"""
print(lock.tap(bytes.fromhex("{SECOND}"), "badge"))
settle(9000)
lock.allowlist.revoke([bytes.fromhex("{SECOND}")])
print(lock.tap(bytes.fromhex("{SECOND}"), "badge"), relay.changes)
print(lock.tap(bytes.fromhex("{SECOND}"), "badge"))
""",
        tmp_path,
    )
    assert out.splitlines() == ["unlock", "depart [True, False]", "deny"]


def test_unknown_is_denied_and_unused_unlock_relocks(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
print(lock.tap(bytes.fromhex("{STRANGER}"), "badge"), relay.changes)
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"))
settle(7900)
print("still unlocked", not lock.locked)
settle(200)
print("relocked", lock.locked)
exit_button.active = True; settle(); exit_button.active = False; settle()
print("exit", not lock.locked)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "deny []",
        "unlock",
        "still unlocked True",
        "relocked True",
        "exit True",
        f"deny {STRANGER} [('via', 'badge')]",
        f"unlock {KNOWN} [('via', 'badge')]",
        "lock None None",
        "unlock None [('via', 'exit')]",
    ]


def test_door_bounce_is_one_open(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + """
for level in (True, False, True, False, True):
    door.active = level
    clock.advance(5)
    lock.poll()
settle(100)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == ["door_open None None"]


def test_allowlist_survives_restart_and_refuses_bad_input(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
lock.allowlist.revoke([bytes.fromhex("{SECOND}")])
again = Allowlist("allow.bin")
with open("allow.bin", "rb") as f:
    held = len(f.read()) // 16
print(held, bytes.fromhex("{KNOWN}") in again, bytes.fromhex("{SECOND}") in again)
for bad in ([b"short"], "notalist"):
    try:
        lock.allowlist.allow(bad)
    except ValueError as error:
        print("refused", error)
with open("allow.bin", "ab") as f:
    f.write(b"xyz")
try:
    Allowlist("allow.bin")
except ValueError as error:
    print("refused", error)
""",
        tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == "1 True False"
    assert lines[1].startswith("refused a credential id must be 16 bytes")
    assert lines[2] == "refused creds must be a list of 16-byte credential ids"
    assert (
        lines[3] == "refused allow.bin: 19 bytes is not a whole number of 16-byte credential ids"
    )


def test_hold_mode_keeps_the_relay_until_the_door_closes(micropython, tmp_path):
    out = run_both(
        micropython,
        f"""
from device.roles.lock import Lock, Allowlist
clock = FakeClock()
door, exit_button, relay = Line(), Line(), Relay()
allow = Allowlist("allow.bin")
allow.allow([bytes.fromhex("{KNOWN}")])
lock = Lock(relay, door, exit_button, emit, allow, mode="hold", pulse_ms=3000, relock_ms=8000,
            clock=clock)
def settle(ms=50):
    for _ in range(ms // 10):
        clock.advance(10)
        lock.poll()
lock.tap(bytes.fromhex("{KNOWN}"), "phone")
settle(5000)
print("held after 5 s", relay.state)
door.active = True; settle(20000)
print("held while open", relay.state)
door.active = False; settle()
print("released on close", relay.state, relay.changes)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "held after 5 s True",
        "held while open True",
        "released on close False [True, False]",
        f"unlock {KNOWN} [('via', 'phone')]",
        "door_open None None",
        "door_close None None",
        "lock None None",
    ]


def test_every_event_of_a_tap_carries_its_proof(micropython, tmp_path):
    # An NTAG 424 SUN or a phone's nonce and answer (docs/formats-v1-additions.md): the host
    # checks a lock's taps as it checks a tag's, including the refused ones.
    out = run_both(
        micropython,
        PRELUDE
        + f"""
sun = {{"sun": bytes(range(24))}}
phone = {{"nonce": b"n" * 16, "sig": b"s" * 64}}
print(lock.tap(bytes.fromhex("{STRANGER}"), "ntag424", sun))
print(lock.tap(bytes.fromhex("{KNOWN}"), "ntag424", sun))
door.active = True; settle()
print(lock.tap(bytes.fromhex("{SECOND}"), "phone", phone))
print(lock.tap(bytes.fromhex("{KNOWN}"), "ntag424", sun))
show()
""",
        tmp_path,
    )
    sun = ("sun", bytes(range(24)))
    nonce, sig = ("nonce", b"n" * 16), ("sig", b"s" * 64)
    assert out.splitlines() == [
        "deny",
        "unlock",
        "arrive",
        "depart",
        f"deny {STRANGER} {sorted([('via', 'ntag424'), sun])}",
        f"unlock {KNOWN} {sorted([('via', 'ntag424'), sun])}",
        "door_open None None",
        f"arrive {SECOND} {sorted([('via', 'lock'), nonce, sig])}",
        f"depart {KNOWN} {sorted([('via', 'lock'), sun])}",
    ]


def test_a_door_held_open_is_reported_once_per_opening(micropython, tmp_path):
    """issue #23: a door left open `door_open_ms` is a second `door_open` with `held_s`, once;
    a door closed and opened again starts over."""
    out = run_both(
        micropython,
        PRELUDE
        + """
lock.door_open_ms = 2000
door.active = True; settle(1990)
print("early", [e[0] for e in events])
settle(100); settle(5000)
door.active = False; settle()
door.active = True; settle(2100)
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "early ['door_open']",
        "door_open None None",
        "door_open None [('held_s', 2)]",
        "door_close None None",
        "door_open None None",
        "door_open None [('held_s', 2)]",
    ]
