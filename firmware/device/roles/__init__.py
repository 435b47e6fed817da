"""Roles: what a board does with a tap. The tag's reader and visit state, the lock, the alarm,
and the wiring that builds a lock or an alarm from board.json and config.json.

    from device.roles.reader import Reader
    reader = Reader(nfc, app.on_tap, "tag-0042")   # nfc: a device.drivers.pn532.PN532

Imports drivers, evidence and the board layer; never the link (app.py hands events to it) nor
the app. A tag loads reader and visits only; lock, alarm and wiring stay off its heap.
"""
