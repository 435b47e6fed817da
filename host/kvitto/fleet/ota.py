"""`kvitto ota push`: a signed firmware image to devices over MQTT, chunk by chunk, through the
topics and ACL the collector already has (issue #22; docs/fleet.md).

    pusher = Pusher(store, "mqtt://127.0.0.1:1883", org_secret, image, manifest)
    results = pusher.push(["tag-0001", "tag-0002"], canary=1)    # device -> Target

Why MQTT and not a download from `kvitto serve`: the device already holds a connection to the
broker and reads `kvitto/v1/<device>/cmd`, writes `…/state`; nothing new listens on the device
or needs the web app, a certificate for it, or a second TLS stack in a heap that has room for
one. The push logs in as `kvitto_ota` (kvitto.install.broker_config: write commands, read
state), never as the collector, whose session the broker would otherwise hand over.

The wire: the offer is a signed command (FORMATS.md §2, type `ota`, x = {"manifest": the
release manifest}) with the next command sequence from the store, so it never collides with
the collector's commands. The image follows in 2 KiB chunks on the same topic,
`b"KVO1" ‖ index u32 ‖ data`, unsigned: the device checks the whole image against the SHA-256
the release key signed before it boots it. The device answers on its state topic: `ota N`
(chunk N wanted next: every chunk is acknowledged), `ota refused REASON [N]`, `ota installed V`.
At most `window` chunks are in flight per device and `rate` chunks a second in all, so the
device's visit events keep flowing meanwhile; chunks not acknowledged within `resend_s` go again
from the one the device wants. A push cut short resumes where the device got to (it keeps its
place on flash). After `installed` the device restarts on trial and keeps the new firmware only
once its self-test passes and the collector has acknowledged its first event: the push waits for
that signed `health` event (`ota: valid`, or `rolled-back`) in the store.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kvitto.errors import KvittoError
from kvitto.evidence.commands import sign_command
from kvitto.evidence.cose import split_sign1
from kvitto.evidence.events import decode_payload
from kvitto.evidence.release import Release, verify_release
from kvitto.store.db import Store

CHUNK = 2048  # device.link.ota.CHUNK
MAGIC = b"KVO1"
TOPIC = "kvitto/v1/{}/{}"
OFFER_TTL_S = 600


@dataclass
class Target:
    """One device's update, as the push sees it."""

    device: str
    state: str = "waiting"  # waiting, offered, sending, installed, valid, rolled-back, refused,
    #                         timeout, skipped
    wanted: int = -1  # the chunk the device wants next (-1: no answer to the offer yet)
    sent: int = 0  # chunks sent up to (exclusive)
    detail: str = ""
    chunks_sent: int = 0
    started: float = 0.0
    installed: float = 0.0  # when the device said the image was written and checked
    finished: float = 0.0
    last_progress: float = field(default=0.0, repr=False)
    offers: int = field(default=0, repr=False)
    stalls: int = field(default=0, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for private in ("last_progress", "offers", "stalls"):
            out.pop(private)
        out["seconds"] = round(self.finished - self.started, 3) if self.finished else None
        return out


class Pusher:
    def __init__(self, store: Store, broker_url: str, org_secret: bytes, image: bytes,
                 manifest: bytes, release_public: bytes | None = None, *, window: int = 8,
                 rate: float = 200.0, resend_s: float = 3.0, offer_s: float = 15.0,
                 confirm_s: float = 180.0, ca_file: str | None = None,
                 client_id: str = "kvitto-ota") -> None:  # fmt: skip
        self.store = store
        self.org_secret = org_secret
        self.image = image
        self.manifest = manifest
        self.release = _release_of(manifest, image, release_public)
        self.chunks = (len(image) + CHUNK - 1) // CHUNK
        self.window = max(1, window)
        self.rate = rate
        self.resend_s = resend_s
        self.offer_s = offer_s
        self.confirm_s = confirm_s
        self.targets: dict[str, Target] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._subscribed = threading.Event()
        self._client = _connect(broker_url, client_id, ca_file, self._on_connect, self._on_message)
        self._client.on_subscribe = self._on_subscribe
        self._checked = 0.0

    # -- MQTT side (paho's thread) ---------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(TOPIC.format("+", "state"), 1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        words = message.payload.decode("utf-8", "replace").split()
        if len(parts) != 4 or not words or words[0] != "ota":
            return
        with self._lock:
            target = self.targets.get(parts[2])
            if target is None or target.state not in ("offered", "sending"):
                return
            now = time.monotonic()
            if len(words) == 2 and words[1].isdigit():
                wanted = int(words[1])
                if wanted > target.wanted or target.state == "offered":
                    target.last_progress = now
                    target.stalls = 0
                if target.state == "offered":
                    target.sent = wanted  # a fresh start, or a resume from the device's place
                target.state = "sending"
                target.wanted = wanted
                target.sent = max(target.sent, wanted)
            elif len(words) >= 3 and words[1] == "refused":
                if words[2] in ("replay", "gap") and len(words) == 4 and words[3].isdigit():
                    target.wanted = int(words[3])  # out of order: go on from its place
                    target.sent = target.wanted
                else:
                    target.state, target.detail = "refused", words[2]
                    target.finished = now
            elif len(words) >= 2 and words[1] == "installed":
                target.state, target.wanted = "installed", self.chunks
                target.installed = target.last_progress = now  # confirmation awaited from here
        self._wake.set()

    # -- the push --------------------------------------------------------------------------

    def push(self, devices: list[str], canary: int = 0) -> dict[str, Target]:
        """Update `devices`; with `canary` N, the first N first, the rest only once every
        canary runs the new firmware, confirmed."""
        self._client.loop_start()
        try:
            if not self._subscribed.wait(10):
                raise KvittoError("the broker did not confirm the state topics' subscription")
            groups = [devices[:canary], devices[canary:]] if canary else [devices]
            for number, group in enumerate(groups):
                self._run(group)
                if canary and number == 0:
                    failed = [d for d in group if self.targets[d].state != "valid"]
                    if failed:
                        for device in devices[canary:]:
                            self.targets[device] = Target(device, "skipped",
                                                          detail="canary failed")  # fmt: skip
                        break
        finally:
            self._client.loop_stop()
            self._client.disconnect()
        return self.targets

    def _run(self, devices: list[str]) -> None:
        since_ms = int(time.time() * 1000)
        now = time.monotonic()
        with self._lock:
            for device in devices:
                self.targets[device] = Target(device, started=now)
        budget = 0.0
        last = now
        while True:
            now = time.monotonic()
            budget = min(self.rate * 0.1 + 1, budget + (now - last) * self.rate)
            last = now
            with self._lock:
                active = [t for t in (self.targets[d] for d in devices)
                          if t.state in ("waiting", "offered", "sending")]  # fmt: skip
                for target in active:
                    if target.state != "sending" and now - target.last_progress >= self.offer_s:
                        if target.offers >= 5:
                            target.state, target.detail = "timeout", "no answer to the offer"
                            target.finished = now
                            continue
                        self._offer(target, now)
                    elif target.state == "sending":
                        if now - target.last_progress >= self.resend_s:
                            target.sent = target.wanted  # unacknowledged: again from there
                            target.last_progress = now
                            target.stalls += 1
                            if target.stalls >= 3:  # restarted meanwhile? offer again: the
                                target.stalls = 0  # device resumes from its place on flash
                                target.state = "offered"
                                target.last_progress = now - self.offer_s
                                continue
                        while budget >= 1 and target.sent < min(
                            self.chunks, target.wanted + self.window
                        ):
                            self._send_chunk(target)
                            budget -= 1
            if now - self._checked >= 0.5:
                self._checked = now
                self._confirm(devices, since_ms)
            if all(self.targets[d].state not in ("waiting", "offered", "sending", "installed")
                   for d in devices):  # fmt: skip
                return
            self._wake.wait(0.01)
            self._wake.clear()

    def _offer(self, target: Target, now: float) -> None:
        seq = self.store.next_command_seq(target.device)
        command = sign_command(self.org_secret, target.device, seq, int(time.time()) + OFFER_TTL_S,
                               "ota", {"manifest": self.manifest})  # fmt: skip
        self._client.publish(TOPIC.format(target.device, "cmd"), command, qos=1)
        target.state, target.offers, target.last_progress = "offered", target.offers + 1, now

    def _send_chunk(self, target: Target) -> None:
        index = target.sent
        data = self.image[index * CHUNK : (index + 1) * CHUNK]
        message = MAGIC + index.to_bytes(4, "big") + data
        self._client.publish(TOPIC.format(target.device, "cmd"), message, qos=1)
        target.sent += 1
        target.chunks_sent += 1

    def _confirm(self, devices: list[str], since_ms: int) -> None:
        """Installed devices: their signed verdict from the store (collector-stored events)."""
        installed = [self.targets[d] for d in devices if self.targets[d].state == "installed"]
        now = time.monotonic()
        for target in installed:
            verdict = _verdict(self.store, target.device, since_ms, self.release.version)
            if verdict is not None:
                target.state, target.finished = verdict, now
            elif now - target.last_progress > self.confirm_s:
                target.state, target.detail = "timeout", "installed, never confirmed"
                target.finished = now


def _release_of(manifest: bytes, image: bytes, public: bytes | None) -> Release:
    try:
        release = verify_release(manifest, public) if public else _unchecked(manifest)
        release.check_image(image)
    except KvittoError as error:
        raise KvittoError(f"release manifest: {error}") from None
    return release


def _unchecked(manifest: bytes) -> Release:
    import cbor2

    fields = cbor2.loads(split_sign1(manifest)[2])
    return Release(fields[1], fields[2], fields[3], fields[4])


def _verdict(store: Store, device: str, since_ms: int, version: str) -> str | None:
    rows = store.execute(
        "SELECT message FROM events WHERE device = ? AND type = 'health' AND received_at >= ? "
        "ORDER BY seq",
        (device, since_ms),
    )
    for (message,) in rows:
        x = decode_payload(split_sign1(bytes(message))[2]).x
        if x.get("ota") == "valid" and x.get("fw") == version:
            return "valid"
        if x.get("ota") == "rolled-back" and x.get("refused") == version:
            return "rolled-back"
    return None


def _connect(broker_url: str, client_id: str, ca_file: str | None, on_connect: Any,
             on_message: Any) -> mqtt.Client:  # fmt: skip
    url = urlparse(broker_url)
    if url.scheme not in ("mqtt", "mqtts"):
        raise KvittoError(f"broker URL {broker_url!r}: use mqtt://host:port or mqtts://")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    if url.username:
        client.username_pw_set(unquote(url.username), unquote(url.password or ""))
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = on_connect
    client.on_message = on_message
    port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    try:
        client.connect(url.hostname or "127.0.0.1", port, keepalive=30)
    except OSError as error:
        raise KvittoError(f"broker {url.hostname}:{port}: {error}") from None
    return client


def run_push(store_url: str, broker_url: str, pki_dir: str, image_path: str,
             manifest_path: str | None, devices: list[str], all_devices: bool, canary: int,
             rate: float, output_format: str) -> bool:  # fmt: skip
    """`kvitto ota push`; True when every device ended on the new firmware, confirmed."""
    import json
    from pathlib import Path

    from kvitto.store.db import open_store
    from kvitto.store.keys import load_command_key, load_release_public
    from kvitto.store.registry import Registry

    image = Path(image_path).read_bytes()
    manifest = Path(manifest_path or image_path + ".release").read_bytes()
    with open_store(store_url) as store:
        registered = {d.id: d for d in Registry(store).devices() if not d.revoked}
        chosen = sorted(registered) if all_devices else devices
        if not chosen:
            raise KvittoError("name devices with --device, or --all")
        unknown = [d for d in chosen if d not in registered]
        if unknown:
            raise KvittoError(f"not registered (or revoked): {', '.join(unknown)}")
        pusher = Pusher(store, broker_url, load_command_key(Path(pki_dir)), image, manifest,
                        load_release_public(Path(pki_dir)), rate=rate)  # fmt: skip
        results = pusher.push(chosen, canary=canary)
    if output_format == "json":
        print(json.dumps({d: t.as_dict() for d, t in results.items()}, indent=2))
    else:
        for device, target in results.items():
            took = f" in {target.finished - target.started:.1f} s" if target.finished else ""
            detail = f" ({target.detail})" if target.detail else ""
            print(f"{device}: {target.state}{detail}{took}")
    return all(t.state == "valid" for t in results.values())
