"""The signed `config` command (FORMATS.md §2) on the unix port: it changes the setting on flash
and in the running device, the change survives a reboot, a bad one is refused whole with a
journaled reason and changes nothing, and a replayed one is refused. The device, its link and
its flash are real (sim board, littlefs image); only the network is left out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from link_support import ORG_PUBLIC, ORG_SEED

from conftest import ROOT
from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command, verify_command
from kvitto.evidence.cose import ORG_KID, canonical, sign1

sys.path.insert(0, str(ROOT / "firmware"))

from device.board import config  # noqa: E402

NOW = 1790000000

BOOT_SCRIPT = """
import asyncio, json, sys
from device.board import boards, config, hal
from device.evidence import cbor
from device.link import collector as link_mod
from device.app import App

image, role, commands_path = sys.argv[1], sys.argv[2], sys.argv[3]
board = boards.load(sys.argv[4])
sim = boards.open_hal(board, flash=image, seed=b"t")
path = sim.fs_root + "/config.json"
try:
    open(path).close()
except OSError:  # first boot: provisioned the way `kvitto provision` writes it
    with open(path, "w") as f:
        f.write(json.dumps({"device": role + "-0042", "role": role, "board": "sim",
                            "broker": {"host": "127.0.0.1", "port": 1}, "salt": "00" * 16,
                            "org_public_key": sys.argv[5], "tag_mode": False}))
with open(commands_path) as f:  # a file: the port's wrapper fails on long arguments
    commands = [c for c in f.read().split(",") if c]

class NoNetwork:  # stands in for MQTTClient: commands are handed to the link directly
    def __init__(self):
        self.subscriptions = []; self.will = None; self.birth = None; self.on_message = None
        self.stats = {"connects": 0}; self.up = asyncio.Event()

def setting(app):
    if app.lock is not None:
        return app.lock.relock_ms
    return app.visits.debounce_ms

def on_flash():
    saved = config.load(path)  # what the next boot will read
    return saved["lock"]["relock_ms"] if saved["role"] == "lock" else saved["visits"]["debounce_ms"]

async def main():
    app = App(config.load(path), board, sim, link=False)  # as device.app.start() builds it
    import device
    for name in ("device.board.boards", "device.board.config", "device.board.errors"):
        device.forget(name)  # as start() drops them after boot: a command loads config again
    link = link_mod.Link(app.device_id, app.journal, None, app.settings["org_public_key"],
                         client=NoNetwork(), handlers=app.handlers(),
                         state_path=sim.fs_root + "/link.state", now=lambda: __NOW__)
    first = app.journal.next_seq
    print("boot", setting(app), on_flash(), link.last_command)
    for command in commands:
        ok = await link.obey(bytes.fromhex(command))
        print("obeyed" if ok else "refused", setting(app), on_flash(), link.last_command)
    for seq in range(first, app.journal.next_seq):
        fields = cbor.decode(app.journal.get(seq))
        print("event", fields[7], json.dumps(sorted(fields[10].items())))
asyncio.run(main())
""".replace("__NOW__", str(NOW))


def command(seq: int, x: dict, secret: bytes = ORG_SEED, target: str = "tag-0042") -> str:
    """Signed as is: the host's sign_command would refuse the bad ones a device must refuse."""
    fields = {0: 1, 1: target, 2: seq, 3: NOW + 300, 7: "config", 10: x}
    return sign1(secret, ORG_KID, canonical(fields)).hex()


def health(field: str, error: str) -> str:
    """The journaled reason of a refused config command."""
    return "event health " + json.dumps(
        [["config", "refused"], ["error", error], ["field", field]]
    )


def boot(micropython, tmp_path: Path, role: str, commands: list[str], then: str = "") -> list[str]:
    (tmp_path / "commands").write_text(",".join(commands))
    out = micropython(
        BOOT_SCRIPT + then,
        args=[
            str(tmp_path / "flash.img"),
            role,
            str(tmp_path / "commands"),
            str(ROOT / "boards" / "sim.json"),
            ORG_PUBLIC.hex(),
        ],
    )
    return out.strip().splitlines()


def test_config_command_changes_the_setting_and_survives_a_reboot(micropython, tmp_path):
    first = command(1, {"debounce_ms": 800})
    assert boot(micropython, tmp_path, "tag", [first, command(2, {"debounce_ms": 1200})]) == [
        "boot 3000 3000 0",
        "obeyed 800 800 1",
        "obeyed 1200 1200 2",
        'event health [["config", {"debounce_ms": 800}]]',
        'event health [["config", {"debounce_ms": 1200}]]',
    ]
    # Rebooted: the setting comes back from flash; the first command, replayed, is refused.
    assert boot(micropython, tmp_path, "tag", [first]) == [
        "boot 1200 1200 2",
        "refused 1200 1200 2",
    ]


def test_the_command_code_leaves_the_heap_after_a_command(micropython, tmp_path):
    # issue #26: device.roles.commands is loaded for a time or config command and dropped after
    lines = boot(
        micropython,
        tmp_path,
        "tag",
        [command(1, {"debounce_ms": 800})],
        then="print('kept', 'device.roles.commands' in sys.modules)\n",
    )
    assert "obeyed 800 800 1" in lines
    assert lines[-1] == "kept False"


def test_bad_config_commands_are_refused_whole_and_journaled(micropython, tmp_path):
    lines = boot(
        micropython,
        tmp_path,
        "tag",
        [
            command(1, {"debounce_ms": 5}),  # out of range
            command(2, {"debounce_ms": 900, "volume": 3}),  # one unknown setting: none applied
            command(3, {"relock_ms": 9000}),  # a lock's setting on a tag
            command(4, {"tag_mode": "yes"}),  # not true or false
            command(5, {"debounce_ms": 900}, secret=bytes(32)),  # not the organisation's key
            command(5, {"debounce_ms": 900}, target="tag-0043"),  # not for this device
        ],
    )
    assert lines == [
        "boot 3000 3000 0",
        # signed and fresh: the sequence is used up, but nothing changes
        "obeyed 3000 3000 1",
        "obeyed 3000 3000 2",
        "obeyed 3000 3000 3",
        "obeyed 3000 3000 4",
        "refused 3000 3000 4",
        "refused 3000 3000 4",
        health("visits.debounce_ms", "must be between 500 and 600000, got 5"),
        health("volume", "not one of answer_s, debounce_ms, door_open_s, fallback, health_"),
        health("relock_ms", "means nothing to the tag role"),
        health("tag_mode", "must be true or false, got 'yes'"),
    ]  # fmt: skip


def test_a_lock_takes_its_relock_time_at_once(micropython, tmp_path):
    lines = boot(
        micropython,
        tmp_path,
        "lock",
        [
            sign_command(
                ORG_SEED, "lock-0042", 1, NOW + 300, "config", {"relock_ms": 15000}
            ).hex(),
            sign_command(
                ORG_SEED, "lock-0042", 2, NOW + 300, "config", {"debounce_ms": 900}
            ).hex(),
        ],
    )
    assert lines[:3] == ["boot 8000 8000 0", "obeyed 15000 15000 1", "obeyed 15000 15000 2"]
    assert boot(micropython, tmp_path, "lock", [])[0] == "boot 15000 15000 2"


GOOD = {
    "device": "alarm-0001",
    "role": "alarm",
    "board": "sim",
    "broker": {"host": "127.0.0.1", "port": 1883},
    "salt": "00" * 16,
    "org_public_key": "11" * 32,
}


def test_update_is_all_or_nothing_under_cpython(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GOOD))
    before = path.read_bytes()
    for changes, problem in [
        ({"answer_s": 0}, "between 1 and 86400"),
        ({"answer_s": 600, "broker": {"host": "evil"}}, "not one of answer_s"),
        ({"answer_s": True}, "whole number"),
        ({}, "at least one setting"),
    ]:
        with pytest.raises(config.ConfigError, match=problem):
            config.update(str(path), changes)
        assert path.read_bytes() == before
    settings = config.update(str(path), {"answer_s": 600, "debounce_ms": 700})
    assert settings["alarm"]["answer_s"] == 600 and settings["visits"]["debounce_ms"] == 700
    assert config.load(str(path)) == settings
    assert json.loads(path.read_text())["broker"] == GOOD["broker"]


def test_the_host_signs_only_config_commands_a_device_can_obey():
    message = sign_command(ORG_SEED, "tag-0042", 7, NOW, "config", {"debounce_ms": 800})
    assert verify_command(message, ORG_PUBLIC, "tag-0042").x == {"debounce_ms": 800}
    for x in ({"volume": 3}, {"debounce_ms": "800"}, {}):
        with pytest.raises(KvittoError):
            sign_command(ORG_SEED, "tag-0042", 7, NOW, "config", x)


def test_the_collector_sends_a_config_command_in_the_device_s_command_sequence(
    tmp_path, mosquitto
):
    from collect_support import FakeDevice, wait_for

    from kvitto.collect.collector import Collector
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry

    store = open_store(f"sqlite:///{tmp_path}/kvitto.db")
    registry = Registry(store)
    registry.add_customer("c-1001")
    device = FakeDevice("tag-0042")
    registry.add_device("tag-0042", "c-1001", "tag", device.public_key, "2026-09-01")
    device.connect(mosquitto.host, mosquitto.port)
    collector = Collector(open_store(store.url), mosquitto.url, ORG_SEED)
    try:
        collector.start()
        collector.wait_ready()
        with pytest.raises(KvittoError):  # a setting no device knows is refused at once
            collector.send_command("tag-0042", "config", {"volume": 3})
        device.events(2)
        device.publish_seqs([1, 2])
        wait_for(lambda: device.acked_upto == 2, what="ack upto 2")
        collector.send_command("tag-0042", "config", {"debounce_ms": 800})
        wait_for(lambda: len(device.command_seqs) >= 2, what="the config command")
        sent = [verify_command(m, ORG_PUBLIC, "tag-0042") for m in device.raw_commands]
        config_commands = [c for c in sent if c.type == "config"]
        assert [c.x for c in config_commands] == [{"debounce_ms": 800}]
        # after the ack, in the same per-device sequence the store hands out
        assert config_commands[0].seq > sent[0].seq and device.refused == []
    finally:
        collector.stop()
        collector.store.close()
        device.disconnect()
        store.close()
