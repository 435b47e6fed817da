"""Commands to devices (FORMATS.md §2): signed with the organisation's command key, and checked
as a device would check them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvitto.errors import KvittoError
from kvitto.evidence.cose import (
    COMMAND_KEYS,
    COMMAND_TYPES,
    CONFIG_SETTINGS,
    ORG_KID,
    Expired,
    FieldType,
    KidMismatch,
    MissingField,
    UnknownCommandType,
    WrongTarget,
    _check_signature,
    canonical,
    sign1,
    split_sign1,
)
from kvitto.evidence.events import LOCK_FALLBACKS, _device_id, _fields, _only, _uint, _x_field


@dataclass(frozen=True)
class Command:
    """One verified command to a device (FORMATS.md §2)."""

    target: str
    seq: int
    expires: int
    type: str
    x: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    message: bytes = b""


# -- commands (FORMATS.md §2) -------------------------------------------------------------------


def _check_command_x(command_type: str, x: Mapping[str, Any]) -> None:
    if command_type == "ack":
        _only(x, command_type, "upto")
        _x_field(x, "upto", "uint")
    elif command_type == "resend":
        _only(x, command_type, "from", "to")
        _x_field(x, "from", "uint")
        _x_field(x, "to", "uint")
        if x["from"] > x["to"]:
            raise FieldType(f"x: resend from {x['from']} is after to {x['to']}")
    elif command_type in ("allow", "revoke"):
        _only(x, command_type, "creds")
        creds = x.get("creds")
        if not isinstance(creds, (list, tuple)):
            raise MissingField(f"x: {command_type} needs a list 'creds'")
        for cred in creds:
            if not isinstance(cred, bytes) or len(cred) != 16:
                raise FieldType(f"x: creds entry {cred!r} is not a 16-byte credential id")
    elif command_type == "time":
        _only(x, command_type, "t")
        _x_field(x, "t", "uint")
    elif command_type == "ota":
        # issue #22: the signed release manifest (kvitto.evidence.release) of the image to come
        _only(x, command_type, "manifest")
        manifest = x.get("manifest")
        if not isinstance(manifest, bytes) or not 0 < len(manifest) <= 512:
            raise FieldType("payload key 10 (x): 'manifest' must be 1 to 512 bytes")
    elif command_type == "schedule":
        _check_schedule_x(x)
    elif command_type == "window":
        # issue #23: a one-off grant [start, end] (Unix seconds) for an unplanned visit
        # or, naming an `alarm` event and the `creds` of the provider on alarm duty, an alarm
        # grant (kvitto.collect.alarm_access)
        _only(x, command_type, "start", "end", "alarm", "creds")
        _x_field(x, "start", "uint")
        _x_field(x, "end", "uint")
        _check_span(x["start"], x["end"])
        if "alarm" in x or "creds" in x:
            _check_alarm_grant(x)
    elif command_type == "config":
        # the settings a device lets a command change (firmware device/board/config_check.py COMMAND_SETTINGS)
        if not x:
            raise MissingField("payload key 10 (x): config names no setting")
        _only(x, command_type, *CONFIG_SETTINGS)
        for name, kind in CONFIG_SETTINGS.items():
            if kind == "bool":
                if name in x and not isinstance(x[name], bool):
                    raise FieldType(f"payload key 10 (x): {name!r} = {x[name]!r} is not a bool")
            else:
                _x_field(x, name, kind, required=False)
        if "fallback" in x and x["fallback"] not in LOCK_FALLBACKS:
            raise FieldType(
                f"payload key 10 (x): fallback {x['fallback']!r} is not one of "
                f"{', '.join(sorted(LOCK_FALLBACKS))}"
            )


# issue #23 (docs/formats.md §2.3): the bounds a lock checks (device.roles.lockpolicy)
SCHEDULE_MAX_WINDOWS = 128
SCHEDULE_MAX_TOLERANCE_S = 7200
WINDOW_MAX_S = 86400


ALARM_MAX_CREDS = 32
ALARM_REF_MAX = 40


def _check_alarm_grant(x: Mapping[str, Any]) -> None:
    ref, creds = x.get("alarm"), x.get("creds")
    if not isinstance(ref, str) or not 0 < len(ref) <= ALARM_REF_MAX:
        raise FieldType(
            f"payload key 10 (x): 'alarm' must name the alarm event (1-{ALARM_REF_MAX})"
        )
    if not isinstance(creds, (list, tuple)) or len(creds) > ALARM_MAX_CREDS:
        raise FieldType(f"payload key 10 (x): 'creds' must list at most {ALARM_MAX_CREDS} ids")
    for cred in creds:
        if not isinstance(cred, bytes) or len(cred) != 16:
            raise FieldType(f"x: creds entry {cred!r} is not a 16-byte credential id")


def _check_span(start: int, end: int) -> None:
    if end < start or end - start > WINDOW_MAX_S:
        raise FieldType(
            f"payload key 10 (x): window {start}..{end} ends before it starts or "
            "is longer than a day"
        )


def _check_schedule_x(x: Mapping[str, Any]) -> None:
    _only(x, "schedule", "issued", "until", "tol", "w")
    for name in ("issued", "until", "tol"):
        _x_field(x, name, "uint")
    if x["tol"] > SCHEDULE_MAX_TOLERANCE_S:
        raise FieldType(f"payload key 10 (x): tol {x['tol']} is over {SCHEDULE_MAX_TOLERANCE_S}")
    windows = x.get("w")
    if not isinstance(windows, (list, tuple)) or len(windows) > SCHEDULE_MAX_WINDOWS:
        raise FieldType(f"payload key 10 (x): w must list at most {SCHEDULE_MAX_WINDOWS} windows")
    for window in windows:
        ok = isinstance(window, (list, tuple)) and len(window) == 2
        if not ok or not all(type(v) is int and 0 <= v < 2**32 for v in window):
            raise FieldType(f"payload key 10 (x): window {window!r} is not [start, end]")
        _check_span(window[0], window[1])


def sign_command(
    org_secret: bytes,
    target: str,
    command_seq: int,
    expires: int,
    command_type: str,
    x: dict[str, Any] | None = None,
) -> bytes:
    """A command to a device (FORMATS.md §2), signed with the organisation's command key."""
    if command_type not in COMMAND_TYPES:
        raise KvittoError(f"unknown command type {command_type!r}")
    _device_id(target, "command target")
    if x is not None:  # x is checked when given; a device refuses an ack or resend without it
        _check_command_x(command_type, x)
    fields: dict[int, Any] = {0: 1, 1: target, 2: command_seq, 3: expires, 7: command_type}
    if x:
        fields[10] = x
    return sign1(org_secret, ORG_KID, canonical(fields))


def verify_command(
    message: bytes, org_public: bytes, target: str | None = None, now: int | None = None
) -> Command:
    """The host's own check of a command (as a device would make it), for tests and audits."""
    protected, protected_bytes, payload, signature = split_sign1(message)
    _check_signature(org_public, protected_bytes, payload, signature)
    if protected[4] != ORG_KID:
        raise KidMismatch(f"a command's kid must be 'org', not {protected[4]!r}")
    fields = _fields(payload, COMMAND_KEYS, (0, 1, 2, 3, 7))
    command_target = _device_id(fields[1], "payload key 1 (target)")
    seq = _uint(fields, 2, COMMAND_KEYS)
    expires = _uint(fields, 3, COMMAND_KEYS)
    command_type = fields[7]
    if not isinstance(command_type, str) or command_type not in COMMAND_TYPES:
        raise UnknownCommandType(f"payload key 7 (type): {command_type!r} is not a command type")
    x = fields.get(10, {})
    if not isinstance(x, Mapping):
        raise FieldType("payload key 10 (x): must be a map")
    x = dict(x)
    _check_command_x(command_type, x)
    if target is not None and command_target != target:
        raise WrongTarget(f"command for {command_target}, not {target}")
    if now is not None and now > expires:
        raise Expired(f"command expired at {expires}, now {now}")
    return Command(command_target, seq, expires, command_type, x, payload, message)
