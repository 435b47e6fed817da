"""Firmware updates over the air (issue #22; docs/fleet.md): the signed image is written chunk
by chunk into the next app slot, checked, and booted on trial; the new firmware confirms itself
only once its self-test passes and the collector has acknowledged its first event, otherwise the
bootloader rolls back. Imported only when an update arrives or a trial boot must be judged:
never on a tag's heap otherwise.

    update = Update(hal.partitions(), settings["release_public_key"], board["chip"],
                    root + "/ota.state", app.record)
    next_chunk = update.offer(manifest)          # resumes a transfer cut by a power loss
    next_chunk = update.chunk(index, data)       # in order; a replayed chunk changes nothing
    update.finish()                              # hash, then set_boot: the caller resets
    trial = Trial.at_boot(partitions, path, record)   # after the reset: None, or judge it

Nothing here touches the running slot or the filesystem's keys, config and journal: the image
goes into the other slot, and its state is one small file written aside and renamed. A refusal
(signature, version, chip, size, hash, truncated, replay) is journaled as a `health` event
{"ota": "refused", "reason": ...} and leaves the running firmware as it was; a chunk ahead of the
one wanted (`gap`) is only answered, so the sender goes back to it.
"""

import asyncio
import hashlib
import json
import os
import time

from micropython import const

import device
from device.evidence import release

CHUNK = const(2048)  # per MQTT message: the device takes packets of at most 4 KiB (link.mqtt)
_SECTOR = const(4096)  # erased as the first chunk in it arrives
_TRIAL_MS = const(600000)  # an update not confirmed in 10 min: reset, the bootloader rolls back
_RESTART_PAUSE_MS = const(1000)
_SAVE_EVERY = const(16)  # the resume point is saved every 16 chunks (32 KiB): wear versus redo
MAGIC = b"KVO1"  # a chunk message on the cmd topic: MAGIC, index u32 big-endian, data


class Refused(Exception):
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason


def _save(path, state):
    temporary = path + ".new"
    with open(temporary, "w") as file:
        file.write(json.dumps(state))
    os.rename(temporary, path)  # littlefs: atomic, a cut leaves the old state or the new


def _clear(path):
    try:
        os.remove(path)
    except OSError:
        pass  # gone already (a cut after the remove)


def load_state(path):
    try:
        with open(path) as file:
            return json.loads(file.read())
    except (OSError, ValueError):
        return None


def floor(path):
    """The lowest version an update may not go below: the running one, or a higher one a
    confirmed update recorded (a slot flashed back by hand does not open a downgrade)."""
    state = load_state(path + ".floor") or {}
    running = device.VERSION
    recorded = state.get("floor", running)
    try:
        if release.version_tuple(recorded) > release.version_tuple(running):
            return recorded
    except release.ReleaseRefused:
        pass
    return running


class Update:
    def __init__(self, partitions, release_public, chip, state_path, record):
        self.partitions = partitions
        self.release_public = release_public
        self.chip = chip
        self.state_path = state_path
        self.record = record
        self.manifest = None
        self.message = None
        self.target = None
        self.next = 0
        self.chunks = 0

    def _refuse(self, reason, detail=""):
        """Journal the refusal; the Refused for the caller to raise."""
        self.record("health", None, {"ota": "refused", "reason": reason,
                                     "detail": str(detail)[:48]})
        return Refused(reason, str(detail))

    def offer(self, message):
        """Check a release manifest and get ready for its image; the chunk to send next."""
        try:
            manifest = release.parse(message, self.release_public, floor(self.state_path),
                                     self.chip)
        except release.ReleaseRefused as error:
            raise self._refuse(error.reason, error.detail)
        try:
            target = self.partitions(self.partitions.RUNNING).get_next_update()
        except OSError:  # a single-app table (a board flashed before its file had the OTA
            # one, with MicroPython's stock table): no slot to write until `kvitto flash` again
            raise self._refuse("slot", "no second app slot in the partition table")
        capacity = target.ioctl(4, 0) * target.ioctl(5, 0)
        if manifest.size > capacity:
            raise self._refuse("size", "%d bytes, the slot holds %d" % (manifest.size, capacity))
        self.manifest, self.message, self.target = manifest, bytes(message), target
        self.chunks = (manifest.size + CHUNK - 1) // CHUNK
        self.next = 0
        state = load_state(self.state_path)
        if (state and state.get("sha256") == manifest.sha256.hex()
                and state.get("slot") == target.info()[4] and "next" in state):
            self.next = min(state["next"], self.chunks)  # a transfer cut short: go on
        else:
            _save(self.state_path, {"sha256": manifest.sha256.hex(), "slot": target.info()[4],
                                    "version": manifest.version, "next": 0})
        return self.next

    def chunk(self, index, data):
        """Write chunk `index`; the chunk wanted next. A chunk already written (a resend, a
        replay) is not written again."""
        target = self.target
        if self.manifest is None or target is None:
            raise self._refuse("order", "chunk before an offer")
        if index < self.next:
            raise self._refuse("replay", "chunk %d again" % index)
        if index > self.next:
            # a chunk lost on the way, or sent past a restart: the sender goes back to `next`
            # (not journaled: a resync would write a window of them)
            raise Refused("gap", "chunk %d, expected %d" % (index, self.next))
        last = index == self.chunks - 1
        expected = self.manifest.size - index * CHUNK if last else CHUNK
        if index >= self.chunks or len(data) != expected:
            raise self._refuse("size", "chunk %d of %d bytes" % (index, len(data)))
        block_size = target.ioctl(5, 0)
        address = index * CHUNK
        if address % _SECTOR == 0:
            target.ioctl(6, address // block_size)  # erase: the sector's old content goes
        target.writeblocks(address // block_size, data, address % block_size)
        self.next = index + 1
        if self.next % _SAVE_EVERY == 0 or self.next == self.chunks:
            state = load_state(self.state_path) or {}
            state["next"] = self.next
            _save(self.state_path, state)
        return self.next

    def finish(self):
        """Read the written image back, check its size and SHA-256 against the signed manifest
        and boot it on trial. The caller resets the board afterwards."""
        target = self.target
        if self.manifest is None or target is None:
            raise self._refuse("order", "finish before an offer")
        if self.next < self.chunks:
            raise self._refuse("truncated", "%d of %d chunks" % (self.next, self.chunks))
        digest = release.Digest(self.manifest)
        buffer = bytearray(CHUNK)
        block_size = target.ioctl(5, 0)
        for index in range(self.chunks):
            address = index * CHUNK
            target.readblocks(address // block_size, buffer, address % block_size)
            size = min(CHUNK, self.manifest.size - address)
            digest.update(memoryview(buffer)[:size])
        try:
            digest.verify()
        except release.ReleaseRefused as error:
            _clear(self.state_path)  # start over: the slot's content is not the image
            raise self._refuse(error.reason, error.detail)
        _save(self.state_path, {"trial": self.manifest.version, "slot": target.info()[4],
                                "from": device.VERSION})
        try:
            target.set_boot()
        except OSError as error:
            _clear(self.state_path)
            raise self._refuse("boot", str(error))
        self.record("health", None, {"ota": "installed", "fw": self.manifest.version})
        return self.manifest.version


class Trial:
    """A boot after an update: the new firmware on trial, or the old one after a rollback."""

    def __init__(self, partitions, state_path, record, state):
        self.partitions = partitions
        self.state_path = state_path
        self.record = record
        self.version = state["trial"]
        self.slot = state["slot"]
        self.done = False

    @classmethod
    def at_boot(cls, partitions, state_path, record):
        """None when no update waits for judgement; else a Trial to `confirm` (the new
        firmware runs) or finished already (the bootloader rolled back: journaled here)."""
        state = load_state(state_path)
        if not state or "trial" not in state:
            return None
        trial = cls(partitions, state_path, record, state)
        running = partitions(partitions.RUNNING).info()[4]
        if running != trial.slot:
            record("health", None, {"ota": "rolled-back", "fw": device.VERSION,
                                    "refused": trial.version})
            _clear(state_path)
            trial.done = True
        return trial

    def judge(self, app):
        """The updated firmware keeps itself only once its self-test passes (reader running,
        link up, this boot's first event journaled, sent and acknowledged by the collector);
        a trial that does not get there in _TRIAL_MS resets the board and the bootloader rolls
        back to the firmware before. Called by the app's supervisor while on trial."""
        reader = app.reader
        reader_ok = "reader" not in app.stale_ms or (reader is not None and reader.ready)
        link = app.link
        if (reader_ok and link is not None and link.client.connected
                and app.journal.acked >= app._boot_seq):
            self.confirm()
            app.trial = None
            device.forget("device.link.ota")
        elif time.ticks_diff(app.clock.ticks(), app._trial_since) > _TRIAL_MS:
            app.log("update on trial failed its self-test: reset, the bootloader rolls back")
            app.hal.reset()

    def confirm(self):
        """Self-test passed and the collector acknowledged this boot's first event: keep it."""
        if self.done:
            return
        self.partitions.mark_app_valid_cancel_rollback()
        _save(self.state_path + ".floor", {"floor": self.version})
        _clear(self.state_path)
        self.record("health", None, {"ota": "valid", "fw": self.version})
        self.done = True


def sha256_of(partition, size):
    """SHA-256 of the first `size` bytes of a partition (the bench and tests compare slots)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    block_size = partition.ioctl(5, 0)
    offset = 0
    while offset < size:
        partition.readblocks(offset // block_size, buffer, offset % block_size)
        digest.update(memoryview(buffer)[:min(CHUNK, size - offset)])
        offset += CHUNK
    return digest.digest()


# -- the app's side of an update: its `ota` command and the chunks after it -----------------


async def offer(app, x):
    """An `ota` command: check the manifest, get ready (or resume); say the chunk wanted, or
    why not, on the state topic (`ota N`, `ota refused R`; a refusal is journaled too)."""
    update = app.update
    if update is None:
        update = Update(app.hal.partitions(), app.settings.get("release_public_key"),
                        app.board["chip"], app._ota_state, app.record)
    try:
        wanted = update.offer(x["manifest"])
    except Refused as error:
        await say(app, "ota refused " + error.reason)
        return
    app.update = update
    await say(app, "ota %d" % wanted)


async def take_chunk(app, message):
    """One chunk message (MAGIC, index, data): written, acknowledged; the last one finishes
    the update and restarts the board on trial."""
    update = app.update
    index = int.from_bytes(message[4:8], "big")
    try:
        wanted = update.chunk(index, memoryview(message)[8:])
    except Refused as error:
        if error.reason not in ("replay", "gap"):  # out of order: the sender resyncs to next
            app.update = None
        await say(app, "ota refused %s %d" % (error.reason, update.next))
        return
    if wanted < update.chunks:
        await say(app, "ota %d" % wanted)  # acknowledged chunk by chunk
        return
    app.update = None
    try:
        version = update.finish()
    except Refused as error:
        await say(app, "ota refused " + error.reason)
        return
    await say(app, "ota installed " + version)
    await asyncio.sleep_ms(_RESTART_PAUSE_MS)  # the state line goes out first
    app.journal.close()
    app.hal.reset()  # the bootloader starts the new image on trial


async def say(app, text):
    link = app.link
    if link is not None:
        try:
            await link.say(text)
        except Exception as error:
            app.log("state topic: %r" % (error,))
