"""Provision a device for a customer over its serial port (mpremote), register it, label it.

    result = provision(Provisioning(port="/dev/ttyUSB0", device="tag-0042", customer="c-1001",
                                    role="tag", board="esp32-devkitc", store_url=url,
                                    pki_dir=Path("pki"), broker_host="mqtt.example.org"))
    print(result.public_key.hex(), result.label)

Steps, in the order that keeps a failure harmless:
1. mpremote's serial transport enters the raw REPL without a reset (`resume`), so a running
   board keeps its state; the device makes its Ed25519 key from its own RNG if it has none
   (device.evidence.identity): the private key never leaves the board.
2. The host reads the public key and sends a fresh 32-byte nonce; the device signs
   b"kvitto-provision" + nonce and the host verifies it (proof of possession).
3. The registry binds device ↔ customer (once: another customer is refused, a revoked device
   stays revoked) and keeps the hash of a new 256-bit MQTT password.
   Events already in the board's journal under another identity (the simulator's default id,
   a previous provisioning) can never verify under the new one (their payload names the old
   device, FORMATS.md §1) and, as acks cover only an unbroken run from seq 1, they would block
   every ack behind them. So the journal is cleared when the board's identity changes, and
   the result says how many events went (`discarded`). If the old identity is a registered
   device and some of its events are not yet acknowledged, provisioning is refused instead
   (they are evidence): bring the board online until they are acknowledged, or pass
   `--discard-journal`.
4. /config.json goes to the board atomically (write, fsync by close, rename) and is read back.
5. A label (SVG): device id, QR code, A/B marking among cohabitants; no personal data.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kvitto.errors import KvittoError
from kvitto.install.console import DeviceConsole, ProvisionError

PROOF_CONTEXT = b"kvitto-provision"  # device.evidence.proof.PROOF_CONTEXT
NONCE_BYTES = 32
LABEL_QR_PREFIX = "kvitto:"


_IDENTITY = """
import json
from device.evidence import proof
print(json.dumps({"public_key": proof.public_key_hex()}))
"""
_PROVE = """
import json
from device.evidence import proof
print(json.dumps({"proof": proof.prove_hex(%r)}))
"""
_WRITE_CONFIG = """
import binascii, json, os
from device.evidence import identity
root = identity._default_root()
path = (root + "/" if root else "") + "config.json"
data = binascii.unhexlify(%r)
with open(path + ".new", "wb") as f:
    f.write(data)
os.rename(path + ".new", path)
with open(path, "rb") as f:
    back = f.read()
print(json.dumps({"path": path, "ok": back == data, "bytes": len(back)}))
"""
_JOURNAL = """
import json, os
from device.evidence import identity
root = identity._default_root()
def at(name):
    return (root + "/" if root else "") + name
try:
    with open(at("config.json")) as f:
        device = json.loads(f.read()).get("device")
except (OSError, ValueError):
    device = None
try:
    names = os.listdir(at("journal"))
except OSError:
    names = []
pending = 0
if names and device != %r:
    from device.evidence.journal import Journal
    journal = Journal(at("journal"))
    pending = journal.next_seq - 1 - journal.acked
    journal.close()
    if %r:
        for name in names:
            os.remove(at("journal") + "/" + name)
        os.rmdir(at("journal"))
print(json.dumps({"device": device, "files": len(names), "pending": pending}))
"""
_RESET = """
import json
try:
    import machine
    reset = machine.reset
except (ImportError, AttributeError):
    reset = None
print(json.dumps({"reset": reset is not None}))
if reset is not None:
    reset()
"""


@dataclass
class Provisioning:
    """What the installer asked for."""

    port: str
    device: str
    customer: str
    role: str
    board: str
    store_url: str
    pki_dir: Path
    broker_host: str
    broker_port: int = 1883
    broker_tls: bool = False
    broker_ca: str | None = None
    household: str = ""
    ntp: list[str] = field(default_factory=lambda: ["pool.ntp.org"])
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    wifi_open: bool = False
    mark: str | None = None
    label_dir: Path | None = None
    reset: bool = True
    preflight: bool = True  # kvitto.install.preflight: refuse a board short of memory first
    discard_journal: bool = False
    # a shared entrance lock (issue #23, kvitto.store.entrance): its building and customers
    building: str = ""
    customers: tuple[str, ...] = ()
    # a lock's config.json `lock` settings (fallback, door_open_s) and where they came from
    # ("profile haninge", "--fallback"): the CLI resolves them from the municipality profile
    lock: dict[str, Any] = field(default_factory=dict)
    lock_from: str = ""


@dataclass
class Provisioned:
    device: str
    customer: str
    role: str
    public_key: bytes
    config_path: str
    label: str | None
    mark: str
    reset: bool
    mqtt_password_sha256: str = ""
    # events cleared from the board's journal (journaled under another identity), and that id
    discarded: tuple[int, str | None] = (0, None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "customer": self.customer,
            "role": self.role,
            "public_key": self.public_key.hex(),
            "config_path": self.config_path,
            "label": self.label,
            "mark": self.mark,
            "reset": self.reset,
            "discarded_events": self.discarded[0],
            "discarded_as": self.discarded[1],
        }


def verify_proof(public_key: bytes, nonce: bytes, proof: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(proof, PROOF_CONTEXT + nonce)
    except (InvalidSignature, ValueError):
        raise ProvisionError(
            "proof of possession failed: the board does not hold the key it reported"
        ) from None


def read_identity(console: DeviceConsole) -> bytes:
    """The board's public key, after it proved it holds the private half."""
    answer = console.run(_IDENTITY)
    try:
        public_key = bytes.fromhex(answer["public_key"])
    except (KeyError, TypeError, ValueError):
        raise ProvisionError(f"{console.port}: no public key in {answer!r}") from None
    if len(public_key) != 32:
        raise ProvisionError(f"{console.port}: public key is {len(public_key)} bytes, not 32")
    nonce = secrets.token_bytes(NONCE_BYTES)
    proof = console.run(_PROVE % nonce.hex())
    try:
        signature = bytes.fromhex(proof["proof"])
    except (KeyError, TypeError, ValueError):
        raise ProvisionError(f"{console.port}: no proof in {proof!r}") from None
    verify_proof(public_key, nonce, signature)
    return public_key


def device_config(request: Provisioning, mqtt_password: str) -> dict[str, Any]:
    from kvitto.store.keys import load_org

    org = load_org(request.pki_dir)
    ca = request.broker_ca
    if request.broker_tls and ca is None:
        # Pin the organisation's CA (PEM text in the config: device.link.collector accepts it inline).
        from kvitto.install.pki import CA_CERT

        ca_path = request.pki_dir / CA_CERT
        if not ca_path.exists():
            raise KvittoError(f"{ca_path}: missing; --tls needs `kvitto pki --broker-host H`")
        ca = ca_path.read_text()
    config: dict[str, Any] = {
        "device": request.device,
        "role": request.role,
        "board": request.board,
        "broker": {
            "host": request.broker_host,
            "port": request.broker_port,
            "user": request.device,
            "password": mqtt_password,
            "tls": request.broker_tls,
            "ca": ca,
        },
        **org.device_config(),
        "ntp": list(request.ntp),
    }
    if request.role == "lock" and request.lock:
        config["lock"] = dict(request.lock)
    if request.wifi_ssid:
        config["wifi"] = {"ssid": request.wifi_ssid, "password": request.wifi_password or ""}
    return config


def household_mark(registry: Any, customer: str, household: str) -> str:
    """'A', 'B', … for cohabitants (the household's customers in id order), '' without one.
    A household is given for cohabitants only (FORMATS.md §3), so its first member is 'A' even
    before the second is registered; `--mark` overrides."""
    if not household:
        return ""
    members = sorted(c.id for c in registry.customers() if c.household == household)
    if customer not in members or members.index(customer) > 25:
        return ""
    return chr(ord("A") + members.index(customer))


def label_svg(device: str, mark: str) -> str:
    """A printable label: QR code of the device id, the id in text, the cohabitant mark."""
    import segno

    from kvitto.store.registry import check_device_id

    check_device_id(device)
    qr = segno.make(LABEL_QR_PREFIX + device, error="m")
    scale = 4
    size = qr.symbol_size(scale=scale, border=4)[0]
    qr_svg = qr.svg_inline(scale=scale, border=4, omitsize=False)  # the QR spec's quiet zone
    width = size + (60 if mark else 0)
    height = size + 24
    mark_text = (
        f'<text x="{size + 30}" y="{size // 2 + 16}" font-family="sans-serif" font-size="44" '
        f'font-weight="bold" text-anchor="middle">{mark}</text>'
        if mark
        else ""
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f"<g>{qr_svg}</g>{mark_text}"
        f'<text x="{size // 2}" y="{size + 18}" font-family="monospace" font-size="14" '
        f'text-anchor="middle">{device}</text></svg>\n'
    )


def provision(request: Provisioning, console: DeviceConsole | None = None) -> Provisioned:
    """Provision one board end to end; see the module docstring for the order of steps."""
    from kvitto.install.broker_config import new_password, password_hash
    from kvitto.install.image import check_config, load_board
    from kvitto.store.db import open_store
    from kvitto.store.registry import Registry, check_device_id

    check_device_id(request.device, "--device")
    if request.mark is not None and (len(request.mark) != 1 or not request.mark.isupper()):
        raise KvittoError(f"--mark {request.mark!r}: one capital letter (A, B, …)")
    if request.wifi_ssid and not request.wifi_password and not request.wifi_open:
        raise KvittoError(
            f"--wifi-ssid {request.wifi_ssid}: no password; set KVITTO_WIFI_PASSWORD "
            "(or --wifi-password), or pass --wifi-open for a network without one"
        )
    if request.wifi_open and request.wifi_password:
        raise KvittoError("--wifi-open and a Wi-Fi password contradict each other")
    layout = load_board(request.board)
    mqtt_password = new_password()  # 256 bits, made here, never stored in clear on the host
    config = device_config(request, mqtt_password)
    check_config(config, layout, f"config for {request.device}")
    own_console = console is None
    console = console or DeviceConsole(request.port)
    try:
        if request.preflight:  # enough memory for the role, before anything is registered
            from kvitto.install.preflight import preflight

            preflight(console, request.role, layout, wifi=bool(request.wifi_ssid),
                      tls=request.broker_tls)  # fmt: skip
        public_key = read_identity(console)
        found = console.run(_JOURNAL % (request.device, False))
        old_device, pending = found.get("device"), int(found.get("pending") or 0)
        with open_store(request.store_url, create=False) as store:
            registry = Registry(store)
            if pending and old_device and not request.discard_journal:
                old = registry.device(old_device)
                if old is not None and old.public_key == public_key:
                    raise KvittoError(
                        f"{console.port}: the board holds {pending} unacknowledged events of "
                        f"registered device {old_device}; let the collector acknowledge them "
                        "(board online) or pass --discard-journal to drop them"
                    )
            if request.building:
                _register_entrance(registry, request, public_key)
            else:
                existing = registry.customer(request.customer)
                if existing is None:
                    registry.add_customer(request.customer, household=request.household)
                elif request.household and existing.household != request.household:
                    registry.add_customer(request.customer, request.household, existing.age_group)
                registry.add_device(request.device, request.customer, request.role, public_key)
            registry.set_mqtt_account(request.device, password_hash(mqtt_password))
            customer = registry.customer(request.customer)
            mark = request.mark or (
                "" if request.building else household_mark(
                    registry, request.customer, customer.household if customer else ""
                )
            )  # fmt: skip
        discarded: tuple[int, str | None] = (0, None)
        if found.get("files") and old_device != request.device:
            cleared = console.run(_JOURNAL % (request.device, True))
            discarded = (int(cleared.get("pending") or 0), old_device)
        data = json.dumps(config, sort_keys=True).encode()
        written = console.run(_WRITE_CONFIG % binascii.hexlify(data).decode())
        if not written.get("ok"):
            raise ProvisionError(f"{console.port}: config.json did not read back as written")
        did_reset = False
        if request.reset:
            try:
                did_reset = bool(console.run(_RESET, timeout=5).get("reset"))
            except ProvisionError:
                did_reset = True  # a real board resets before it can finish answering
    finally:
        if own_console:
            console.close()
    label = None
    if request.label_dir is not None:
        request.label_dir.mkdir(parents=True, exist_ok=True)
        path = request.label_dir / f"{request.device}.svg"
        path.write_text(label_svg(request.device, mark))
        label = str(path)
    return Provisioned(
        device=request.device,
        customer=request.customer,
        role=request.role,
        public_key=public_key,
        config_path=str(written.get("path")),
        label=label,
        mark=mark,
        reset=did_reset,
        mqtt_password_sha256=hashlib.sha256(mqtt_password.encode()).hexdigest(),
        discarded=discarded,
    )


def _register_entrance(registry: Any, request: Provisioning, public_key: bytes) -> None:
    """A lock at a building's main entrance: its customers (new ones added), then the device
    bound to the building and all of them."""
    from kvitto.store.entrance import add_entrance_lock

    if request.role != "lock":
        raise KvittoError(f"{request.device}: only a lock serves a building")
    for customer in request.customers:
        if registry.customer(customer) is None:
            registry.add_customer(customer)
    add_entrance_lock(registry, request.device, request.building, list(request.customers),
                      public_key)  # fmt: skip


def run_provision(request: Provisioning, output_format: str) -> Provisioned:
    import click

    result = provision(request)
    if output_format == "json":
        click.echo(json.dumps(result.as_dict()))
        return result
    click.echo(f"{result.device}: key {result.public_key.hex()} (proof of possession verified)")
    if request.building:
        click.echo(f"registered for building {request.building} (customers "
                   f"{', '.join(request.customers)}) as its entrance lock")  # fmt: skip
    else:
        click.echo(f"registered for customer {result.customer} as {result.role}")
    click.echo(f"wrote {result.config_path} on the board")
    if request.role == "lock" and request.lock:
        click.echo(f"lock: fallback {request.lock['fallback']}, a door held open "
                   f"{request.lock['door_open_s']} s is reported ({request.lock_from})")  # fmt: skip
    count, old_device = result.discarded
    if count:
        click.echo(
            f"cleared the board's journal: {count} events journaled as "
            f"{old_device or 'an unprovisioned board'} before provisioning (they could never "
            "verify under the new identity)"
        )
    if result.label:
        click.echo(f"label: {result.label}" + (f" (marked {result.mark})" if result.mark else ""))
    if not result.reset:
        click.echo("reset the board (button or power) to start with its new identity")
    click.echo("run `kvitto broker-config` to give the broker its login")
    return result
