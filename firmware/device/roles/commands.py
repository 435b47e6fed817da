"""The signed `time` and `config` commands (FORMATS.md §2) in the running device. A tag obeys
one a few times in its life, so device.app loads this module for each command and drops it
after (device.forget): its code is not on the heap between commands.

    from device.roles import commands
    commands.obey(app, "config", x)      # x: the command's verified `x` map
"""

from device.board import config


def obey(app, kind, x):
    if kind == "time":
        offset = app.clock.set(x["t"] * 1000)
        app.record("clock_sync", None, {"offset_ms": offset, "src": "cmd"})
    else:
        _config(app, x)


def _config(app, x):
    """`config`: the file on flash first (config.update: validated whole, written aside and
    renamed), then the running parts. A refusal changes nothing; it is logged and journaled
    with its reason, so the host learns why."""
    try:
        settings = config.update(app.config_path, x, source="config")
    except config.ConfigError as error:
        app.log("command %s" % error)
        reason = {"config": "refused", "error": (error.problem or str(error))[:64]}
        if error.field is not None:
            reason["field"] = str(error.field)[:32]
        app.record("health", None, reason)  # event text is at most 64 characters
        return
    app.settings = settings
    app.visits.debounce_ms = settings["visits"]["debounce_ms"]
    if app.lock is not None:
        app.lock.configure(settings["lock"])
    if app.alarm is not None:
        app.alarm.answer_ms = settings["alarm"]["answer_s"] * 1000
    app.health_ms = settings["health_s"] * 1000
    if "tag_mode" in x and app.reader is not None:
        app.reader.tag_mode = app._make_tag_mode()
    app.record("health", None, {"config": x})
