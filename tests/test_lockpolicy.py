"""The lock opens for an allowed credential only when care is due (issue #23): inside a planned
visit window (± tolerance), inside a one-off grant, or by the configured fallback when the lock
holds no usable schedule. Runs under the unix port and CPython alike (run_both); the property
test holds the real Lock to the policy's pure function for random schedules and tap times."""

from __future__ import annotations

from app_support import run_both

KNOWN = "aa" * 16
STRANGER = "cc" * 16

PRELUDE = f"""
from device.roles.lock import Lock, Allowlist
from device.roles.lockpolicy import Policy, PolicyError, decide
clock = FakeClock()
wall = [None]  # Unix seconds of the device clock; None: never set
door, exit_button, relay = Line(), Line(), Relay()
allow = Allowlist("allow.bin")
allow.allow([bytes.fromhex("{KNOWN}")])
shown = []  # the light's colours, by name: refused is red
class Light:
    def show(self, kind):
        shown.append(kind)
def make(fallback="open_for_allowed"):
    policy = Policy("schedule.json", fallback, lambda: wall[0])
    return Lock(relay, door, exit_button, emit, allow, feedback=Light(), relock_ms=1000,
                clock=clock, policy=policy)
def settle(lock, ms=1100):
    for _ in range(ms // 10):
        clock.advance(10)
        lock.poll()
"""

DAY = 1_796_000_000  # a Unix time in 2026


def test_pure_function_windows_tolerance_grants_and_fallbacks(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
s = {{"until": {DAY} + 86400, "tol": 600, "w": [[{DAY} + 3600, {DAY} + 5400]]}}
for now in (None, {DAY} + 2999, {DAY} + 3000, {DAY} + 6000, {DAY} + 6001, {DAY} + 86401):
    print(now, decide(now, s, [], "deny"), decide(now, s, [], "open_for_allowed"))
print(decide({DAY} + 10, s, [[{DAY}, {DAY} + 60]], "deny"))
print(decide({DAY} + 10, None, [], "deny"), decide({DAY} + 10, None, [], "open_for_allowed"))
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "None (False, 'fallback') (True, 'fallback')",  # no clock: nothing can be judged
        f"{DAY + 2999} (False, 'outside_window') (False, 'outside_window')",
        f"{DAY + 3000} (True, 'window') (True, 'window')",  # start - tolerance
        f"{DAY + 6000} (True, 'window') (True, 'window')",  # end + tolerance
        f"{DAY + 6001} (False, 'outside_window') (False, 'outside_window')",
        f"{DAY + 86401} (False, 'fallback') (True, 'fallback')",  # stale: a long outage
        "(True, 'grant')",
        "(False, 'fallback') (True, 'fallback')",  # never had a schedule: a new install
    ]


def test_lock_unlocks_in_a_window_denies_outside_and_says_why(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
lock = make("deny")
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"))  # no clock, no schedule: fallback deny
lock.policy.on_schedule({{"issued": 5, "until": {DAY} + 86400, "tol": 300,
                          "w": [[{DAY} + 3600, {DAY} + 5400]]}})
wall[0] = {DAY} + 3400
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"), relay.state)  # inside the tolerance
settle(lock)
wall[0] = {DAY} + 7200
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"))  # open visit: depart, never gated
print(lock.tap(bytes.fromhex("{KNOWN}"), "badge"), relay.state)  # outside: denied
print(lock.tap(bytes.fromhex("{STRANGER}"), "badge"))
print(shown)
show()
""",
        tmp_path,
    )
    policy = "('fallback', 'deny')"
    assert out.splitlines() == [
        "deny",
        "unlock True",
        "depart",
        "deny False",
        "deny",
        "['refused', 'arrive', 'depart', 'refused', 'refused']",  # red outside the window
        f"deny {KNOWN} [{policy}, ('reason', 'fallback'), ('via', 'badge')]",
        f"unlock {KNOWN} [{policy}, ('reason', 'window'), ('via', 'badge')]",
        "lock None None",
        f"depart {KNOWN} [('via', 'lock')]",
        f"deny {KNOWN} [{policy}, ('reason', 'outside_window'), ('via', 'badge')]",
        f"deny {STRANGER} [{policy}, ('reason', 'unknown'), ('via', 'badge')]",
    ]


def test_old_or_replayed_schedule_refused_and_held_schedule_survives(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
lock = make()
w = [[{DAY}, {DAY} + 600]]
print(lock.policy.on_schedule({{"issued": 7, "until": {DAY} + 86400, "tol": 0, "w": w}}))
for bad in ({{"issued": 7, "until": {DAY}, "tol": 0, "w": []}},
            {{"issued": 6, "until": {DAY}, "tol": 0, "w": []}},
            {{"issued": 8, "until": {DAY}, "tol": 0, "w": [[{DAY} + 5, {DAY}]]}},
            {{"issued": 8, "until": {DAY}, "tol": 0, "w": [], "who": 1}},
            {{"issued": 8, "until": {DAY}, "tol": 99999, "w": []}}):
    try:
        lock.policy.on_schedule(bad)
    except PolicyError as error:
        print("refused", error)
lock.policy.on_window({{"start": {DAY} + 4000, "end": {DAY} + 4600}})
again = make("deny")  # a reboot: the file on flash decides
print(again.policy.schedule["issued"], again.policy.schedule["w"], again.policy.grants)
wall[0] = {DAY} + 4100
print(again.tap(bytes.fromhex("{KNOWN}"), "badge"))
show()
""",
        tmp_path,
    )
    assert out.splitlines() == [
        "1",
        "refused old: issued 7, holding 7",
        "refused old: issued 6, holding 7",
        f"refused window {DAY + 5}..{DAY}: end before start or over a day",
        "refused unknown field who",
        "refused tol over 7200 s",
        f"7 [[{DAY}, {DAY + 600}]] [[{DAY + 4000}, {DAY + 4600}]]",
        "unlock",
        f"unlock {KNOWN} [('fallback', 'deny'), ('reason', 'grant'), ('via', 'badge')]",
    ]


def test_property_the_lock_decides_as_the_pure_function(micropython, tmp_path):
    """For random schedules, grants, fallbacks and tap times (a fixed-seed LCG, identical in
    both interpreters; 40 schedules × 12 taps), the Lock unlocks exactly when decide() says
    so and its event names decide()'s reason."""
    out = run_both(
        micropython,
        PRELUDE
        + f"""
state = [20261207]
def rand(n):
    state[0] = (state[0] * 1103515245 + 12345) % 2147483648
    return state[0] % n
base = {DAY}
mismatches = 0
checked = 0
seen = set()
for case in range(40):
    windows = []
    for _ in range(rand(5)):
        start = base + rand(86400)
        windows.append([start, start + rand(7200)])
    tolerance = rand(1800)
    until = base + rand(2 * 86400)
    grants = []
    for _ in range(rand(3)):
        start = base + rand(86400)
        grants.append([start, start + rand(3600)])
    fallback = ("open_for_allowed", "deny")[rand(2)]
    lock = make(fallback)
    if rand(4):
        lock.policy.on_schedule({{"issued": case + 1, "until": until, "tol": tolerance,
                                  "w": windows}})
    for grant in grants:
        lock.policy.grants.append(grant)
    for _ in range(12):
        wall[0] = None if rand(10) == 0 else base + rand(2 * 86400 + 3600)
        want = decide(wall[0], lock.policy.schedule, lock.policy.grants, fallback)
        events.clear()
        got = lock.tap(bytes.fromhex("{KNOWN}"), "badge")
        reason = events[-1][2]["reason"]
        if (got == "unlock") != want[0] or reason != want[1] or got not in ("unlock", "deny"):
            mismatches += 1
        seen.add((got, reason))
        checked += 1
        if got == "unlock":
            lock.tap(bytes.fromhex("{KNOWN}"), "badge")  # depart: the next tap is a new visit
            settle(lock)  # relocks: the door was never opened
print(checked, mismatches)
print(sorted(seen))
""",
        tmp_path,
    )
    checked, mismatches = out.splitlines()[0].split()
    assert (checked, mismatches) == ("480", "0")
    # every outcome was reached, so the agreement is not vacuous
    assert out.splitlines()[1] == str(
        sorted(
            [
                ("deny", "fallback"),
                ("deny", "outside_window"),
                ("unlock", "fallback"),
                ("unlock", "grant"),
                ("unlock", "window"),
            ]
        )
    )


def test_a_schedule_file_no_lock_wrote_leaves_the_fallback(micropython, tmp_path):
    out = run_both(
        micropython,
        PRELUDE
        + f"""
for text in ('{{"schedule": {{"issued": 1}}}}', '[1, 2]', '{{"grants": [[5, 1]]}}', 'not json'):
    with open("schedule.json", "w") as file:
        file.write(text)
    lock = make("deny")
    print(lock.policy.schedule, lock.policy.grants, lock.tap(bytes.fromhex("{KNOWN}"), "badge"))
""",
        tmp_path,
    )
    assert out.splitlines() == ["None [] deny"] * 4
