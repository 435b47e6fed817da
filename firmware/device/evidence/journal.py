"""Power-cut-safe, append-only event journal on the flash filesystem (DESIGN.md, Reliability).

    journal = Journal("/journal")     # boot += 1; roll forward over the segments after a cut
    seq = journal.append(payload)     # payload built with journal.next_seq, journal.prev_hash
    journal.ack(upto)                 # the collector stored everything up to `upto`: release

Layout under `root`:

- `NNNNNNNN.seg` segment files, append-only. A record is
  `A5 kind len:u16 seq:u32 body crc32:u32` (little-endian; the CRC-32 covers header and body).
  Kind `E` holds an event payload, kind `S` a 64-byte signature cached for a resend.
- `state0` / `state1`: the counters that cannot be derived from the segments (boot, acked, lost,
  and next_seq/prev_hash once their segments are released), written alternately, each with a
  generation number and a CRC, so a torn state write leaves the other one valid.

On open (device.evidence.journal_open, loaded for it and dropped after) the newer valid state is
taken and then rolled forward over the segments: an appended record always wins over a stale
state, so next_seq, the chain hash, boot, acked and lost never go backwards. A torn or corrupt tail is never returned (CRC) and never appended to (a new segment is
started). On littlefs every file is copy-on-write, so `flush()` (lfs_file_sync) is the commit
point: a record is either entirely in the file after a power cut or not at all. `ack()` releases
whole segment files (delete, never rewrite). The size is bounded by `max_segments`: acknowledged
segments are freed first; an unacknowledged event is never dropped; when no segment can be freed
the event still takes its sequence number (and advances the chain), and `lost` counts it, so the
host sees the gap and the next `health` event reports the count.

The journal stores opaque payload bytes: it knows nothing of CBOR or signatures. It runs under
MicroPython (littlefs, VfsLfs2) and under CPython (a plain directory, with fsync).
"""

import gc
import hashlib
import os
import struct

import device

try:
    from binascii import crc32 as _crc  # type: ignore  # the fallback below has its signature
except ImportError:  # a port built without binascii.crc32

    def _crc(data, crc=0):
        # IEEE 802.3 CRC-32 (reflected, polynomial 0xEDB88320), same value as binascii.crc32.
        crc ^= 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
        return crc ^ 0xFFFFFFFF


try:
    from micropython import const  # type: ignore  # CPython: the identity below
except ImportError:  # CPython runs this module too (tests/test_journal_cpython.py)

    def const(value):  # const(x) is x
        return value


_MAGIC = const(0xA5)
_MAGIC_BYTE = const(b"\xa5")  # _MAGIC, for bytearray.find
_KIND_EVENT = const(0x45)  # "E"
_KIND_SIG = const(0x53)  # "S"
_HEADER = const(8)  # magic, kind, length u16, seq u32
_OVERHEAD = const(12)  # header + crc32
_SIG_BYTES = const(64)
_SIG_RECORD = const(76)  # _OVERHEAD + _SIG_BYTES
_SIG_BUFFER = const(8)  # signatures held in RAM before they get a sync of their own
_WINDOW = const(256)  # segments are read through a window this big, never whole
_STATE_MAGIC = const(b"KJS1")  # as in device.evidence.journal_open
_STATE_FORMAT = const("<4sIIIII32s")  # magic, gen, boot, next_seq, acked, lost, prev_hash; crc
_STATE_BYTES = const(60)
_WARN_PERCENT = const(80)
_REARM_PERCENT = const(70)


class Journal:
    """See the module docstring. Attributes: boot, next_seq, prev_hash, acked, lost."""

    def __init__(self, root="/journal", segment_bytes=4096, max_segments=None):
        if segment_bytes < 512 or segment_bytes > 65536:
            raise ValueError("segment_bytes must be 512..65536")
        self.root = root.rstrip("/") or "/"
        self.segment_bytes = segment_bytes
        self.max_payload = segment_bytes - _OVERHEAD - _SIG_BUFFER * _SIG_RECORD
        # every segment read goes through it (_records), and every state write (it holds nothing
        # between calls: a reader never keeps it across a yield)
        self._window = bytearray(_WINDOW)
        self._header = bytearray(_HEADER)
        self._crc_bytes = bytearray(4)
        self._numbers = []  # segment file numbers, oldest first
        self._highs = []  # highest event seq per segment (carried over when it has none)
        self._active = None  # open file of the newest segment, or None
        self._active_size = 0
        self._next_number = 1
        # The latest _SIG_BUFFER signatures, in one block (a ring, oldest overwritten): the
        # ones not yet on flash and recent ones, answered without a flash read. Separate bytes
        # objects in a dict took four times the room.
        self._sig_ring = bytearray(_SIG_BUFFER * _SIG_BYTES)
        self._sig_seqs = [0] * _SIG_BUFFER  # event seq of each slot; 0 = empty
        self._sig_next = 0  # the slot the next signature goes to
        self._sig_unsynced = 0  # the latest this many signatures are written with the next sync
        # the highest event seq ever signed (ring or flash): a newer event has no signature to
        # look for, so publishing a fresh one opens no segment (signature())
        self._sig_high = 0
        self._warned = False
        self._lost_reported = 0
        self._gen = 0
        self.boot = 0
        self.next_seq = 1
        self.prev_hash = bytes(32)
        self.acked = 0
        self.lost = 0
        self.max_segments = 2  # from the filesystem's size unless given: journal_open
        # the newer valid state rolled forward over the segments: device.evidence.journal_open,
        # loaded for it and dropped after (it runs once a boot)
        from device.evidence import journal_open

        try:
            journal_open.recover(self, max_segments, _records, _crc)
        finally:
            device.forget("device.evidence.journal_open")

    # ---- opening and recovery -------------------------------------------------------------

    def _path(self, number):
        """The path of segment file `number`."""
        return "%s/%08d.seg" % (self.root, number)

    def _write_state(self):
        gen = self._gen + 1
        raw = memoryview(self._window)[:_STATE_BYTES]
        struct.pack_into(
            _STATE_FORMAT,
            raw,
            0,
            _STATE_MAGIC,
            gen,
            self.boot,
            self.next_seq,
            self.acked,
            self.lost,
            self.prev_hash,
        )
        struct.pack_into("<I", raw, _STATE_BYTES - 4, _crc(raw[: _STATE_BYTES - 4]))
        # Write the older slot: if this write tears, the newer one is still whole.
        with open("%s/state%d" % (self.root, gen % 2), "wb") as f:
            f.write(raw)
            _sync(f)
        self._gen = gen

    def _segment(self, number):
        """The segment file opened for reading, and its size."""
        f = open(self._path(number), "rb")
        try:
            return f, f.seek(0, 2)
        except OSError:
            f.close()
            raise

    # ---- appending ------------------------------------------------------------------------

    def append(self, payload):
        """Journal one event payload; return its sequence number once it is durable.

        When no space can be freed the event is counted in `lost` (persisted) instead: its
        sequence number is still used and the chain still advances over it."""
        length = len(payload)
        if length > self.max_payload:
            raise ValueError("payload of %d bytes exceeds %d" % (length, self.max_payload))
        seq = self.next_seq
        # the chain's next link is taken before anything is written: hashing allocates, and a
        # MemoryError after the record is on flash would leave prev_hash behind next_seq, so
        # the next event would name the wrong predecessor (a broken chain, seen under squeeze)
        digest = hashlib.sha256(payload).digest()
        stored = False
        need = _OVERHEAD + length + self._sig_unsynced * _SIG_RECORD
        # A failed write (the filesystem itself full, a flash error, the heap out of memory in
        # the middle of it) is retried once in a fresh segment, after releasing acknowledged
        # ones: the record that failed may have left a torn tail, which is never appended to.
        for _ in range(2):
            if not self._make_room(need):
                break
            try:
                self._write_sigs()
                self._write_record(_KIND_EVENT, seq, payload)
                _sync(self._active)
                stored = True
                break
            except (OSError, MemoryError):
                self._close_active()
                gc.collect()
        self.next_seq = seq + 1
        self.prev_hash = digest
        if stored:
            self._active_size += need
            self._highs[-1] = seq
            self._sig_unsynced = 0
        else:
            self.lost += 1
            self._write_state()
        return seq

    def _make_room(self, need):
        if self._active is not None and self._active_size + need <= self.segment_bytes:
            return True
        self._release()
        if len(self._numbers) >= self.max_segments:
            return False
        self._close_active()
        number = self._numbers[-1] + 1 if self._numbers else self._next_number
        self._next_number = number + 1
        try:
            self._active = open(self._path(number), "wb")
        except OSError:
            self._active = None
            return False
        self._active_size = 0
        self._numbers.append(number)
        self._highs.append(self._highs[-1] if self._highs else 0)
        return True

    def _write_record(self, kind, seq, body):
        header = self._header
        struct.pack_into("<BBHI", header, 0, _MAGIC, kind, len(body), seq)
        struct.pack_into("<I", self._crc_bytes, 0, _crc(body, _crc(header)))
        f = self._active
        if f is None:
            raise OSError(5, "no open segment")  # EIO: callers treat it as a failed write
        f.write(header)
        f.write(body)
        f.write(self._crc_bytes)

    def _write_sigs(self):
        ring = memoryview(self._sig_ring)
        for back in range(self._sig_unsynced, 0, -1):  # oldest first
            slot = (self._sig_next - back) % _SIG_BUFFER
            start = slot * _SIG_BYTES
            self._write_record(_KIND_SIG, self._sig_seqs[slot], ring[start : start + _SIG_BYTES])

    def _close_active(self):
        """Close the newest segment: the next append starts a fresh one (a closed segment
        counts as full)."""
        if self._active is not None:
            try:
                self._active.close()
            except OSError:
                pass  # the data that matters was synced record by record
            self._active = None
        self._active_size = self.segment_bytes

    # ---- signatures -----------------------------------------------------------------------

    def put_signature(self, seq, sig):
        """Cache the signature of event `seq` so a resend needs no re-signing. It becomes
        durable with the next append (or after _SIG_BUFFER of them); losing it costs only a
        re-sign, since Ed25519 is deterministic."""
        if len(sig) != _SIG_BYTES:
            raise ValueError("a signature is 64 bytes")
        # At most _SIG_BUFFER - 1 are unsynced here, so the slot taken is never one of them.
        slot = self._sig_next
        self._sig_high = max(self._sig_high, seq)
        self._sig_seqs[slot] = seq
        self._sig_ring[slot * _SIG_BYTES : (slot + 1) * _SIG_BYTES] = sig
        self._sig_next = (slot + 1) % _SIG_BUFFER
        self._sig_unsynced += 1
        if self._sig_unsynced >= _SIG_BUFFER:
            self._sync_sigs()

    def _sync_sigs(self):
        need = self._sig_unsynced * _SIG_RECORD
        if self._make_room(need):
            try:
                self._write_sigs()
                _sync(self._active)
                self._active_size += need
            except OSError:
                self._close_active()
        self._sig_unsynced = 0

    def signature(self, seq):
        """The cached signature of event `seq`, or None (then sign again)."""
        if seq < 1 or seq > self._sig_high:
            return None  # event seqs start at 1 (an empty ring slot holds 0); never signed
        for back in range(1, _SIG_BUFFER + 1):  # newest first: a re-signed event's latest
            slot = (self._sig_next - back) % _SIG_BUFFER
            if self._sig_seqs[slot] == seq:
                start = slot * _SIG_BYTES
                return bytes(self._sig_ring[start : start + _SIG_BYTES])  # copy: slots are reused
        index = self._index(seq)
        if index < 0:
            return None
        sig = None
        # A signature is written after its event: in the event's segment or the next one.
        for number in self._numbers[index : index + 2]:
            try:
                f, size = self._segment(number)
                with f:
                    for kind, rec_seq, start, end in _records(f, size, self._window):
                        if kind == _KIND_SIG and rec_seq == seq:
                            sig = _body(f, start, end)  # the last one written wins
            except OSError:
                continue
            if sig is not None:
                return sig
        return None

    # ---- reading --------------------------------------------------------------------------

    def _index(self, seq):
        """Index of the segment that holds event `seq` (by the high marks), or -1."""
        highs = self._highs
        lo, hi = 0, len(highs)
        while lo < hi:
            mid = (lo + hi) // 2
            if highs[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(highs) else -1

    def get(self, seq):
        """The payload of event `seq`, or None (acknowledged and released, lost, or unknown)."""
        index = self._index(seq)
        if index < 0:
            return None
        try:
            f, size = self._segment(self._numbers[index])
            with f:
                for kind, rec_seq, start, end in _records(f, size, self._window):
                    if kind == _KIND_EVENT and rec_seq == seq:
                        return _body(f, start, end)
        except OSError:
            pass
        return None

    def pending(self, from_seq=None):
        """Yield (seq, payload) of every journaled event not yet acknowledged, in order.

        Appends and acks may happen between yields (asyncio): each step looks the segment up
        again, so new events are included and released ones skipped."""
        # The segment is read again for each event and only that payload is kept, so the
        # publisher never holds copies of a whole backlog segment while it signs one event;
        # flash reads are cheap next to a signature.
        last = (from_seq or 1) - 1
        while True:
            last = max(last, self.acked)
            index = self._index(last + 1)
            if index < 0:
                return
            high = self._highs[index]
            found = None
            try:
                f, size = self._segment(self._numbers[index])
                with f:
                    for kind, seq, start, end in _records(f, size, self._window):
                        # Appended in order, so the first event after `last` is the next one.
                        if kind == _KIND_EVENT and seq > last:
                            found = seq, _body(f, start, end)
                            break
            except OSError:
                found = None  # released meanwhile: the next lookup moves past it
            if found is None:
                # Everything up to `high` in this segment was read (no yield between the
                # lookup and the read), so move past it even if records there failed their CRC.
                last = max(last, high)
                continue
            last = found[0]
            yield found

    # ---- acknowledgement and size ---------------------------------------------------------

    def ack(self, upto):
        """The collector stored every event up to `upto`: release their segments."""
        upto = min(upto, self.next_seq - 1)
        if upto <= self.acked:
            return
        self.acked = upto
        self._write_state()  # before any delete: a cut in between only leaves extra files
        self._release()

    def _release(self):
        # Acknowledgements are contiguous, so releasable segments are always a prefix.
        while self._numbers and self._highs[0] <= self.acked:
            if len(self._numbers) == 1:
                self._close_active()
            try:
                os.remove(self._path(self._numbers[0]))
            except OSError:
                pass  # already gone (a cut after an earlier delete)
            self._numbers.pop(0)
            self._highs.pop(0)

    def fill(self):
        """Percent of the journal's capacity in use (closed segments count as full)."""
        count = len(self._numbers)
        if not count:
            return 0
        used = (count - 1) * self.segment_bytes + min(self._active_size, self.segment_bytes)
        return used * 100 // (self.max_segments * self.segment_bytes)

    def health_due(self):
        """True once when the journal reaches 80 % full, and once when events were lost and
        there is room again to journal a `health` event saying so (x: `health()`)."""
        percent = self.fill()
        due = False
        if percent >= _WARN_PERCENT and not self._warned:
            self._warned = True
            due = True
        elif percent < _REARM_PERCENT:
            self._warned = False
        if self.lost > self._lost_reported:
            # room for that event: in the open segment, or a segment the acks can free
            room = self._active is not None and self._active_size + 512 <= self.segment_bytes
            releasable = 0
            while releasable < len(self._highs) and self._highs[releasable] <= self.acked:
                releasable += 1
            if room or len(self._numbers) - releasable < self.max_segments:
                self._lost_reported = self.lost
                due = True
        return due

    def health(self):
        """The fields of a `health` event (FORMATS.md §1: a free-form small map)."""
        return {"fill": self.fill(), "lost": self.lost, "pending": self.next_seq - 1 - self.acked}

    def close(self):
        """Write cached signatures and close the segment file (a cut instead loses nothing
        but those signatures)."""
        if self._sig_unsynced:
            self._sync_sigs()
        self._close_active()


def _records(f, size, window):
    """Yield (kind, seq, body_start, body_end) of every record with a valid CRC in the first
    `size` bytes of the open segment file `f`, read through `window` (a reused bytearray).

    A record that fails its CRC is skipped by searching for the next magic byte whose record
    checks out, so one damaged record does not hide the ones after it; nothing that fails the
    CRC is ever returned. The caller may read the file between yields (`_body`): every read
    here seeks first."""
    view = memoryview(window)
    header = view[:_HEADER]
    offset = 0
    while offset + _OVERHEAD <= size:
        f.seek(offset)
        if f.readinto(header) == _HEADER and window[0] == _MAGIC:
            kind = window[1]
            length = window[2] | (window[3] << 8)
            end = offset + _HEADER + length
            if (kind == _KIND_EVENT or kind == _KIND_SIG) and end + 4 <= size:
                seq = window[4] | (window[5] << 8) | (window[6] << 16) | (window[7] << 24)
                crc = _crc(header)
                position = offset + _HEADER
                while position < end:  # the body, a window at a time
                    chunk = view[: min(end - position, _WINDOW)]
                    if f.readinto(chunk) != len(chunk):
                        break
                    crc = _crc(chunk, crc)
                    position += len(chunk)
                stored = view[:4]
                if position == end and f.readinto(stored) == 4:
                    if crc == window[0] | (window[1] << 8) | (window[2] << 16) | (window[3] << 24):
                        yield kind, seq, offset + _HEADER, end
                        offset = end + 4
                        continue
        offset = _next_magic(f, offset + 1, size, window)


def _next_magic(f, offset, size, window):
    # The first offset >= `offset` holding the magic byte, or `size`.
    while offset < size:
        f.seek(offset)
        count = f.readinto(window) or 0
        if not count:
            break
        found = window.find(_MAGIC_BYTE, 0, count)
        if found >= 0:
            return offset + found
        offset += count
    return size


def _body(f, start, end):
    """A record body as new bytes (its CRC was just checked by _records)."""
    f.seek(start)
    body = f.read(end - start)
    if len(body) != end - start:
        raise OSError(5, "segment shrank")  # EIO: callers treat it as an unreadable segment
    return body


def _sync(f):
    # littlefs: flush() is lfs_file_sync, the commit point; until it returns the old version
    # of the file is what a reboot sees (littlefs DESIGN.md, "Metadata pairs" and "CTZ
    # skip-lists": data is copy-on-write, the directory commit is atomic and CRC'd).
    # CPython on a plain directory: flush, then fsync.
    f.flush()
    fileno = getattr(f, "fileno", None)
    fsync = getattr(os, "fsync", None)
    if fileno is not None and fsync is not None:
        fsync(fileno())
