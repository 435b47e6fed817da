"""Event payloads (FORMATS.md §1), credential ids, and command checks (§2).

    from device.evidence import event
    cid = event.credential_id(salt, uid)   # HMAC-SHA256(salt, uid)[:16], never the raw UID
    payload = event.build_payload("tag-0042", 3, 1, 5580000, "arrive", prev, cred=cid, x={"via": "badge"})
    prev = hashlib.sha256(payload).digest()   # the next event's key 9 (evidence.journal)
"""

import hashlib

from micropython import const

from device.evidence import cbor

_VERSION = const(1)
_KEY_V = const(0)
_KEY_DEV = const(1)
_KEY_SEQ = const(2)
_KEY_BOOT = const(3)
_KEY_UP = const(4)
_KEY_T = const(5)
_KEY_SYNC = const(6)
_KEY_TYPE = const(7)
_KEY_CRED = const(8)
_KEY_PREV = const(9)
_KEY_X = const(10)
_KEY_EXPIRES = const(3)  # FORMATS.md §2: commands reuse key 3 for the expiry
_CRED_BYTES = const(16)
_HASH_BYTES = const(32)
_MAX_UINT = const(0xFFFFFFFFFFFFFFFF)
_MAX_PAYLOAD = const(900)  # the host refuses messages over 1024 bytes (kvitto.evidence)
_MAX_ENTRIES = const(16)  # free-form x (boot, tamper, health): the host's limits, kept here too
_MAX_TEXT = const(64)
_DEV_CHARS = const("abcdefghijklmnopqrstuvwxyz0123456789-")  # FORMATS.md §1: dev

_EVENT_TYPES = const((
    "arrive", "depart", "unlock", "lock", "deny", "door_open", "door_close", "alarm_call",
    "alarm_checkin", "alarm_checkout", "tag_read", "boot", "clock_sync", "tamper", "health",
))


class EventError(ValueError):
    """Fields that FORMATS.md §1 does not allow: the event is not built."""


class CommandRefused(Exception):
    """A command the device must not obey; `reason` is one of signature, malformed, target,
    sequence, expired."""

    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason


def credential_id(salt, raw):
    """HMAC-SHA256(salt, raw)[:16] (RFC 2104): a credential's id without its raw UID or key."""
    key = bytes(salt)
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    inner_key = bytearray(64)  # the key zero-padded to the block, then XOR ipad / opad
    outer_key = bytearray(64)
    for index in range(64):
        byte = key[index] if index < len(key) else 0
        inner_key[index] = byte ^ 0x36
        outer_key[index] = byte ^ 0x5C
    inner = hashlib.sha256(inner_key)
    inner.update(raw)
    outer = hashlib.sha256(outer_key)
    outer.update(inner.digest())
    return outer.digest()[:_CRED_BYTES]


def _uint(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_UINT:
        raise EventError("%s must be an unsigned 64-bit integer" % name)


def build_payload(dev, seq, boot, up, type, prev, t=None, sync=None, cred=None, x=None):
    """The deterministic CBOR payload of one event (FORMATS.md §1 keys 0-10)."""
    # FORMATS.md §1: dev is [a-z0-9-]{3,32}
    if not isinstance(dev, str) or not 3 <= len(dev) <= 32 or dev.strip(_DEV_CHARS):
        raise EventError("dev must match [a-z0-9-]{3,32}")
    _uint("seq", seq)
    if seq < 1:
        raise EventError("seq starts at 1")
    _uint("boot", boot)
    _uint("up", up)
    if type not in _EVENT_TYPES:
        raise EventError("unknown type %r" % (type,))
    if not isinstance(prev, (bytes, bytearray)) or len(prev) != _HASH_BYTES:
        raise EventError("prev must be 32 bytes")
    # FORMATS.md §1: t and sync together, or neither (clock never set in this boot).
    if (t is None) != (sync is None):
        raise EventError("t and sync go together")
    fields = {
        _KEY_V: _VERSION, _KEY_DEV: dev, _KEY_SEQ: seq, _KEY_BOOT: boot, _KEY_UP: up,
        _KEY_TYPE: type, _KEY_PREV: bytes(prev),
    }
    if t is not None:
        _uint("t", t)
        _uint("sync", sync)
        fields[_KEY_T] = t
        fields[_KEY_SYNC] = sync
    if cred is not None:
        if not isinstance(cred, (bytes, bytearray)) or len(cred) != _CRED_BYTES:
            raise EventError("cred must be 16 bytes")
        fields[_KEY_CRED] = bytes(cred)
    if x:
        if not isinstance(x, dict):
            raise EventError("x must be a map")
        _small(x, 0)
        fields[_KEY_X] = x
    try:
        payload = cbor.encode(fields)
    except cbor.CBORError as error:
        raise EventError("x: %s" % error)
    if len(payload) > _MAX_PAYLOAD:
        raise EventError("payload of %d bytes; at most %d" % (len(payload), _MAX_PAYLOAD))
    return payload


def _small(value, depth):
    # x stays a small map: text keys, at most two levels of 16 entries, short text and bytes,
    # no floats (the same limits the host checks, so the device never journals a rejected event).
    if isinstance(value, dict):
        if depth > 1 or len(value) > _MAX_ENTRIES:
            raise EventError("x: at most two levels of 16 entries")
        for key in value:
            if not isinstance(key, str) or len(key) > 32:
                raise EventError("x: keys are text of at most 32 characters")
            _small(value[key], depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth > 1 or len(value) > _MAX_ENTRIES:
            raise EventError("x: at most two levels of 16 entries")
        for item in value:
            _small(item, depth + 1)
    elif isinstance(value, (str, bytes, bytearray)):
        if len(value) > _MAX_TEXT:
            raise EventError("x: text or bytes longer than 64")
    elif not (value is None or isinstance(value, int)):
        raise EventError("x: %s is not allowed" % type(value).__name__)


def _command_uint(fields, key, name=None):
    # a field of a command (name given) or of its x (named by its key)
    value = fields.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CommandRefused("malformed", "%s must be an unsigned 64-bit integer" % (name or key))
    return value


def parse_command(message, org_public, device_id, last_seq, now):
    """(seq, type, x) of a command this device must obey, or CommandRefused (FORMATS.md §2).

    `now` is Unix time in seconds, or None when the clock was never set: then the expiry cannot
    be judged, and the strictly increasing sequence alone stops a replay.
    """
    from device.evidence import cose  # only a device with a link gets commands: no COSE without it

    try:
        kid, payload = cose.verify1(message, org_public)
    except cose.COSEError as error:
        raise CommandRefused("signature", str(error))
    if kid != b"org":  # FORMATS.md §2: commands are signed with the organisation's key
        raise CommandRefused("signature", "kid is not org")
    try:
        fields = cbor.decode(payload)
    except cbor.CBORError as error:
        raise CommandRefused("malformed", str(error))
    if not isinstance(fields, dict):
        raise CommandRefused("malformed", "payload is not a map")
    for key in fields:
        if key not in (_KEY_V, _KEY_DEV, _KEY_SEQ, _KEY_EXPIRES, _KEY_TYPE, _KEY_X):
            raise CommandRefused("malformed", "unknown key %r" % (key,))
    if fields.get(_KEY_V) != _VERSION:
        raise CommandRefused("malformed", "version must be 1")
    target = fields.get(_KEY_DEV)
    type = fields.get(_KEY_TYPE)
    x = fields.get(_KEY_X, {})
    if not isinstance(target, str):
        raise CommandRefused("malformed", "target must be text")
    seq = _command_uint(fields, _KEY_SEQ, "seq")
    expires = _command_uint(fields, _KEY_EXPIRES, "expires")
    # schedule, window (issue #23): the lock checks their x itself (device.roles.lockpolicy)
    if type not in ("ack", "resend", "allow", "revoke", "time", "config", "ota", "schedule",
                    "window"):
        raise CommandRefused("malformed", "unknown type %r" % (type,))
    if not isinstance(x, dict):
        raise CommandRefused("malformed", "x must be a map")
    # FORMATS.md §2: the x each command type carries; refuse anything else.
    if type == "ack":
        _command_uint(x, "upto")
    elif type == "resend":
        if _command_uint(x, "from") > _command_uint(x, "to"):
            raise CommandRefused("malformed", "resend from > to")
    elif type in ("allow", "revoke"):
        creds = x.get("creds")
        if not isinstance(creds, list):
            raise CommandRefused("malformed", "creds must be a list")
        for cred in creds:
            if not isinstance(cred, bytes) or len(cred) != _CRED_BYTES:
                raise CommandRefused("malformed", "cred must be 16 bytes")
    elif type == "time":
        _command_uint(x, "t")
    elif type == "ota":
        # issue #22: x = {"manifest": the release manifest (device.evidence.release)}
        manifest = x.get("manifest")
        if not isinstance(manifest, bytes) or len(manifest) > 512:
            raise CommandRefused("malformed", "manifest must be at most 512 bytes")
    if target != device_id:
        raise CommandRefused("target", "for %s, not this device" % target)
    if seq <= last_seq:
        raise CommandRefused("sequence", "seq %d not above %d" % (seq, last_seq))
    if now is not None and now > expires:
        raise CommandRefused("expired", "expired at %d, now %d" % (expires, now))
    return seq, type, x
