"""A board's MicroPython console over its serial port (mpremote's raw REPL, entered without a
reset): what provisioning and lockdown say to a running board.
"""

from __future__ import annotations

import json
from typing import Any

from kvitto.errors import KvittoError


class ProvisionError(KvittoError):
    """The board did not answer as a kvitto device should, or refused."""


class DeviceConsole:
    """A kvitto board's serial console through mpremote's SerialTransport (raw REPL, no
    soft reset: mpremote's `resume`). Only the device's own printed JSON is read back."""

    def __init__(self, port: str, baudrate: int = 115200):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self._transport_error = TransportError
        try:
            self.transport = SerialTransport(port, baudrate=baudrate)
            self.transport.enter_raw_repl(soft_reset=False)
        except (TransportError, OSError) as error:
            raise ProvisionError(f"serial port {port}: no MicroPython console: {error}") from None
        self.port = port
        self.last_output = ""  # all the last run printed (micropython.mem_info(), say)

    def run(self, code: str, timeout: int = 60) -> Any:
        """Run `code` on the board; it prints one JSON line, returned decoded."""
        try:
            out = self.transport.exec_raw(code, timeout=timeout)
        except self._transport_error as error:
            raise ProvisionError(f"{self.port}: the board did not answer: {error}") from None
        output, error_output = out
        self.last_output = output.decode(errors="replace")
        if error_output:
            last = error_output.decode(errors="replace").strip().splitlines()
            raise ProvisionError(f"{self.port}: the board said: {last[-1] if last else '?'}")
        try:
            return json.loads(output.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ProvisionError(f"{self.port}: unexpected answer {output[:80]!r}") from None

    def close(self) -> None:
        try:
            self.transport.exit_raw_repl()
        except Exception:  # the board may have reset itself; nothing to leave
            pass
        self.transport.close()


# Device-side snippets: small, and only device.evidence.identity's and proof's public functions plus the filesystem.
