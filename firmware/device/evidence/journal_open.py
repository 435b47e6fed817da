"""Opening the journal (device.evidence.journal, "On open"): the newer valid state, rolled forward
over the segments, the boot counted, the size taken from the filesystem. It runs once a boot, so
Journal loads this module for it and drops it after (device.forget): its code is not on the heap
while the device runs.

    journal_open.recover(journal, max_segments, records, crc)   # Journal.__init__ only

`records` is device.evidence.journal._records, the one reader of the segment format, and `crc`
its CRC-32, passed in so that this module does not import the journal back.
"""

import hashlib
import os
import struct

try:
    from micropython import const
except ImportError:  # CPython runs the journal too
    const = int  # type: ignore  # const(x) is x for the ints used here

_KIND_EVENT = const(0x45)  # "E", as in device.evidence.journal
_KIND_SIG = const(0x53)  # "S"
_STATE_MAGIC = b"KJS1"  # the state file, as device.evidence.journal writes it
_STATE_FORMAT = "<4sIIIII32sI"  # magic, gen, boot, next_seq, acked, lost, prev_hash, crc
_STATE_BYTES = const(60)
_MAX_SEGMENTS_CAP = const(4096)


def recover(journal, max_segments, records, crc):
    """Set `journal`'s counters from its state and segments, count this boot (durable before
    any of its events), release what was acknowledged and open the newest intact segment."""
    try:
        os.mkdir(journal.root)
    except OSError:
        pass  # exists (EEXIST); a real failure shows up on the first read or write
    state = _read_state(journal, crc)
    if state is not None:
        (journal._gen, journal.boot, journal.next_seq, journal.acked, journal.lost,
         journal.prev_hash) = state
    names = []
    for name in os.listdir(journal.root):
        if name.endswith(".seg") and len(name) == 12:
            try:
                names.append(int(name[:8]))
            except ValueError:
                pass  # not ours
    names.sort()
    high = 0
    torn = False
    last_hash = None
    for number in names:
        size, valid_end, seg_high, seg_hash, sig_high = _scan_segment(journal, number, records)
        journal._sig_high = max(journal._sig_high, sig_high)
        if seg_high > high:
            high = seg_high
            last_hash = seg_hash
        journal._numbers.append(number)
        journal._highs.append(high)
        torn = valid_end != size
        journal._active_size = size
    # Roll forward: a record in a segment is newer than any state that does not count it.
    if high >= journal.next_seq:
        journal.next_seq = high + 1
        journal.prev_hash = last_hash
    journal.boot += 1
    journal._write_state()  # the boot count is durable before any event of this boot
    if max_segments is None:
        max_segments = _size_from_filesystem(journal)
    journal.max_segments = max(2, max_segments)
    journal._release()
    if journal._numbers and not torn:
        # Append to the newest segment only if its tail is intact (FORMATS: no rewrite).
        journal._active = open(journal._path(journal._numbers[-1]), "ab")
    else:
        journal._active_size = journal.segment_bytes  # a fresh segment on the next append


def _read_state(journal, crc):
    """(gen, boot, next_seq, acked, lost, prev_hash) of the newer valid state file, or None."""
    best = None
    for slot in (0, 1):
        try:
            with open("%s/state%d" % (journal.root, slot), "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if len(raw) != _STATE_BYTES:
            continue
        fields = struct.unpack(_STATE_FORMAT, raw)
        if fields[0] != _STATE_MAGIC or fields[7] != crc(raw[: _STATE_BYTES - 4]):
            continue
        if best is None or fields[1] > best[0]:
            best = fields[1:7]
    return best


def _size_from_filesystem(journal):
    # The segments may use what is free now plus what they already hold, minus a reserve for
    # littlefs (copy-on-write needs a spare block per open file, metadata pairs compact) and the
    # other files on the partition (config, key).
    try:
        st = os.statvfs(journal.root)
    except (OSError, AttributeError):
        return 64
    block = st[0] or 4096
    per_segment = (journal.segment_bytes + block - 1) // block
    held = len(journal._numbers) * per_segment
    reserve = max(6, st[2] // 16)
    blocks = st[3] + held - reserve
    return min(_MAX_SEGMENTS_CAP, max(2, blocks // per_segment))


def _scan_segment(journal, number, records):
    """(size, valid_end, high_seq, hash_of_high_payload, highest seq signed) of one segment."""
    try:
        f, size = journal._segment(number)
    except OSError:
        return 0, 0, 0, None, 0
    high = 0
    sig_high = 0
    high_hash = None
    valid_end = 0
    with f:
        try:
            high_body = None
            for kind, seq, start, end in records(f, size, journal._window):
                valid_end = end + 4
                if kind == _KIND_EVENT and seq > high:
                    high = seq
                    high_body = start, end
                elif kind == _KIND_SIG and seq > sig_high:
                    sig_high = seq
            if high_body is not None:
                high_hash = _sha256_of(f, high_body[0], high_body[1], journal._window)
        except OSError:
            return 0, 0, 0, None, 0
    return size, valid_end, high, high_hash, sig_high


def _sha256_of(f, start, end, window):
    view = memoryview(window)
    digest = hashlib.sha256()
    f.seek(start)
    while start < end:
        chunk = view[: min(end - start, len(view))]
        if f.readinto(chunk) != len(chunk):
            raise OSError(5, "segment shrank")
        digest.update(chunk)
        start += len(chunk)
    return digest.digest()
