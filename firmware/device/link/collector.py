"""The device's link to the collector: journal → sign → MQTT, and signed commands back.

    sign = journal_signer(journal, secret, "tag-0042")
    link = Link("tag-0042", journal, sign, org_public, host="broker.lan", user="tag-0042", password=pw)
    asyncio.create_task(link.run())      # connects, publishes pending events in order, forever
    journal.append(payload); link.notify()

DESIGN.md, Reliability: an event leaves the journal only when the collector has stored it and
said so with a signed `ack`; the broker's PUBACK is only flow control. So after every
(re)connect, and after a reboot, everything not yet acknowledged is published again from
`journal.acked + 1`, and a `resend` command replays a range. Commands (FORMATS.md §2) are obeyed
only when `parse_command` accepts them (signed by the organisation, addressed to this device,
fresh, sequence above the last obeyed one); that last sequence is kept on flash, so a replayed
command is refused after a reboot too.
"""

import asyncio
import os
import time

try:
    from micropython import const  # type: ignore
except ImportError:  # CPython

    def const(value):
        return value


_COMMAND_QUEUE = const(32)  # commands waiting for verification; beyond it the oldest goes
_ACK_TIMEOUT_MS = const(30000)  # published but unacknowledged this long: publish again
_IDLE_POLL_MS = const(1000)  # the backup poll when nobody calls notify()


def journal_signer(journal, secret, device_id):
    """sign(seq, payload) -> COSE_Sign1 message (FORMATS.md §1), for Link.

    Uses the journal's signature cache, so a resend costs no new signature; otherwise signs in
    slices (ed25519.Signer.sign_steps), yielding to the loop between them so taps are served.
    """
    from device.evidence import cose, ed25519

    signer = ed25519.signer(secret)
    to_sign_header = cose.protected_header(device_id)

    async def sign(seq, payload):
        signature = journal.signature(seq)
        if signature is None:
            to_sign = cose.sig_structure(to_sign_header, payload)
            for _ in signer.sign_steps(to_sign):  # type: ignore  (signer() never returns None)
                await asyncio.sleep_ms(0)
            signature = signer.signature  # type: ignore
            journal.put_signature(seq, signature)
        return cose.assemble(payload, device_id, signature)

    return sign


def tls_context(ca):
    """An SSLContext that trusts only `ca` (pinned): PEM text, DER bytes, or a file path."""
    import ssl

    if isinstance(ca, str) and not ca.startswith("-----BEGIN"):
        with open(ca, "rb") as f:
            ca = f.read()
    if isinstance(ca, str):
        ca = ca.encode()
    if ca.startswith(b"-----BEGIN"):
        import binascii

        ca = binascii.a2b_base64(
            b"".join(line.strip() for line in ca.split(b"\n") if not line.startswith(b"-----"))
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca)
    return context


class Link:
    """Publishes the journal and obeys commands over one MQTTClient. See the module docstring.

    `sign(seq, payload)` returns the signed message, or an awaitable of it (stepwise signing;
    `journal_signer` builds one). Pass a ready `client`, or `host`/`port`/`user`/`password`/
    `ssl` (`{"ca": PEM, DER or path}` pins the broker's CA) and one is built. `handlers` maps
    other command types (`allow`, `revoke`, `time`, `config`) to callables taking the
    command's `x` map; they may be async.
    """

    def __init__(
        self,
        device_id,
        journal,
        sign,
        org_public=None,
        client=None,
        host=None,
        port=1883,
        user=None,
        password=None,
        ssl=None,
        keepalive=60,
        handlers=None,
        state_path="/link.state",
        now=None,
        parse_command=None,
        ack_timeout_ms=_ACK_TIMEOUT_MS,
    ):
        if parse_command is None:
            from device.evidence.event import parse_command  # type: ignore  (lands with the Signed evidence issue)
        if org_public is None or len(org_public) != 32:
            raise ValueError("org_public must be 32 bytes")  # the organisation's command key
        from device.evidence import ed25519

        ed25519.prepare(org_public)  # while the heap is young: see ed25519.prepare
        if client is None:
            from device.link.mqtt import MQTTClient

            if host is None:
                raise ValueError("give a client or the broker host")
            context = None
            if ssl:
                context = tls_context(ssl["ca"])
            client = MQTTClient(
                device_id,
                host,
                port,
                user=user,
                password=password,
                keepalive=keepalive,
                ssl_context=context,
            )
        self.client = client
        self.journal = journal
        self.sign = sign
        self.device_id = device_id
        self.org_public = org_public
        self.handlers = handlers or {}
        self.state_path = state_path
        self.now = now or time.time
        self.parse_command = parse_command
        self.ack_timeout_ms = ack_timeout_ms
        base = "kvitto/v1/" + device_id + "/"  # DESIGN.md, Topics
        self.evt_topic = (base + "evt").encode()
        self.cmd_topic = (base + "cmd").encode()
        self.state_topic = (base + "state").encode()
        client.on_message = self._on_message
        client.on_connect = self.notify  # type: ignore  (new session: resend from acked + 1 now)
        if (self.cmd_topic, 1) not in client.subscriptions:
            client.subscriptions.append((self.cmd_topic, 1))
        if client.will is None:
            client.will = (self.state_topic, b"offline", True, 1)
        if client.birth is None:
            client.birth = (self.state_topic, b"online")
        self.last_command = 0
        for path in (state_path, state_path + ".tmp"):
            try:
                with open(path) as f:
                    self.last_command = int(f.read())
                break
            except (OSError, ValueError):
                pass
        self._commands = []
        self._command_flag = asyncio.Event()
        self._wake = asyncio.Event()
        self._replay = []  # (first, last) ranges asked for by `resend`
        self.stats = {
            "published": 0,
            "republished": 0,
            "obeyed": 0,
            "refused": 0,
        }

    async def say(self, text):
        """A line on the device's state topic, not retained, QoS 0: an update's progress
        (`ota 17`: chunk 17 wanted next), which the collector leaves alone."""
        await self.client.publish(self.state_topic, text.encode(), False, 0)

    def notify(self):
        """Call after journal.append(): the publisher wakes at once instead of at its poll."""
        self._wake.set()

    async def run(self):
        """The connection, the publisher and the command worker; returns only if cancelled."""
        tasks = (
            asyncio.create_task(self._command_loop()),
            asyncio.create_task(self._tick()),
            asyncio.create_task(self.client.run()),
        )
        try:
            await self._publish_loop()
        finally:
            # A supervisor that restarts a failed link must not leave a second client behind
            # (two sessions with one client id throw each other off the broker).
            for task in tasks:
                task.cancel()

    # -- publishing --

    async def _tick(self):
        # The backup poll when nobody calls notify(). A task that sleeps costs a fraction of a
        # wait_for with a timeout around every idle wait, which the publisher would hold between
        # taps (and build again each second).
        while True:
            await asyncio.sleep_ms(_IDLE_POLL_MS)
            self._wake.set()

    async def _publish_loop(self):
        journal = self.journal
        client = self.client
        while True:
            await client.up.wait()
            connects = client.stats["connects"]
            # A new session, or a reboot: the collector may have lost anything not acknowledged.
            cursor = journal.acked + 1
            self._replay = []
            acked_seen = journal.acked
            progress_at = time.ticks_ms()
            while client.stats["connects"] == connects:
                if self._replay:
                    first, last = self._replay.pop(0)
                    for seq, payload in journal.pending(first):
                        if seq > last or seq >= cursor:
                            break  # beyond the cursor: the normal stream will send it
                        await self._publish(seq, payload, True)
                    continue
                for seq, payload in journal.pending(cursor):
                    await self._publish(seq, payload, False)
                    cursor = seq + 1
                    if self._replay or client.stats["connects"] != connects:
                        break
                else:
                    cursor = max(cursor, journal.next_seq)
                if journal.acked != acked_seen:
                    acked_seen = journal.acked
                    progress_at = time.ticks_ms()
                if acked_seen + 1 < cursor:
                    if time.ticks_diff(time.ticks_ms(), progress_at) >= self.ack_timeout_ms:
                        # Published, PUBACKed, but never acknowledged by the collector (a broker
                        # that lost it in a crash): the journal still has it, so send it again.
                        cursor = acked_seen + 1
                        progress_at = time.ticks_ms()
                        continue
                else:
                    progress_at = time.ticks_ms()  # nothing outstanding: the timer rests
                if journal.next_seq > cursor or self._replay:
                    continue
                self._wake.clear()
                await self._wake.wait()  # notify(), a command, a new session, or _tick

    async def _publish(self, seq, payload, replay):
        message = self.sign(seq, payload)
        if not isinstance(message, (bytes, bytearray)):
            message = await message
        await self.client.publish(self.evt_topic, message)
        self.stats["republished" if replay else "published"] += 1

    # -- commands --

    def _on_message(self, topic, payload, retained):
        # Called from the MQTT reader: queue only; verification (~ms of Ed25519) runs elsewhere.
        if topic != self.cmd_topic:
            return
        if len(self._commands) >= _COMMAND_QUEUE:
            self._commands.pop(0)
        self._commands.append(payload)
        self._command_flag.set()

    async def _command_loop(self):
        while True:
            await self._command_flag.wait()
            self._command_flag.clear()
            while self._commands:
                message = self._commands.pop(0)
                try:
                    await self.obey(message)
                except Exception:  # noqa: one bad command never stops the worker
                    self.stats["refused"] += 1
                await asyncio.sleep_ms(0)

    async def obey(self, message):
        """Verify and act on one command message; True if obeyed."""
        if message[:4] == b"KVO1":
            # a firmware chunk (device.link.ota): not a command, its bytes are checked against
            # the signed release manifest before they are ever booted
            handler = self.handlers.get("ota_chunk")
            if handler is None:
                self.stats["refused"] += 1
                return False
            await handler(message)
            return True
        now = self.now()  # None before the first clock sync: the sequence alone stops replays
        try:
            seq, kind, x = self.parse_command(
                message,
                self.org_public,
                self.device_id,
                self.last_command,
                None if now is None else int(now),
            )
        except Exception:  # CommandRefused, or a decoder error on garbage
            self.stats["refused"] += 1
            return False
        # parse_command checked x (FORMATS.md §2): ack's upto and resend's from <= to are
        # unsigned integers (device.evidence.event.parse_command)
        if kind == "ack":
            self.journal.ack(min(x["upto"], self.journal.next_seq - 1))
        elif kind == "resend":
            first = max(x["from"], self.journal.acked + 1)
            last = min(x["to"], self.journal.next_seq - 1)
            if first <= last:
                self._replay.append((first, last))
        else:
            handler = self.handlers.get(kind)
            if handler is not None:
                try:
                    result = handler(x)
                    if result is not None and hasattr(result, "send"):
                        await result
                except Exception:  # a failing handler never stops the command worker
                    pass
        # Acted first, then persisted: a cut in between repeats an idempotent command at worst.
        self.last_command = seq
        # Written aside, then renamed: littlefs renames atomically, so a cut leaves old or new.
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(seq))
        os.rename(tmp, self.state_path)
        self.stats["obeyed"] += 1
        self._wake.set()
        return True
