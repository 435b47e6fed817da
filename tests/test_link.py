"""The link on the unix port: commands obeyed only when signed, fresh and addressed (and never
twice, even after a reboot); events signed once and cached; `online`/`offline` on the state
topic; TLS with a pinned CA."""

from __future__ import annotations

import datetime
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from link_support import DEVICE, ORG_PUBLIC, ORG_SEED, LinkBoard, device_public, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from conftest import free_port
from kvitto.evidence.commands import sign_command
from kvitto.evidence.events import verify_event

OBEY_SCRIPT = """
import asyncio, sys, time
from device.evidence import journal as journal_mod
from device.link import collector as link_mod
from sim import flash
image, org_hex = sys.argv[1], sys.argv[2]
with open(sys.argv[3]) as f:   # a file: the port's wrapper fails on arguments of ~200 chars
    commands_hex = f.read().strip()

class NoNetwork:   # stands in for MQTTClient: the link only needs these attributes here
    def __init__(self):
        self.subscriptions = []; self.will = None; self.birth = None; self.on_message = None
        self.stats = {"connects": 0}; self.up = asyncio.Event()

def open_link():
    journal = journal_mod.Journal("/flash/journal")
    client = NoNetwork()
    link = link_mod.Link("tag-0042", journal, None, bytes.fromhex(org_hex), client=client,
                         state_path="/flash/link.state", now=lambda: 1790000000)
    return journal, client, link

async def main():
    flash.mount(image, "/flash")
    journal, client, link = open_link()
    if journal.next_seq == 1:
        for n in range(10):
            journal.append(b"event %d" % n)
    print("topics", client.subscriptions[0][0].decode(), client.will[0].decode(),
          client.will[1].decode(), client.birth[1].decode())
    from device.evidence import ed25519
    print("key ready", ed25519._key_cache[0] == bytes.fromhex(org_hex))
    for command in commands_hex.split(","):
        if command == "reboot":
            flash.unmount("/flash")
            flash.mount(image, "/flash")
            journal, client, link = open_link()
            print("reboot last_command", link.last_command)
            continue
        ok = await link.obey(bytes.fromhex(command))
        print("obeyed" if ok else "refused", journal.acked, link._replay)
asyncio.run(main())
"""


def command(seq: int, kind: str = "ack", x: dict | None = None, **kw) -> str:
    target = kw.get("target", DEVICE)
    expires = kw.get("expires", 1790000300)
    secret = kw.get("secret", ORG_SEED)
    return sign_command(secret, target, seq, expires, kind, x).hex()


def test_only_signed_fresh_addressed_commands_are_obeyed_even_after_reboot(micropython, tmp_path):
    steps = [
        command(5, "ack", {"upto": 3}),  # obeyed
        command(5, "ack", {"upto": 4}),  # same seq: a replay
        command(4, "ack", {"upto": 4}),  # older seq
        command(6, "ack", {"upto": 4}, target="tag-0043"),  # not for us
        command(6, "ack", {"upto": 4}, expires=1789999999),  # expired
        command(6, "ack", {"upto": 4}, secret=bytes(32)),  # not the organisation's key
        "00ff",  # not even CBOR
        command(6, "resend", {"from": 1, "to": 7}),  # obeyed: replays 4..7 (1..3 acked)
        "reboot",
        command(6, "ack", {"upto": 9}),  # replayed after the reboot: refused
        command(7, "ack", {"upto": 99}),  # obeyed, clamped to what exists
    ]
    (tmp_path / "commands").write_text(",".join(steps))
    out = micropython(
        OBEY_SCRIPT,
        args=[str(tmp_path / "flash.img"), ORG_PUBLIC.hex(), str(tmp_path / "commands")],
    )
    lines = out.strip().splitlines()
    assert lines[0] == ("topics kvitto/v1/tag-0042/cmd kvitto/v1/tag-0042/state offline online")
    # the organisation key's comb table was built when the link was, before any command came
    assert lines[1] == "key ready True"
    assert lines[2:] == [
        "obeyed 3 []",
        "refused 3 []",
        "refused 3 []",
        "refused 3 []",
        "refused 3 []",
        "refused 3 []",
        "refused 3 []",
        "obeyed 3 [(4, 7)]",
        "reboot last_command 6",
        "refused 3 []",
        "obeyed 10 []",
    ]


SIGN_SCRIPT = """
import asyncio, sys, time
from device.evidence import journal as journal_mod, event
from device.link import collector as link_mod
from sim import flash
flash.mount(sys.argv[1], "/flash")
journal = journal_mod.Journal("/flash/journal")
secret = bytes.fromhex(sys.argv[2])
sign = link_mod.journal_signer(journal, secret, "tag-0042")
payload = event.build_payload("tag-0042", journal.next_seq, journal.boot, 5, "boot", journal.prev_hash)
seq = journal.append(payload)
async def main():
    t0 = time.ticks_us()
    first = await sign(seq, payload)
    t1 = time.ticks_us()
    again = await sign(seq, payload)
    t2 = time.ticks_us()
    print(first.hex(), first == again, journal.signature(seq) is not None)
asyncio.run(main())
"""


def test_events_are_signed_once_and_verify_on_the_host(micropython, tmp_path):
    import hashlib

    secret = hashlib.sha256(b"kvitto-test-device:" + DEVICE.encode()).digest()
    out = micropython(SIGN_SCRIPT, args=[str(tmp_path / "flash.img"), secret.hex()])
    message_hex, same, cached = out.split()
    assert same == "True" and cached == "True"
    event = verify_event(bytes.fromhex(message_hex), device_public(DEVICE))
    assert (event.dev, event.seq, event.type) == (DEVICE, 1, "boot")


def _state_watcher(host: str, port: int) -> tuple[mqtt.Client, list[bytes]]:
    states: list[bytes] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-state-watcher")
    watcher.on_connect = lambda c, *a: c.subscribe(f"kvitto/v1/{DEVICE}/state", qos=1)
    watcher.on_message = lambda c, u, m: states.append(m.payload)
    watcher.connect(host, port)
    watcher.loop_start()
    return watcher, states


def test_online_retained_and_offline_as_last_will_after_a_power_cut(mosquitto, tmp_path):
    board = LinkBoard(tmp_path / "flash.img", mosquitto.host, mosquitto.port, keepalive=1)
    board.start()
    try:
        wait_for(lambda: board.status()["connected"] == 1, what="board connected")
        watcher, states = _state_watcher(mosquitto.host, mosquitto.port)
        wait_for(lambda: states[-1:] == [b"online"], what="retained online")
        board.power_cut()
        # The broker publishes the will once it misses 1.5 keepalives (MQTT 3.1.1 §3.1.2.10).
        wait_for(lambda: states[-1:] == [b"offline"], timeout=10, what="last will")
        watcher.loop_stop()
        watcher.disconnect()
    finally:
        board.stop()


# ---- TLS with a pinned CA ----------------------------------------------------------------------


def _certificate(subject: str, key, issuer_key, issuer_name, ca: bool, san: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pki(tmp_path):
    def pem_key(key):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kvitto test CA")])
    ca = _certificate("kvitto test CA", ca_key, ca_key, ca_name, True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca_key, ca_name, False, san="127.0.0.1")
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    other = _certificate("some other CA", other_key, other_key, other_name, True)
    files = {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "other.pem": other.public_bytes(serialization.Encoding.PEM),
        "server.pem": server.public_bytes(serialization.Encoding.PEM),
        "server.key": pem_key(server_key),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


TLS_SCRIPT = """
import asyncio, sys
from device.link.mqtt import MQTTClient
from device.link.collector import tls_context
port, ca_path = int(sys.argv[1]), sys.argv[2]
async def main():
    c = MQTTClient("tag-0042", "127.0.0.1", port, keepalive=5, seed=1,
                   ssl_context=tls_context(ca_path), backoff_ms=(100, 300))
    asyncio.create_task(c.run())
    try:
        await asyncio.wait_for_ms(c.publish(b"kvitto/v1/tag-0042/evt", b"over tls"), 4000)
        print("delivered", c.stats["connects"])
    except asyncio.TimeoutError:
        print("refused", c.stats["connects"], type(c.last_error).__name__)
asyncio.run(main())
"""


def test_tls_with_a_pinned_ca(micropython, mosquitto_factory, tmp_path):
    pki = _pki(tmp_path)
    tls_port = free_port()
    broker = mosquitto_factory(
        # run as root mosquitto drops to its own user, which cannot read pytest's 0700 tmp dirs
        "user root\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
    )
    received: list[bytes] = []
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-tls-sub")
    sub.on_connect = lambda c, *a: c.subscribe("kvitto/v1/+/evt", qos=1)
    sub.on_message = lambda c, u, m: (received.append(m.payload), got.set())
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        time.sleep(0.3)
        out = micropython(TLS_SCRIPT, args=[str(tls_port), str(pki / "ca.pem")], timeout=60)
        assert out.split() == ["delivered", "1"]
        assert got.wait(5) and received == [b"over tls"]
        # A broker whose certificate the pinned CA did not sign is never talked to.
        out = micropython(TLS_SCRIPT, args=[str(tls_port), str(pki / "other.pem")], timeout=60)
        assert out.split()[:2] == ["refused", "0"]
        assert received == [b"over tls"]
    finally:
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.parametrize("pem", [True, False], ids=["pem", "der"])
def test_tls_context_takes_pem_or_der(micropython, tmp_path, pem):
    pki = _pki(tmp_path)
    data = (pki / "ca.pem").read_bytes()
    if not pem:
        data = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    out = micropython(
        f"from device.link.collector import tls_context\nprint(type(tls_context({data!r})).__name__)"
    )
    assert out.strip() == "SSLContext"


MODEL_SCRIPT = """
import asyncio, random, sys
from device.link import collector as link_mod

class Journal:   # dict-backed, same contract as device.evidence.journal.Journal
    def __init__(self):
        self.events = {}; self.next_seq = 1; self.acked = 0
    def append(self, payload):
        seq = self.next_seq; self.events[seq] = payload; self.next_seq += 1; return seq
    def pending(self, from_seq=None):
        seq = max(from_seq or 1, self.acked + 1)
        while seq < self.next_seq:
            if seq > self.acked:
                yield seq, self.events[seq]
            seq = max(seq + 1, self.acked + 1)
    def ack(self, upto):
        self.acked = max(self.acked, min(upto, self.next_seq - 1))

class Client:    # a connection that drops when told; publish waits through the outage
    def __init__(self):
        self.subscriptions = []; self.will = None; self.birth = None; self.on_message = None
        self.on_connect = None
        self.stats = {"connects": 0}; self.up = asyncio.Event(); self.sent = []
        self.running = True; self.journal = None
    async def run(self):
        pass
    def connect(self):
        self.stats["connects"] += 1; self.up.set(); self.on_connect()
    def drop(self):
        self.up.clear()
    async def publish(self, topic, message):
        while True:
            await self.up.wait()
            epoch = self.stats["connects"]
            await asyncio.sleep_ms(0)
            if self.up.is_set():
                self.sent.append((epoch, int(message), self.journal.acked))
                return

def parse(message, org, dev, last, now):
    kind, a, b = message.split(b" ")
    x = {"upto": int(a)} if kind == b"ack" else {"from": int(a), "to": int(b)}
    return last + 1, kind.decode(), x

async def scenario(seed):
    random.seed(seed)
    journal = Journal(); client = Client(); client.journal = journal
    link = link_mod.Link("tag-0042", journal, lambda seq, payload: b"%d" % seq, bytes(32),
                         client=client, state_path="/tmp/kvitto-link-model-%d" % seed,
                         parse_command=parse, ack_timeout_ms=50)
    task = asyncio.create_task(link.run())
    client.connect()
    for step in range(60):
        op = random.getrandbits(3)
        if op < 3:
            for _ in range(1 + random.getrandbits(3)):
                journal.append(b"e")
            link.notify()
        elif op == 3:
            client.drop(); await asyncio.sleep_ms(random.getrandbits(3))
            client.connect()
        elif op == 4 and client.sent:
            top = max(s for _, s, _ in client.sent)
            await link.obey(b"ack %d 0" % (journal.acked + random.getrandbits(3) % (top - journal.acked + 1)))
        elif op == 5 and journal.next_seq > 1:
            a = 1 + random.getrandbits(8) % (journal.next_seq - 1)
            await link.obey(b"resend %d %d" % (a, a + random.getrandbits(3)))
        await asyncio.sleep_ms(random.getrandbits(2))
    for _ in range(200):          # let it settle
        await asyncio.sleep_ms(2)
    final = client.stats["connects"]
    last_epoch = [s for e, s, _ in client.sent if e == final]
    unacked = list(range(journal.acked + 1, journal.next_seq))
    # 1. every event not acknowledged went out on the current connection
    ok_complete = all(s in last_epoch for s in unacked)
    # 2. within a connection the stream climbs by one, skipping only what the collector had
    #    acknowledged by then (an ack for an earlier connection's sends may land mid-stream);
    #    resend replays only repeat
    ok_order = True
    for epoch in set(e for e, _, _ in client.sent):
        fresh = []
        for e, s, acked in client.sent:
            if e != epoch:
                continue
            if not fresh or s == fresh[-1] + 1 or (s > fresh[-1] and acked >= s - 1):
                fresh.append(s)
            elif s > fresh[-1] + 1:
                ok_order = False
    task.cancel()
    return ok_complete, ok_order, len(client.sent), journal.next_seq - 1

async def main():
    results = []
    for seed in range(int(sys.argv[1])):
        results.append(await scenario(seed))
    print(all(r[0] for r in results), all(r[1] for r in results), sum(r[2] for r in results))
asyncio.run(main())
"""


def test_link_model_random_outages_acks_and_resends(micropython):
    out = micropython(MODEL_SCRIPT, args=["30"], timeout=120)
    complete, ordered, sent = out.split()
    assert complete == "True"  # nothing unacknowledged is left unsent after the last reconnect
    assert ordered == "True"  # no event skipped within a connection
    assert int(sent) > 0


CANCEL_SCRIPT = """
import asyncio, sys
from device.evidence import journal as journal_mod
from device.link import collector as link_mod
from sim import flash
flash.mount(sys.argv[1], "/flash")
journal = journal_mod.Journal("/flash/journal")
async def main():
    link = link_mod.Link("tag-0042", journal, lambda seq, payload: b"x", bytes(32),
                         host="127.0.0.1", port=int(sys.argv[2]), keepalive=5,
                         state_path="/flash/link.state")
    task = asyncio.create_task(link.run())
    await asyncio.wait_for_ms(link.client.up.wait(), 5000)
    print("up", link.client.connected)
    task.cancel()
    await asyncio.sleep_ms(50)
    print("after cancel", link.client.connected, link.client._sock is None)
asyncio.run(main())
"""


def test_a_cancelled_link_leaves_no_client_behind(micropython, mosquitto, tmp_path):
    # app.py's supervisor restarts a failed link: the old MQTT session must be closed first.
    out = micropython(CANCEL_SCRIPT, args=[str(tmp_path / "flash.img"), str(mosquitto.port)])
    assert out.splitlines() == ["up True", "after cancel False True"]
