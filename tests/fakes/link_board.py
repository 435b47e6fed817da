"""A minimal board for link tests: flash image → Journal → Link → MQTT, driven over stdin.

    micropython tests/fakes/link_board.py IMG HOST PORT tag-0042 ORG_PUBLIC_HEX --events 200
    (stdin)  append arrive | status
    (stdout) ready boot=3 next=41 acked=40 · journaled 41 · status next=42 acked=41 connected=1 …

Power cut = SIGKILL this process and start it again on the same image. With `--events N` the
board itself journals events (every `--interval` ms) until seq N exists, across restarts, so a
test knows exactly which events must reach the collector. The device key is derived from the
device id (test-only: sha256(b"kvitto-test-device:" + id)); the host side derives the same.
"""

import asyncio
import hashlib
import sys
import time

from device.evidence import cbor, journal as journal_mod
from device.link import collector as link_mod, mqtt
from sim import flash


def test_secret(device_id):
    return hashlib.sha256(b"kvitto-test-device:" + device_id.encode()).digest()


def options(argv):
    positional = []
    opts = {
        "events": 0,
        "interval": 20,
        "keepalive": 2,
        "ack-timeout": 5000,
        "blocks": 256,
        "segment": 4096,
        "seed": 1,
        "backoff-max": 2000,
    }
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--"):
            opts[arg[2:]] = int(argv[index + 1])
            index += 2
        else:
            positional.append(arg)
            index += 1
    return positional, opts


def build_payload(journal, device_id, boot_ms, event_type):
    try:
        from device.evidence import event
    except ImportError:
        event = None
    up = time.ticks_diff(time.ticks_ms(), boot_ms)
    if event is not None:
        return event.build_payload(
            device_id, journal.next_seq, journal.boot, up, event_type, journal.prev_hash
        )
    # FORMATS.md §1 directly, until device/evidence/event.py exists
    fields = {0: 1, 1: device_id, 2: journal.next_seq, 3: journal.boot, 4: up, 7: event_type}
    fields[9] = journal.prev_hash
    return cbor.encode(fields)


def command_parser():
    try:
        from device.evidence.event import parse_command

        return parse_command
    except ImportError:
        pass
    from device.evidence import ed25519

    def parse_command(message, org_public, device_id, last_seq, now):
        # FORMATS.md §2 checks, until device/evidence/event.py exists
        outer = cbor.decode(message)
        if not isinstance(outer, cbor.Tag) or outer.tag != 18:
            raise ValueError("not COSE_Sign1")
        protected, _, payload, signature = outer.value
        header = cbor.decode(protected)
        if header.get(1) != -8 or header.get(4) != b"org":
            raise ValueError("not an org command")
        to_sign = cbor.encode(["Signature1", protected, b"", payload])
        if not ed25519.verify(org_public, to_sign, signature):
            raise ValueError("bad signature")
        fields = cbor.decode(payload)
        if fields.get(1) != device_id:
            raise ValueError("not addressed to this device")
        if fields[2] <= last_seq:
            raise ValueError("replayed")
        if fields[3] < now:
            raise ValueError("expired")
        return fields[2], fields[7], fields.get(10, {})

    return parse_command


async def produce(journal, link, device_id, boot_ms, until, interval):
    while journal.next_seq <= until:
        seq = journal.append(build_payload(journal, device_id, boot_ms, "health"))
        print("journaled", seq)
        link.notify()
        await asyncio.sleep_ms(interval)
    print("produced", journal.next_seq - 1)


def status(journal, client, link):
    print(
        "status next=%d acked=%d connected=%d connects=%d obeyed=%d refused=%d published=%d "
        "republished=%d malformed=%d boot=%d"
        % (
            journal.next_seq,
            journal.acked,
            1 if client.connected else 0,
            client.stats["connects"],
            link.stats["obeyed"],
            link.stats["refused"],
            link.stats["published"],
            link.stats["republished"],
            client.stats["malformed"],
            journal.boot,
        )
    )


async def control(journal, client, link, device_id, boot_ms):
    reader = asyncio.StreamReader(sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return  # stdin closed: keep running (the test may still be collecting)
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "append":
            kind = words[1] if len(words) > 1 else "health"
            count = int(words[2]) if len(words) > 2 else 1
            for _ in range(count):
                seq = journal.append(build_payload(journal, device_id, boot_ms, kind))
            print("journaled", seq)
            link.notify()
        elif words[0] == "status":
            status(journal, client, link)


async def main():
    positional, opts = options(sys.argv[1:])
    image, host, port, device_id, org_hex = positional[:5]
    boot_ms = time.ticks_ms()
    flash.mount(image, "/flash", block_count=opts["blocks"])
    journal = journal_mod.Journal("/flash/journal", segment_bytes=opts["segment"])
    client = mqtt.MQTTClient(
        device_id,
        host,
        int(port),
        keepalive=opts["keepalive"],
        backoff_ms=(100, opts["backoff-max"]),
        seed=opts["seed"] + journal.boot,
    )
    link = link_mod.Link(
        device_id,
        journal,
        link_mod.journal_signer(journal, test_secret(device_id), device_id),
        bytes.fromhex(org_hex),
        client=client,
        state_path="/flash/link.state",
        parse_command=command_parser(),
        ack_timeout_ms=opts["ack-timeout"],
    )
    print("ready boot=%d next=%d acked=%d" % (journal.boot, journal.next_seq, journal.acked))
    asyncio.create_task(link.run())
    asyncio.create_task(control(journal, client, link, device_id, boot_ms))
    if opts["events"]:
        asyncio.create_task(
            produce(journal, link, device_id, boot_ms, opts["events"], opts["interval"])
        )
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
