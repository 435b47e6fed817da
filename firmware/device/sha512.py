"""SHA-512 (FIPS 180-4 §6.4) in pure MicroPython: the port's hashlib lacks it and Ed25519 needs it.

    from device.sha512 import sha512
    h = sha512(b"abc"); h.update(b"def")
    digest = h.digest()   # 64 bytes; the object stays usable
"""

import struct

from micropython import const  # CPython runs this module with a stand-in (tests/signing_support.py)


_BLOCK = const(128)
_MASK = const(0xFFFFFFFFFFFFFFFF)

# FIPS 180-4 §4.2.3: first 64 bits of the fractional parts of the cube roots of the first 80 primes.
_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)

# FIPS 180-4 §5.3.5: initial hash value.
_H0 = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)


class sha512:
    """hashlib-style SHA-512: update(), digest(), hexdigest(), copy(). `schedule`: see __init__."""

    digest_size = 64
    block_size = 128

    def __init__(self, data=b"", schedule=None):
        self._h: list = list(_H0)
        self._buffer = bytearray(_BLOCK)  # one block, reused for every compression
        self._fill = 0
        self._length = 0
        # The message schedule, allocated once: scratch space that every compression rewrites,
        # so hashes that never run interleaved may share one list of 80 (`schedule`).
        self._w = schedule or [0] * 80
        self._last = b""
        if data:
            self.update(data)

    def copy(self, _share_schedule=False):
        other = sha512(b"", self._w if _share_schedule else None)
        other._h = list(self._h)
        other._buffer[:] = self._buffer
        other._fill = self._fill
        other._length = self._length
        return other

    def update(self, data):
        for _ in self._absorb(data):
            pass

    def update_steps(self, data):
        """update() as a generator for asyncio: yields twice in the message schedule and after
        every 20 rounds of each block, so no slice holds more than a fifth of a compression."""
        yield from self._absorb(data)

    def _absorb(self, data):
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
        # The padded copy borrows this object's schedule (80 words, held until the next
        # compression): this one compresses nothing while its own digest is being computed.
        final = self.copy(True)
        bits = self._length * 8
        # FIPS 180-4 §5.1.2: a 1 bit, zeros, then the length as a 128-bit big-endian integer.
        pad = (_BLOCK - 16 - 1 - self._fill) % _BLOCK
        yield from final._absorb(b"\x80" + bytes(pad) + bits.to_bytes(16, "big"))
        self._last = struct.pack(">8Q", *final._h)
        return self._last

    def hexdigest(self):
        return "".join("%02x" % byte for byte in self.digest())

    def _compress(self, block):
        # A generator (see update_steps). FIPS 180-4 §6.4.2. Rotations use a doubled word (x | x << 64): ROTR^n(x) is then
        # (xx >> n) & mask, three shifts and one mask per Σ instead of six shifts and three ors.
        # Ch and Maj in their 3- and 4-operation forms (g ^ (e & (f ^ g)), (a & b) | (c & (a | b))).
        w = self._w
        words = struct.unpack(">16Q", block)
        for t in range(16):
            w[t] = words[t]
        mask = _MASK
        for t in range(16, 80):
            x = w[t - 15]
            xx = x | (x << 64)
            s0 = ((xx >> 1) ^ (xx >> 8)) & mask ^ (x >> 7)
            x = w[t - 2]
            xx = x | (x << 64)
            s1 = ((xx >> 19) ^ (xx >> 61)) & mask ^ (x >> 6)
            w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & mask
            if t == 47:
                yield
        yield
        h = self._h
        a, b, c, d, e, f, g, hh = h
        k = _K
        for t in range(80):
            ee = e | (e << 64)
            t1 = hh + (((ee >> 14) ^ (ee >> 18) ^ (ee >> 41)) & mask) + (g ^ (e & (f ^ g))) + k[t] + w[t]
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
            if t % 20 == 19:
                yield
        h[0] = (h[0] + a) & mask
        h[1] = (h[1] + b) & mask
        h[2] = (h[2] + c) & mask
        h[3] = (h[3] + d) & mask
        h[4] = (h[4] + e) & mask
        h[5] = (h[5] + f) & mask
        h[6] = (h[6] + g) & mask
        h[7] = (h[7] + hh) & mask
