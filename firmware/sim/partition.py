"""`esp32.Partition` for the unix port: two OTA app slots, otadata and ESP-IDF's bootloader
rules for them, so the firmware's update code (device.link.ota) runs unchanged on a virtual
board and power cuts can be played at every step (issue #22).

    from sim import partition
    partition.attach(FileBlockDevice(path, 4096, count), table)   # table: board["partitions"]
    partition.boot()                           # the bootloader: picks the slot, may roll back
    Partition = partition.Partition            # what esp32.Partition is on a board
    target = Partition(Partition.RUNNING).get_next_update()
    target.writeblocks(0, block); target.set_boot(); partition.boot()
    Partition.mark_app_valid_cancel_rollback()

What it keeps from ESP-IDF (v5, CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, as MicroPython's OTA
builds set it; app_update/esp_ota_ops.c and bootloader_support/bootloader_utility.c):

- otadata is two flash sectors, each one `esp_ota_select_entry_t` {ota_seq u32, seq_label[20],
  ota_state u32, crc u32 = CRC-32 of ota_seq}; the valid entry with the highest ota_seq names
  the boot slot ((ota_seq - 1) % slots). Blank otadata boots ota_0. An entry is rewritten by
  erasing its sector and programming it, so a power cut leaves the other entry in charge.
- set_boot() checks the image header (first byte 0xE9, esp_image_verify) and writes the next
  ota_seq with state NEW into the sector not holding the current one.
- The bootloader turns NEW into PENDING_VERIFY and boots it; finding PENDING_VERIFY (the app
  was reset before mark_app_valid_cancel_rollback) it marks the entry ABORTED and boots the
  previous slot: the rollback. ABORTED and INVALID entries are never booted.

The slots and otadata live on their own block device (sim.flash.FileBlockDevice: NOR rules and
power loss on demand), apart from the littlefs image, as partitions are apart on a board. The
offsets are the table's, less the first partition's, so a 64 KiB test table is a 64 KiB file.
A simulated image starts like an ESP-IDF one (0xE9) and names its version on its first line,
`b"\\xe9KVSIM 0.2.0\\n"`: the sim boots "into" it by announcing that version (`running_version`).
"""

import struct

from micropython import const

try:
    from binascii import crc32
except ImportError:  # the journal's soft CRC, for a port built without binascii.crc32
    from device.evidence.journal import _crc as crc32  # type: ignore

_SECTOR = const(4096)
_ENTRY = "<I20sII"  # ota_seq, seq_label, ota_state, crc
_ENTRY_BYTES = const(32)
_NEW = const(0)
_PENDING_VERIFY = const(1)
_VALID = const(2)
_INVALID = const(3)
_ABORTED = const(4)
_UNDEFINED = const(0xFFFFFFFF)
_IMAGE_MAGIC = const(0xE9)  # esp_image_header_t.magic
_SUBTYPE_OTA_0 = const(0x10)
_SUBTYPES = {"ota_0": 0x10, "ota_1": 0x11, "ota": 0x00, "nvs": 0x02, "phy": 0x01, "fat": 0x81,
             "littlefs": 0x83, "factory": 0x00}

# MicroPython's 8 MiB OTA layout (partitions-8MiB-ota.csv), as the boards' files give it; used
# when a board file has no table of its own
DEFAULT_TABLE = [
    {"name": "otadata", "type": "data", "subtype": "ota", "offset": 0xD000, "size": 0x2000},
    {"name": "ota_0", "type": "app", "subtype": "ota_0", "offset": 0x10000, "size": 0x270000},
    {"name": "ota_1", "type": "app", "subtype": "ota_1", "offset": 0x280000, "size": 0x270000},
]

_device = None  # the block device holding otadata and the app slots
_table = []  # (name, type, subtype, offset, size) from the board file, offsets from 0 on _device
_running = None  # the app partition's name the bootloader chose
states = []  # what the bootloader did at each boot: "ota_0", "ota_1 pending", "rollback"...


class PartitionError(OSError):
    """What esp32.Partition raises (OSError with ESP-IDF's reason)."""


def attach(device, table):
    """Use `device` for the partitions in `table` (board["partitions"]: name, type, subtype,
    offset, size); offsets are taken relative to the lowest of them."""
    global _device, _table, _running
    base = min(entry["offset"] for entry in table)
    _table = [(entry["name"], entry["type"], entry["subtype"], entry["offset"] - base,
               entry["size"]) for entry in table]
    _device = device
    _running = None
    del states[:]


def _apps():
    return [entry for entry in _table if entry[1] == "app"]


def _find(name):
    for entry in _table:
        if entry[0] == name:
            return entry
    raise PartitionError("ESP_ERR_NOT_FOUND: no partition %r" % name)


def _otadata():
    for entry in _table:
        if entry[1] == "data" and entry[2] == "ota":
            return entry
    raise PartitionError("ESP_ERR_NOT_FOUND: no otadata partition")


def _read(offset, length):
    buf = bytearray(length)
    block, skip = divmod(offset, _SECTOR)
    if _device.readblocks(block, buf, skip):
        raise PartitionError("EIO")
    return buf


def _entries():
    """[(sector index, ota_seq, state)] of the valid otadata entries."""
    offset = _otadata()[3]
    out = []
    for index in range(2):
        seq, _, state, crc = struct.unpack(_ENTRY, _read(offset + index * _SECTOR,
                                                          _ENTRY_BYTES))
        if seq != _UNDEFINED and crc == crc32(struct.pack("<I", seq)) & 0xFFFFFFFF:
            out.append((index, seq, state))
    return out


def _write_entry(index, seq, state):
    offset = _otadata()[3] + index * _SECTOR
    entry = struct.pack(_ENTRY, seq, b"\xff" * 20, state, crc32(struct.pack("<I", seq)))
    if _device.ioctl(6, offset // _SECTOR):  # erase the sector, then program the entry
        raise PartitionError("EIO")
    if _device.writeblocks(offset // _SECTOR, entry, 0):
        raise PartitionError("EIO")


def _bootable(entries):
    return [e for e in entries if e[2] not in (_ABORTED, _INVALID)]


def _slot_of(seq):
    return _apps()[(seq - 1) % len(_apps())][0]


def boot():
    """The second-stage bootloader at a reset: choose the app, roll back a trial that never
    confirmed itself. Returns the running partition's name."""
    global _running
    entries = _bootable(_entries())
    state = ""
    if entries:
        index, seq, status = max(entries, key=lambda e: e[1])
        if status == _PENDING_VERIFY:
            _write_entry(index, seq, _ABORTED)  # bootloader_utility.c: rollback
            entries = [e for e in entries if e[0] != index]
            state = " rollback"
            if entries:
                index, seq, status = max(entries, key=lambda e: e[1])
        elif status == _NEW:
            _write_entry(index, seq, _PENDING_VERIFY)
            state = " pending"
    name = _slot_of(seq) if entries else _apps()[0][0]
    _running = name
    states.append(name + state)
    return name


def running_version():
    """The version a simulated image in the running slot names (b"\\xe9KVSIM 0.2.0\\n"), or
    None for any other content (a blank slot: the firmware on the unix port's path runs)."""
    if _running is None:
        return None
    head = bytes(_read(_find(_running)[3], 32))
    if head[:7] != b"\xe9KVSIM ":
        return None
    return head[7:].split(b"\n")[0].decode()


class Partition:
    BOOT = const(0)
    RUNNING = const(1)
    TYPE_APP = const(0)
    TYPE_DATA = const(1)

    def __init__(self, id, block_size=4096):
        if _device is None:
            raise PartitionError("ESP_ERR_NOT_FOUND: no partitions on this board")
        if id == Partition.RUNNING:
            id = _running or _apps()[0][0]
        elif id == Partition.BOOT:
            entries = _bootable(_entries())
            id = _slot_of(max(entries, key=lambda e: e[1])[1]) if entries else _apps()[0][0]
        self._entry = _find(id)
        self.block_size = block_size

    def __repr__(self):
        return "<Partition %s>" % self._entry[0]

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        kind = "app" if type == Partition.TYPE_APP else "data"
        out = []
        for entry in _table:
            if entry[1] != kind or (label is not None and entry[0] != label):
                continue
            if subtype != 0xFF and _SUBTYPES.get(entry[2]) != subtype:
                continue
            out.append(Partition(entry[0], block_size))
        return out

    def info(self):
        name, kind, subtype, offset, size = self._entry
        return (0 if kind == "app" else 1, _SUBTYPES.get(subtype, 0xFF), offset, size, name,
                False)

    def readblocks(self, block, buf, offset=0):
        self._check(block, len(buf), offset)
        address = self._entry[3] + block * self.block_size + offset
        device_block, skip = divmod(address, _SECTOR)
        if _device.readblocks(device_block, buf, skip):
            raise PartitionError("EIO")

    def writeblocks(self, block, buf, offset=None):
        """As esp32.Partition: without `offset` the blocks are erased first."""
        self._check(block, len(buf), offset or 0)
        address = self._entry[3] + block * self.block_size + (offset or 0)
        if offset is None:
            for number in range(len(buf) // self.block_size):
                self.ioctl(6, block + number)
        device_block, skip = divmod(address, _SECTOR)
        if _device.writeblocks(device_block, buf, skip):
            raise PartitionError("EIO")

    def ioctl(self, op, arg):
        if op == 4:
            return self._entry[4] // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            for number in range(self.block_size // _SECTOR):
                sector = (self._entry[3] + arg * self.block_size) // _SECTOR + number
                if _device.ioctl(6, sector):
                    raise PartitionError("EIO")
            return 0
        return 0 if op in (1, 2, 3) else None

    def _check(self, block, length, offset):
        if block < 0 or (block * self.block_size + offset + length) > self._entry[4]:
            raise PartitionError("EINVAL: outside partition %s" % self._entry[0])

    def get_next_update(self):
        """The app slot after the running one (esp_ota_get_next_update_partition)."""
        apps = _apps()
        names = [entry[0] for entry in apps]
        here = names.index(self._entry[0]) if self._entry[0] in names else -1
        return Partition(names[(here + 1) % len(names)], self.block_size)

    def set_boot(self):
        """Boot this slot next, on trial (esp_ota_set_boot_partition: state NEW)."""
        name = self._entry[0]
        if self._entry[1] != "app":
            raise PartitionError("ESP_ERR_INVALID_ARG: %s is not an app partition" % name)
        head = bytearray(1)
        self.readblocks(0, head)
        if head[0] != _IMAGE_MAGIC:
            raise PartitionError("ESP_ERR_OTA_VALIDATE_FAILED: no app image in %s" % name)
        names = [entry[0] for entry in _apps()]
        slot = names.index(name)
        entries = _entries()
        newest = max(entries, key=lambda e: e[1]) if entries else None
        seq = newest[1] if newest else 0
        seq += 1
        while (seq - 1) % len(names) != slot:
            seq += 1
        index = 1 - newest[0] if newest else 0
        _write_entry(index, seq, _NEW)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        """The running image confirmed itself: its entry goes from PENDING_VERIFY to VALID."""
        for index, seq, state in _entries():
            if _slot_of(seq) == _running and state == _PENDING_VERIFY:
                _write_entry(index, seq, _VALID)
