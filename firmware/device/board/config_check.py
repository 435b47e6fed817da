"""The checks a configuration must pass and the signed `config` command's changes
(device.board.config.validate and update), in their own module: they run at boot and on a rare
command, and device.board.config drops this module afterwards so its tables and functions leave the
heap (device.forget).

    from device.board import config_check
    settings = config_check.validate(json.loads(text), "config.json")   # raises ConfigError
"""

import binascii
import json
import os

from device.board.errors import ConfigError

ROLES = ("tag", "lock", "alarm")
_TOP = ("device", "role", "board", "broker", "salt", "org_public_key", "ntp", "wifi", "lock",
        "alarm", "visits", "tag_mode", "health_s", "release_public_key")
_DEVICE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
# Defaults for the role sections; every value may be overridden in the file.
# relock_ms: unlocked but the door never opened, lock again; fallback: what an allowed credential
# gets while the lock holds no usable visit schedule (issue #23, device.roles.lockpolicy)
# door_open_s: a door held open this long is reported (a door_open event with held_s)
LOCK_DEFAULTS = {"relock_ms": 8000, "fallback": "open_for_allowed", "door_open_s": 300}
ALARM_DEFAULTS = {"answer_s": 1800}  # Upplands-Bro §8: an alarm is answered within 30 minutes
VISITS_DEFAULTS = {"debounce_ms": 3000}  # roles.visits: a second tap this soon is the same tap
# FORMATS.md §2 `config`, x = {setting: value}: what a signed command may change, the section of
# config.json it lives in (None: top level) and the roles it means something to. Identity, keys,
# broker and Wi-Fi are not here: a wrong value sent over the air would cut the device off.
COMMAND_SETTINGS = {
    "debounce_ms": ("visits", ("tag", "alarm")),
    "relock_ms": ("lock", ("lock",)),
    "fallback": ("lock", ("lock",)),
    "door_open_s": ("lock", ("lock",)),
    "answer_s": ("alarm", ("alarm",)),
    "tag_mode": (None, ROLES),
    "health_s": (None, ROLES),
}
HEALTH_S = 900  # a health report every 15 minutes (issue #22), and one at boot


def _fail(source, field, problem):
    error = ConfigError("%s: field '%s': %s" % (source, field, problem))
    error.field = field
    error.problem = problem
    raise error


def _string(source, section, field, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        _fail(source, section + field, "must be a non-empty string, got %r" % (value,))
    return value


def _integer(source, field, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(source, field, "must be a whole number, got %r" % (value,))
    if value < low or value > high:
        _fail(source, field, "must be between %d and %d, got %d" % (low, high, value))
    return value


def _hex(source, field, value, low, high):
    if not isinstance(value, str):
        _fail(source, field, "must be a hex string, got %r" % (value,))
    try:
        raw = binascii.unhexlify(value)
    except ValueError:
        _fail(source, field, "is not valid hex")
    if len(raw) < low or len(raw) > high:
        expect = "%d bytes" % low if low == high else "%d to %d bytes" % (low, high)
        _fail(source, field, "must be %s, got %d" % (expect, len(raw)))
    return raw


def _section(source, name, value, known, defaults):
    if value is None:
        value = {}
    if not isinstance(value, dict):
        _fail(source, name, "must be an object, got %r" % (value,))
    out = dict(defaults)
    for key in value:
        if key not in known:
            _fail(source, name + "." + key, "unknown field (known: %s)" % ", ".join(known))
        out[key] = value[key]
    return out


def validate(settings, source):
    """Check a decoded configuration; returns a normalized copy (hex fields as bytes)."""
    if not isinstance(settings, dict):
        raise ConfigError("%s: the configuration must be a JSON object" % source)
    for key in settings:
        if key not in _TOP:
            _fail(source, key, "unknown field (known: %s)" % ", ".join(_TOP))
    for key in ("device", "role", "board", "broker", "salt", "org_public_key"):
        if key not in settings:
            _fail(source, key, "is missing")
    device = settings["device"]
    _string(source, "", "device", device)
    if not 3 <= len(device) <= 32 or any(c not in _DEVICE_CHARS for c in device):
        _fail(source, "device", "must match [a-z0-9-]{3,32} (FORMATS.md §1), got %r" % device)
    if settings["role"] not in ROLES:
        _fail(source, "role", "must be one of %s, got %r" % (", ".join(ROLES), settings["role"]))
    out = {"device": device, "role": settings["role"]}
    out["board"] = _string(source, "", "board", settings["board"])

    broker = _section(source, "broker", settings["broker"],
                      ("host", "port", "user", "password", "tls", "ca"),
                      {"port": 1883, "user": None, "password": None, "tls": False, "ca": None})
    _string(source, "broker.", "host", broker.get("host"))
    _integer(source, "broker.port", broker["port"], 1, 65535)
    _string(source, "broker.", "user", broker["user"], optional=True)
    if broker["user"] is not None and broker["user"] != device:
        # The device's MQTT client id is its id, and the broker (kvitto broker-config) names
        # each session by the username: any other login would not be this device's session.
        _fail(source, "broker.user", "must be the device id %r, got %r" % (device, broker["user"]))
    _string(source, "broker.", "password", broker["password"], optional=True)
    if not isinstance(broker["tls"], bool):
        _fail(source, "broker.tls", "must be true or false, got %r" % (broker["tls"],))
    _string(source, "broker.", "ca", broker["ca"], optional=True)
    out["broker"] = broker

    out["salt"] = _hex(source, "salt", settings["salt"], 16, 64)
    out["org_public_key"] = _hex(source, "org_public_key", settings["org_public_key"], 32, 32)
    release_key = settings.get("release_public_key")  # signed firmware updates (issue #22)
    out["release_public_key"] = (None if release_key is None else
                                 _hex(source, "release_public_key", release_key, 32, 32))

    ntp = settings.get("ntp", [])
    if not isinstance(ntp, list):
        _fail(source, "ntp", "must be a list of host names, got %r" % (ntp,))
    for index, host in enumerate(ntp):
        _string(source, "ntp.", str(index), host)
    out["ntp"] = ntp

    wifi = settings.get("wifi")
    if wifi is not None:
        wifi = _section(source, "wifi", wifi, ("ssid", "password"), {"password": None})
        _string(source, "wifi.", "ssid", wifi.get("ssid"))
    out["wifi"] = wifi

    lock = _section(source, "lock", settings.get("lock"), tuple(LOCK_DEFAULTS), LOCK_DEFAULTS)
    _integer(source, "lock.relock_ms", lock["relock_ms"], 500, 600000)
    _integer(source, "lock.door_open_s", lock["door_open_s"], 10, 86400)
    if lock["fallback"] not in ("open_for_allowed", "deny"):
        _fail(source, "lock.fallback", "must be open_for_allowed or deny, got %r"
              % (lock["fallback"],))
    out["lock"] = lock
    alarm = _section(source, "alarm", settings.get("alarm"), tuple(ALARM_DEFAULTS),
                     ALARM_DEFAULTS)
    _integer(source, "alarm.answer_s", alarm["answer_s"], 1, 86400)
    out["alarm"] = alarm
    visits = _section(source, "visits", settings.get("visits"), tuple(VISITS_DEFAULTS),
                      VISITS_DEFAULTS)
    _integer(source, "visits.debounce_ms", visits["debounce_ms"], 500, 600000)
    out["visits"] = visits
    tag_mode = settings.get("tag_mode", settings["role"] == "tag")
    if not isinstance(tag_mode, bool):
        _fail(source, "tag_mode", "must be true or false, got %r" % (tag_mode,))
    out["tag_mode"] = tag_mode
    out["health_s"] = _integer(source, "health_s", settings.get("health_s", HEALTH_S), 60, 86400)
    return out


def update(path, changes, source):
    """Apply a `config` command's x ({setting: value}, FORMATS.md §2) to the file at `path` and
    return the new validated settings. All or nothing: an unknown setting, one that means
    nothing to this role or a bad value raises ConfigError (naming it) and leaves the file as it
    was; otherwise the whole new file is written aside and renamed over the old one (littlefs
    renames atomically, so a power cut leaves the old file or the new one, never a mix)."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError("%s: x must name at least one setting" % source)
    try:
        with open(path) as file:
            raw = json.loads(file.read())
    except (OSError, ValueError) as error:
        raise ConfigError("%s: cannot read %s (%s)" % (source, path, error))
    if not isinstance(raw, dict):
        raise ConfigError("%s: %s is not a JSON object" % (source, path))
    for name in changes:
        entry = COMMAND_SETTINGS.get(name) if isinstance(name, str) else None
        if entry is None:
            _fail(source, name, "not one of %s"
                  % ", ".join(sorted(COMMAND_SETTINGS)))
        section, roles = entry  # type: ignore  (_fail raised for None)
        if raw.get("role") not in roles:
            _fail(source, name, "means nothing to the %s role" % raw.get("role"))
        if section is None:
            raw[name] = changes[name]
        else:
            values = raw.get(section)
            values = dict(values) if isinstance(values, dict) else {}
            values[name] = changes[name]
            raw[section] = values
    settings = validate(raw, source)  # the file as it would be: refused whole if anything is off
    temporary = path + ".new"
    with open(temporary, "w") as file:
        file.write(json.dumps(raw))
    os.rename(temporary, path)
    return settings
