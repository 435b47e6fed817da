"""SHA-512 (FIPS 180-4 §6.4) in pure MicroPython: the port's hashlib lacks it and Ed25519 needs it.

    from device.evidence.sha512 import sha512
    h = sha512(b"abc"); h.update(b"def")
    digest = h.digest()   # 64 bytes; the object stays usable (update() goes on)
"""

import struct

from micropython import const  # CPython runs this module with a stand-in (tests/signing_support.py)


_BLOCK = const(128)
_MASK = const(0xFFFFFFFFFFFFFFFF)
_WINDOW = const(16)  # message schedule words kept (see _compress)
_ROUNDS_PER_SLICE = const(14)  # 80 rounds in six slices between yields (update_steps)

# FIPS 180-4 §4.2.3: first 64 bits of the fractional parts of the cube roots of the first 80 primes,
# big-endian bytes: a tuple of 80 ints above 2**30 would be 80 heap objects (long ints) on a board,
# made at import and kept; as bytes they stay in ROM and a round unpacks one word (struct).
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)

# FIPS 180-4 §5.3.5: initial hash value, the same way.
_H0 = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


class sha512:
    """hashlib-style SHA-512: update(), digest(), and the same as generators (update_steps(),
    digest_steps()) for asyncio. `schedule`: see __init__."""

    def __init__(self, data=b"", schedule=None):
        self._h: list = list(struct.unpack(">8Q", _H0))
        self._buffer = bytearray(_BLOCK)  # one block, reused for every compression
        self._fill = 0
        self._length = 0
        # The message schedule window, allocated once: scratch space that every compression
        # rewrites, so hashes that never run interleaved may share one list of 16 (`schedule`).
        self._w = schedule or [0] * _WINDOW
        self._last = b""
        if data:
            self.update(data)

    def update(self, data):
        for _ in self.update_steps(data):
            pass

    def update_steps(self, data):
        """update() as a generator for asyncio: yields six times per block (every 14 rounds with
        their schedule words), so no slice holds more than a fifth of a compression."""
        view = memoryview(data)
        size = len(view)
        self._length += size
        buffer = self._buffer
        offset = 0
        while offset < size:
            fill = self._fill
            take = min(_BLOCK - fill, size - offset)
            buffer[fill : fill + take] = view[offset : offset + take]
            self._fill = fill + take
            offset += take
            if self._fill == _BLOCK:
                yield from self._compress(buffer)
                self._fill = 0

    def digest(self):
        for _ in self.digest_steps():
            pass
        return self._last

    def digest_steps(self):
        """digest() as a generator (the padding block is compressed in slices); returns it."""
        # The padded copy borrows this object's schedule (16 words, held until the next
        # compression): this one compresses nothing while its own digest is being computed.
        final = sha512(b"", self._w)
        final._h = list(self._h)
        final._buffer[:] = self._buffer
        final._fill = self._fill
        final._length = self._length
        bits = self._length * 8
        # FIPS 180-4 §5.1.2: a 1 bit, zeros, then the length as a 128-bit big-endian integer.
        pad = (_BLOCK - 16 - 1 - self._fill) % _BLOCK
        yield from final.update_steps(b"\x80" + bytes(pad) + bits.to_bytes(16, "big"))
        self._last = struct.pack(">8Q", *final._h)
        return self._last

    def _compress(self, block):
        # A generator (see update_steps). FIPS 180-4 §6.4.2, with the message schedule as a
        # rolling window of 16 words (W_t needs only W_t-2, W_t-7, W_t-15 and W_t-16, the word
        # it replaces): 16 long ints alive during a hash instead of 80, the bulk of a signature's
        # heap. Rotations use a doubled word (x | x << 64): ROTR^n(x) is then (xx >> n) & mask,
        # three shifts and one mask per Σ instead of six shifts and three ors. Ch and Maj in
        # their 3- and 4-operation forms (g ^ (e & (f ^ g)), (a & b) | (c & (a | b))).
        w = self._w
        h = self._h
        a, b, c, d, e, f, g, hh = h
        mask = _MASK
        k = _K
        word = struct.unpack_from
        for t in range(80):
            if t < 16:
                wt = word(">Q", block, t << 3)[0]
            else:
                x = w[(t - 15) & 15]
                xx = x | (x << 64)
                s0 = ((xx >> 1) ^ (xx >> 8)) & mask ^ (x >> 7)
                x = w[(t - 2) & 15]
                xx = x | (x << 64)
                s1 = ((xx >> 19) ^ (xx >> 61)) & mask ^ (x >> 6)
                wt = (w[t & 15] + s0 + w[(t - 7) & 15] + s1) & mask
            w[t & 15] = wt
            ee = e | (e << 64)
            t1 = (hh + (((ee >> 14) ^ (ee >> 18) ^ (ee >> 41)) & mask) + (g ^ (e & (f ^ g)))
                  + word(">Q", k, t << 3)[0] + wt)
            aa = a | (a << 64)
            t2 = (((aa >> 28) ^ (aa >> 34) ^ (aa >> 39)) & mask) + ((a & b) | (c & (a | b)))
            hh = g
            g = f
            f = e
            e = (d + t1) & mask
            d = c
            c = b
            b = a
            a = (t1 + t2) & mask
            if t % _ROUNDS_PER_SLICE == _ROUNDS_PER_SLICE - 1 or t == 79:
                yield
        for index, value in enumerate((a, b, c, d, e, f, g, hh)):
            h[index] = (h[index] + value) & mask
