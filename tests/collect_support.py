"""Test helpers for the collector: a CPython stand-in device and a throwaway PostgreSQL.

    device = FakeDevice("tag-0042", org_public_key)            # signs like FORMATS.md §1
    device.connect(mosquitto.host, mosquitto.port); device.publish(device.next_event())
    with postgres_cluster() as url: store = open_store(url)

The fake device is independent of the firmware (cbor2 + cryptography): it keeps its own
journal, answers signed `resend` commands and records `ack`s, and refuses commands whose
signature, target, sequence or expiry is wrong, as FORMATS.md §2 asks of a real device.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from conftest import IN_CI, free_port
from kvitto.evidence.cose import sig_structure as _sig_structure
from kvitto.evidence.cose import split_sign1

ORG_SEED = bytes(range(32))
ORG_PUBLIC = Ed25519PrivateKey.from_private_bytes(ORG_SEED).public_key().public_bytes_raw()


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


class FakeDevice:
    """A door device in CPython: signs events, publishes them, obeys ack/resend commands."""

    def __init__(self, device_id: str, org_public: bytes = ORG_PUBLIC, seed: bytes | None = None):
        self.device_id = device_id
        self.key = Ed25519PrivateKey.from_private_bytes(
            seed or hashlib.sha256(device_id.encode()).digest()
        )
        self.public_key = self.key.public_key().public_bytes_raw()
        self.org_public = org_public
        self.journal: dict[int, bytes] = {}
        self.prev = bytes(32)
        self.seq = 0
        self.boot = 1
        self.acked_upto = 0
        self.command_seqs: list[int] = []
        self.refused: list[str] = []
        self.resends: list[tuple[int, int]] = []
        self.raw_commands: list[bytes] = []
        self.answer_resends = True
        self.client: mqtt.Client | None = None
        self._lock = threading.Lock()

    # -- events ---------------------------------------------------------------------------

    def next_event(self, event_type: str = "arrive", t: int | None = 1790000000, **x) -> bytes:
        """Sign the next event in the chain and keep it in the journal."""
        self.seq += 1
        fields: dict[int, Any] = {0: 1, 1: self.device_id, 2: self.seq, 3: self.boot}
        fields[4] = self.seq * 1000
        if t is not None:
            fields[5] = t + self.seq
            fields[6] = 30
        fields[7] = event_type
        if event_type in ("arrive", "depart"):
            fields[8] = bytes.fromhex("198f61fa6e666ca15e852132fe1190e3")
            x.setdefault("via", "badge")
        fields[9] = self.prev
        if x:
            fields[10] = x
        payload = cbor2.dumps(fields, canonical=True)
        message = self.sign(payload)
        self.prev = hashlib.sha256(payload).digest()
        self.journal[self.seq] = message
        return message

    def sign(self, payload: bytes, kid: str | None = None) -> bytes:
        protected = cbor2.dumps({1: -8, 4: (kid or self.device_id).encode()}, canonical=True)
        signature = self.key.sign(_sig_structure(protected, payload))
        return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))

    def events(self, count: int, **kwargs) -> list[bytes]:
        return [self.next_event(**kwargs) for _ in range(count)]

    # -- link -----------------------------------------------------------------------------

    def connect(self, host: str, port: int) -> FakeDevice:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dev-{self.device_id}", clean_session=False
        )
        client.will_set(f"kvitto/v1/{self.device_id}/state", b"offline", qos=1, retain=True)
        subscribed = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(f"kvitto/v1/{self.device_id}/cmd", 1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            subscribed.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = self._on_command
        client.connect(host, port)
        client.loop_start()
        assert subscribed.wait(10), "fake device could not subscribe"
        client.publish(f"kvitto/v1/{self.device_id}/state", b"online", qos=1, retain=True)
        self.client = client
        return self

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def publish(self, message: bytes, wait: bool = False) -> None:
        assert self.client is not None
        info = self.client.publish(f"kvitto/v1/{self.device_id}/evt", message, qos=1)
        if wait:
            info.wait_for_publish(10)

    def publish_seqs(self, seqs, wait: bool = True) -> None:
        infos = []
        assert self.client is not None
        for seq in seqs:
            infos.append(
                self.client.publish(f"kvitto/v1/{self.device_id}/evt", self.journal[seq], qos=1)
            )
        if wait:
            for info in infos:
                info.wait_for_publish(20)

    # -- commands (FORMATS.md §2) ---------------------------------------------------------

    def _on_command(self, client, userdata, message) -> None:
        self.raw_commands.append(message.payload)
        try:
            _, protected_bytes, payload, signature = split_sign1(message.payload)
            Ed25519PublicKey.from_public_bytes(self.org_public).verify(
                signature, _sig_structure(protected_bytes, payload)
            )
        except Exception as error:
            self.refused.append(f"signature: {error!r}")
            return
        fields = cbor2.loads(payload)
        with self._lock:
            if fields[1] != self.device_id:
                self.refused.append("target")
                return
            if self.command_seqs and fields[2] <= self.command_seqs[-1]:
                self.refused.append(f"replayed seq {fields[2]}")
                return
            if fields[3] < time.time():
                self.refused.append("expired")
                return
            self.command_seqs.append(fields[2])
        x = fields.get(10, {})
        if fields[7] == "ack":
            self.acked_upto = max(self.acked_upto, x["upto"])
        elif fields[7] == "resend":
            self.resends.append((x["from"], x["to"]))
            if self.answer_resends:
                for seq in range(x["from"], x["to"] + 1):
                    if seq in self.journal:
                        client.publish(f"kvitto/v1/{self.device_id}/evt", self.journal[seq], qos=1)


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields its URL."""
    bindir = _pg_bin()
    if bindir is None:
        if IN_CI:
            pytest.fail("PostgreSQL binaries are missing in CI (.ci/run installs postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="kvitto-pg-"))
    as_user: list[str] = []
    user = os.environ.get("USER", "")
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres user.
        try:
            shutil.chown(workdir, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(workdir, ignore_errors=True)
            if IN_CI:
                pytest.fail("running as root without a 'postgres' user for initdb")
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        as_user = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    data = workdir / "data"
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user or "pg"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "start",
         "-l", str(workdir / "log")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://{user or 'pg'}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


def fresh_database(url: str, name: str) -> str:
    """A new empty database in the cluster (each test its own)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
