"""`kvitto collect` refuses unusable input with one line and exit status 2."""

from __future__ import annotations

import pytest

from conftest import free_port
from kvitto.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def test_unreachable_broker(tmp_path, capsys):
    code, err = run(
        ["collect", "--broker", f"mqtt://127.0.0.1:{free_port()}",
         "--store", f"sqlite:///{tmp_path}/k.db", "--workers", "0"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "broker 127.0.0.1" in err


def test_wrong_broker_scheme_and_store(tmp_path, capsys):
    code, err = run(
        ["collect", "--broker", "http://x:1", "--store", f"sqlite:///{tmp_path}/k.db"], capsys
    )
    assert code == 2 and "mqtt://" in err
    code, err = run(["collect", "--broker", "mqtt://x:1", "--store", "oracle://db"], capsys)
    assert code == 2 and "sqlite:///" in err


def test_a_bad_org_key_is_named(tmp_path, capsys):
    key = tmp_path / "org.key"
    key.write_text("not a key")
    code, err = run(
        ["collect", "--broker", "mqtt://127.0.0.1:1", "--store", f"sqlite:///{tmp_path}/k.db",
         "--org-key", str(key)],
        capsys,
    )  # fmt: skip
    assert code == 2 and "org.key" in err
