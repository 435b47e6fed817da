"""The lock and alarm roles in the app: their objects built from board.json and config.json, and
the lock's allow/revoke/schedule/window commands. device.app imports it only for those roles, so
a tag's heap never holds it.

    from device.roles import wiring
    wiring.build(app, board, board_hal, root)     # sets app.lock or app.alarm
    wiring.add_lock_commands(app, handlers)       # allow, revoke, schedule, window for the link
"""


def build(app, board, board_hal, root, answer_ms=None):
    """The role's object on `app.lock` or `app.alarm`, fed by the board's relay and inputs."""
    settings = app.settings
    tamper = None
    if app.role in ("lock", "alarm") and board_hal.has_input("tamper"):
        # issue #23: a tamper switch, polled with the role's inputs (device.roles.tamper)
        from device.roles.tamper import Tamper

        tamper = Tamper(board_hal.input("tamper"), app.record, clock=app.clock.ticks)
    if app.role == "lock":
        from device.roles.lock import Allowlist, Lock
        from device.roles.lockpolicy import Policy

        relay = board["relay"]
        policy = Policy(root + "/schedule.json" if root else "schedule.json",
                        settings["lock"]["fallback"], app.clock.now)
        app.lock = Lock(board_hal.relay, board_hal.input("door"), board_hal.input("exit"),
                        app.record, Allowlist(root + "/allow.bin" if root else "allow.bin"),
                        app.feedback, mode=relay["mode"], pulse_ms=relay["pulse_ms"],
                        relock_ms=settings["lock"]["relock_ms"], clock=app.clock.ticks,
                        policy=policy, door_open_ms=settings["lock"]["door_open_s"] * 1000,
                        tamper=tamper)
    elif app.role == "alarm":
        from device.roles.alarm import Alarm

        app.alarm = Alarm(app.record, board_hal.input("alarm_call"), board_hal.input("green"),
                          board_hal.input("yellow"), app.feedback,
                          answer_ms=answer_ms or settings["alarm"]["answer_s"] * 1000,
                          clock=app.clock.ticks, tamper=tamper)


def add_lock_commands(app, handlers):
    """FORMATS.md §2 `allow`/`revoke`: the lock's allowlist on flash first, then a `health`
    event {kind: number of credentials}. The host closes the command on it (kvitto.outbox),
    and the case shows when the door began or stopped opening. Issue #23's `schedule` and
    one-off `window` (device.roles.lockpolicy): taken or refused, the lock journals which, and
    the host closes the command on that event."""
    lock = app.lock

    def command(kind, x):
        if kind in ("allow", "revoke"):
            creds = x.get("creds", [])
            (lock.allowlist.allow if kind == "allow" else lock.allowlist.revoke)(creds)
            app.record("health", None, {kind: len(creds)})
            return
        from device.roles.lockpolicy import PolicyError

        try:
            taken = (lock.policy.on_schedule if kind == "schedule" else lock.policy.on_window)(x)
        except PolicyError as error:
            app.record("health", None, {kind: "refused", "error": str(error)[:64]})
            return
        app.record("health", None, {kind: 1 if taken is None else taken})

    for kind in ("allow", "revoke", "schedule", "window"):
        handlers[kind] = lambda x, kind=kind: command(kind, x)
