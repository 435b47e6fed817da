"""The periodic health report (issue #22; docs/formats-v1-additions.md, `health` with `fw`). It
runs once per health_s, so device.app loads this module for each report and drops it after
(device.forget): its code is not on the heap in between.

    from device.roles import health
    fields = health.report(app)          # the x of the `health` event app journals
"""

from micropython import const

import device
from device.board import memory

_FAILED_BACKOFF_MS = const(60000)  # device.roles.reader's longest back-off between resets


def reader_state(reader):
    """"ok"; "recovering" while the PN532 is being reset; "failed" once resets keep failing
    and the reader waits its longest back-off (a minute) between attempts. Here, not on the
    reader: this module is on the heap only while a report is written."""
    if reader.ready:
        return "ok"
    return "failed" if reader.backoff_ms >= _FAILED_BACKOFF_MS else "recovering"


def report(app):
    """Firmware, the report interval (the host's "silent" alert counts in it), reset cause, heap
    (free and the least seen), journal backlog and fill, seconds since the last clock sync
    (absent: never synced in this boot), reader state and recoveries; Wi-Fi signal, tamper
    input and supply voltage where the board has them."""
    journal = app.journal
    reader = app.reader
    hal = app.hal
    if reader is not None:
        state, resets = reader_state(reader), reader.resets
    else:
        state, resets = ("starting" if "reader" in app.stale_ms else "failed"), 0
    fields = {"fw": device.VERSION, "reset": hal.reset_cause(), "heap": memory.free(),
              "heap_min": memory.least_free(), "backlog": journal.next_seq - 1 - journal.acked,
              "fill": journal.fill(), "reader": state, "resets": resets,
              "every_s": app.health_ms // 1000}
    sync = app.clock.quality()[1]
    if sync is not None:
        fields["sync_s"] = sync
    for name in ("rssi", "supply_mv"):
        read = getattr(hal, name, None)
        value = read() if read is not None else None
        if value is not None:
            fields[name] = value
    if hal.has_input("tamper"):
        fields["tamper"] = int(hal.input("tamper").value())  # 1: open (x holds no bool)
    return fields
