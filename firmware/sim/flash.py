"""A file-backed NOR flash block device for the unix port, with power loss on demand.

    bdev = mount("/tmp/board.img", "/flash")        # formats a blank image, mounts VfsLfs2
    bdev.tear_after(1000)                           # power fails 1000 programmed bytes from now
    print(bdev.erases_total, bdev.programmed)       # wear and traffic counters

Flash semantics, as on the ESP32's SPI NOR flash: an erase sets a whole block to 0xFF, a program
can only clear bits (the stored byte becomes old AND new), so writing without erasing first
garbles data instead of replacing it (counted in `overprograms`; littlefs should never do it).
The protocol is MicroPython's extended block device (docs: "Block devices", simple and extended
interface): readblocks/writeblocks with a byte offset, ioctl 1-6, erase by ioctl(6, block).

Power loss: after `tear_after(n)` the device programs exactly n more bytes, the write in progress
stops part-way (optionally leaving the next byte half-programmed: some of its bits cleared, as
when the charge pump dies mid-byte) and raises `PowerLoss`; every later operation fails without
touching the image (it answers -EIO). The caller drops the filesystem object, builds a new
device on the same file and mounts again: that is a reboot after a power cut. Code that closes
files on its way out (`with`) may see OSError(EIO) from the dead device instead: `dead` tells.
"""

import os

import vfs
from micropython import const

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_ERASE = const(6)
_EIO = const(-5)  # the block device protocol reports errors as negative errno values


class FlashError(Exception):
    """Base of this device's errors."""


class PowerLoss(FlashError):
    """The simulated supply failed: nothing more reaches the flash."""


class FileBlockDevice:
    """NOR flash in a file: `block_count` blocks of `block_size` bytes."""

    def __init__(self, path, block_size=4096, block_count=256, seed=1):
        self.path = path
        self.block_size = block_size
        self.block_count = block_count
        size = block_size * block_count
        try:
            existing = os.stat(path)[6]
        except OSError:
            existing = -1
        self.created = existing < 0
        if existing < size:
            # A new or short image is erased flash: all 0xFF.
            with open(path, "ab") as f:
                blank = b"\xff" * block_size
                for _ in range(max(0, existing) // block_size, block_count):
                    f.write(blank)
        self._file = open(path, "r+b")
        self._scratch = bytearray(block_size)  # old contents for program (AND) checks
        self._blank = b"\xff" * block_size
        self.erases = [0] * block_count
        self.erases_total = 0
        self.programmed = 0
        self.program_calls = 0
        self.overprograms = 0
        self._budget = -1  # bytes that may still be programmed; -1 = no tear point
        self._garble = True
        self._rng = seed or 1
        self.dead = False

    # ---- power loss -----------------------------------------------------------------------

    def tear_after(self, nbytes, garble=True):
        """Lose power after `nbytes` more programmed bytes (0 = the very next program)."""
        self._budget = nbytes
        self._garble = garble

    def _random_byte(self):
        # xorshift32: a deterministic "random" partial program for reproducible tests.
        x = self._rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        return x & 0xFF

    def power_off(self):
        """Cut the power between two operations (a reboot without a clean shutdown)."""
        self.dead = True

    # ---- block device protocol ------------------------------------------------------------

    # Once dead, every operation answers -EIO without raising: only the write that tore raises
    # PowerLoss (the CPU stops there). Later calls come from objects of the dead filesystem,
    # e.g. a file closed by the garbage collector with the heap locked, where raising would
    # itself fail; they must not reach the image either.

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            return _EIO
        f = self._file
        f.seek(block * self.block_size + offset)
        f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if self.dead:
            return _EIO
        if offset is None:
            # Simple interface: whole blocks, erase implied.
            for i in range(len(buf) // self.block_size):
                self._erase(block + i)
            offset = 0
        self._program(block * self.block_size + offset, buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_ERASE:
            if self.dead:
                return _EIO
            self._erase(arg)
            return 0
        if op == _IOCTL_SYNC:
            if self.dead:
                return _EIO
            self._file.flush()
            return 0
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT:
            return 0
        return None

    # ---- flash semantics ------------------------------------------------------------------

    def _erase(self, block):
        if block < 0 or block >= self.block_count:
            raise FlashError("erase of block %d outside 0..%d" % (block, self.block_count - 1))
        f = self._file
        f.seek(block * self.block_size)
        f.write(self._blank)
        self.erases[block] += 1
        self.erases_total += 1

    def _program(self, address, data):
        length = len(data)
        if address < 0 or address + length > self.block_size * self.block_count:
            raise FlashError("program outside the device")
        torn = False
        if self._budget >= 0 and length > self._budget:
            length = self._budget
            torn = True
        f = self._file
        old = memoryview(self._scratch)
        chunk = 0
        while chunk < length:
            n = min(length - chunk, self.block_size)
            f.seek(address + chunk)
            f.readinto(old[:n])
            part = memoryview(data)[chunk : chunk + n]
            if old[:n] == self._blank[:n]:
                new = part  # programming erased flash: the common case
            else:
                # NOR: a program only clears bits.
                new = bytearray(n)
                bad = False
                for i in range(n):
                    value = old[i] & part[i]
                    new[i] = value
                    if value != part[i]:
                        bad = True
                if bad:
                    self.overprograms += 1
            f.seek(address + chunk)
            f.write(new)
            chunk += n
        self.programmed += length
        self.program_calls += 1
        if self._budget >= 0:
            self._budget -= length
        if torn:
            if self._garble and length < len(data):
                # The byte being programmed when power failed: some of its 0-bits made it.
                position = address + length
                f.seek(position)
                f.readinto(old[:1])
                target = data[length]
                half = target | (self._random_byte() & ~target & 0xFF)
                f.seek(position)
                f.write(bytes((old[0] & half,)))
            f.flush()
            self.dead = True
            raise PowerLoss("power lost after %d bytes" % self.programmed)

    def close(self):
        self._file.close()


def is_blank(path, block_size=4096, blocks=2):
    """True when the first blocks of the image are erased (a fresh board)."""
    try:
        with open(path, "rb") as f:
            for _ in range(blocks):
                if f.read(block_size) != b"\xff" * block_size:
                    return False
    except OSError:
        return True
    return True


def mount(path, mount_point="/flash", block_size=4096, block_count=256, format=False, **kw):
    """Mount the image at `mount_point` with littlefs v2, formatting only a blank image (or
    when asked): a mount failure on a used image is an error to see, not to paper over."""
    blank = is_blank(path, block_size)
    bdev = FileBlockDevice(path, block_size, block_count, **kw)
    if format or blank:
        vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev)
    vfs.mount(fs, mount_point)
    return bdev


def unmount(mount_point="/flash"):
    """Forget the mounted filesystem (after a PowerLoss nothing is written on the way out)."""
    try:
        vfs.umount(mount_point)
    except OSError:
        pass  # not mounted
