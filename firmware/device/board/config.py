"""The device configuration on flash (/config.json), written by provisioning, validated here.

    from device.board import config
    settings = config.load("config.json")   # raises ConfigError naming the file and field
    print(settings["device"], settings["role"], settings["salt"].hex())

File format (hex strings in the file become bytes once loaded):
  {"device": "tag-0042", "role": "tag|lock|alarm", "board": "sim|esp32-devkitc|...",
   "broker": {"host", "port", "user", "password", "tls": false, "ca": null},
   "salt": hex (16..64 bytes), "org_public_key": hex (32 bytes), "ntp": [hosts],
   "wifi": {"ssid", "password"} (real boards), "lock": {...}, "alarm": {...}, "visits": {...},
   "tag_mode": true|false (phones read a signed URL; default on for the tag role)}
A signed `config` command (FORMATS.md §2) changes the few settings in
device.board.config_check.COMMAND_SETTINGS through `update`, which validates the whole result and
replaces the file atomically. The checks live in device.board.config_check, loaded only while they
run. Pure module: runs under the unix port and CPython alike.
"""

import json

from device.board.errors import ConfigError


def validate(settings, source="config.json"):
    """Check a decoded configuration; returns a normalized copy (hex fields as bytes). The
    checks (device.board.config_check) are loaded for the call and dropped after it."""
    import device
    from device.board import config_check

    try:
        return config_check.validate(settings, source)
    finally:
        device.forget("device.board.config_check")


def load(path="config.json"):
    """Read, decode and validate the configuration; a missing file is a ConfigError too."""
    try:
        with open(path) as file:
            text = file.read()
    except OSError:
        raise ConfigError("%s: no configuration on this device (provision it: kvitto provision)"
                          % path)
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise ConfigError("%s: not valid JSON (%s)" % (path, error))
    return validate(settings, path)


def update(path, changes, source="config command"):
    """Apply a `config` command's x ({setting: value}, FORMATS.md §2) to the file at `path` and
    return the new validated settings; all or nothing (device.board.config_check.update)."""
    import device
    from device.board import config_check

    try:
        return config_check.update(path, changes, source)
    finally:
        device.forget("device.board.config_check")
