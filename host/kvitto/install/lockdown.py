"""Production boot.py: once a board is provisioned, its serial REPL is closed for good.

    from kvitto.install.lockdown import boot_py
    Path("boot.py").write_text(boot_py())              # or: kvitto lockdown --port /dev/ttyUSB0
    kvitto image --board esp32-devkitc --lockdown …    # the same file inside a board image

How: while /config.json and /key.bin are absent the board boots as before (the REPL stays open
for `kvitto provision`). Once both exist, boot.py turns Ctrl-C off (`micropython.kbd_intr(-1)`,
so nothing on the UART can interrupt the application and reach the REPL), detaches any REPL
duplicated onto a stream (`os.dupterm(None, 0)`), runs main.py itself and resets the board if
it ever returns or fails, so the interpreter never falls through to the REPL. The ROM
bootloader remains reachable through the BOOT pin: docs/security.md covers flash encryption and
secure boot, which close that path too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvitto.errors import KvittoError

BOOT_PY = """\
# boot.py (production), written by `kvitto lockdown`. Unprovisioned: the REPL stays open for
# `kvitto provision`. Provisioned (config.json and key.bin present): no way into the REPL.
import os


def _provisioned():
    try:
        os.stat("config.json")
        os.stat("key.bin")
        return True
    except OSError:
        return False


if _provisioned():
    import machine
    import micropython
    import sys

    micropython.kbd_intr(-1)  # Ctrl-C on the UART is data now, never KeyboardInterrupt
    try:
        os.dupterm(None, 0)  # ports that put the REPL on a dupterm slot (ESP8266 style)
    except Exception:
        pass
    try:
        import main  # noqa: F401  the application; on a board it never returns
    except BaseException as error:  # noqa: B036  anything at all: reset, never the REPL
        sys.print_exception(error)
    machine.reset()
"""


def boot_py() -> str:
    """The production boot.py text."""
    return BOOT_PY


_WRITE_BOOT = """
import binascii, json, os
from device.evidence import identity
root = identity._default_root()
where = root + "/" if root else ""
data = binascii.unhexlify(%r)
with open(where + "boot.py.new", "wb") as f:
    f.write(data)
os.rename(where + "boot.py.new", where + "boot.py")
with open(where + "boot.py", "rb") as f:
    back = f.read()
provisioned = True
for name in ("config.json", "key.bin"):
    try:
        os.stat(where + name)
    except OSError:
        provisioned = False
print(json.dumps({"ok": back == data, "provisioned": provisioned}))
"""


def lock_board(port: str) -> dict[str, Any]:
    """Write the production boot.py onto a running board through mpremote (atomic rename)."""
    from kvitto.install.console import DeviceConsole, ProvisionError

    console = DeviceConsole(port)
    try:
        answer = console.run(_WRITE_BOOT % BOOT_PY.encode().hex())
    finally:
        console.close()
    if not answer.get("ok"):
        raise ProvisionError(f"{port}: boot.py did not read back as written")
    return {"port": port, "boot_py": "/boot.py", "provisioned": bool(answer.get("provisioned"))}


def run_lockdown(port: str | None, out: str | None, output_format: str) -> dict[str, Any]:
    """`kvitto lockdown`: to a file (--out) or onto a board (--port)."""
    import click

    if bool(port) == bool(out):
        raise KvittoError("give exactly one of --port (write it onto the board) or --out FILE")
    if out:
        path = Path(out)
        path.write_text(BOOT_PY)
        report: dict[str, Any] = {"out": str(path)}
    else:
        report = lock_board(port or "")
    if output_format == "json":
        click.echo(json.dumps(report))
    elif out:
        click.echo(f"wrote {out}: copy it to the board as /boot.py (or `kvitto image --lockdown`)")
    else:
        click.echo(f"{port}: production boot.py written")
        if report["provisioned"]:
            click.echo("the REPL closes at the next reset; only reflashing reopens it")
        else:
            click.echo(
                "not provisioned yet: the REPL stays open until config.json and key.bin exist"
            )
    return report
