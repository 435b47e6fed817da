"""Ed25519 signatures (RFC 8032 §5.1) in pure MicroPython, fast enough for a door device.

    from device.evidence import ed25519
    signature = ed25519.sign(secret, b"message")          # secret: 32 bytes from the RNG
    assert ed25519.verify(ed25519.public_key(secret), b"message", signature)

Speed: a fixed-base comb (8 teeth, spacing 32) over a 16,320-byte table of affine multiples of
the base point (device/evidence/ed25519_table.py) makes [r]B cost 31 doublings and 32 mixed
additions in extended coordinates (Hisil-Wong-Carter-Dawson 2008). The public key is cached per
secret. Where the table lives: frozen into the firmware or in ROMFS, the bytes constant is used
in place; on a stock firmware an imported .mpy would copy its 16 KiB into the heap, so
`kvitto image` writes the table beside this module as ed25519_table.bin as well, and it is read
from there 64 bytes at a time (32 reads a signature).
`Signer.sign_steps(msg)` is a generator that yields between slices of work, so an asyncio loop
keeps serving taps and buttons while a signature runs. Not constant-time: MicroPython integers
are not; the key is the device's own and timing is not observable from the network.
"""

from device.evidence.sha512 import sha512

from micropython import const  # CPython runs this module with a stand-in (tests/signing_support.py)


# RFC 8032 §5.1: the field, the group order, the curve constant d and the base point B.
_P = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED)
_L = const(0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED)
_D = const(0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3)
_D2 = const(0x2406D9DC56DFFCE7198E80F2EEF3D13000E0149A8283B156EBD69B9426B2F159)
_SQRT_M1 = const(0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0)
_MASK255 = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF)
_TEETH = const(8)
_SPACING = const(32)
_ROUNDS_PER_STEP = const(4)  # comb rounds between yields: a few ms on an ESP32 at 240 MHz
_SCHEDULE_WORDS = const(16)  # device.evidence.sha512's message schedule window
_KEY_ENTRY = const(128)  # bytes per point of a _key_table: four 32-byte numbers
_KEY_TEETH = const(3)  # a _key_table's comb: 7 points (896 bytes), spacing _KEY_SPACING
_KEY_SPACING = const(86)  # 3 x 86 >= 253 bits of k


_TABLE_FILE = "/ed25519_table.bin"  # beside this module, in an image of .mpy files
_table = []  # [file, 64-byte buffer] or [memoryview of the bytes constant]: set on first use


def _table_point(index):
    # Entry index (1..255): affine x, y -> the cached form (Y+X, Y-X, 2Z, 2d·T) with Z = 1.
    if not _table:
        folder = globals().get("__file__", "").rpartition("/")[0]
        try:
            _table.extend((open(folder + _TABLE_FILE, "rb"), memoryview(bytearray(64))))
        except OSError:  # frozen, ROMFS or source: the constant stays where the code is
            from device.evidence.ed25519_table import TABLE

            _table.append(memoryview(TABLE))  # slices of a memoryview do not copy the entries
    offset = (index - 1) * 64
    if len(_table) == 2:
        table_file, entry = _table
        table_file.seek(offset)
        table_file.readinto(entry)
        offset = 0
    else:
        entry = _table[0]
    x = int.from_bytes(entry[offset : offset + 32], "little")
    y = int.from_bytes(entry[offset + 32 : offset + 64], "little")
    return y + x, y - x, 2, x * y % _P * _D2 % _P


def _double(point):
    # dbl-2008-hwcd with a = -1 (signs folded so no negation is needed).
    p = _P
    x, y, z, _ = point
    a = x * x % p
    b = y * y % p
    c = 2 * z * z % p
    h = a + b
    e = x + y
    e = h - e * e % p
    g = a - b
    f = c + g
    return e * f % p, g * h % p, f * g % p, e * h % p


def _add(point, cached):
    # add-2008-hwcd-3 (RFC 8032 §5.1.4 point_add) of an extended point and a cached one,
    # (Y+X, Y-X, 2Z, 2d·T): a table entry, or _cached() of any point.
    p = _P
    x, y, z, t = point
    ypx, ymx, z2, t2d = cached
    a = (y - x) * ymx % p
    b = (y + x) * ypx % p
    c = t * t2d % p
    d = z * z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % p, g * h % p, f * g % p, e * h % p


def _cached(point):
    x, y, z, t = point
    return (y + x) % _P, (y - x) % _P, 2 * z % _P, t * _D2 % _P


def _comb_steps(s, k=0, key_table=None):
    """[s]B, or [s]B + [k]Q given Q's _key_table, as extended (X, Y, Z, T); a generator yielding
    every few rounds. B's comb (8 teeth, spacing 32: entry bit j is bit 32j + i of s) adds in
    the last 32 of the 86 rounds Q's comb (3 teeth, spacing 86: bit 86j + i of k) needs: one
    chain of doublings for both. [r]B alone: 31 doublings and 32 mixed additions
    (Hisil-Wong-Carter-Dawson 2008)."""
    s_bytes = s.to_bytes(32, "little")
    k_bytes = k.to_bytes(33, "little")  # bit 86 * 2 + 85 = 257 is in the 33rd byte
    point = (0, 1, 1, 0)
    for i in range(_KEY_SPACING - 1 if key_table else _SPACING - 1, -1, -1):
        point = _double(point)
        byte = i >> 3
        bit = i & 7
        if key_table:
            index = 0
            for tooth in range(_KEY_TEETH):
                at = _KEY_SPACING * tooth + i
                index |= ((k_bytes[at >> 3] >> (at & 7)) & 1) << tooth
            if index:  # entry index of the _key_table (from 1): four 32-byte numbers
                at = (index - 1) * _KEY_ENTRY
                point = _add(point, [
                    int.from_bytes(key_table[at + n : at + n + 32], "little")
                    for n in (0, 32, 64, 96)
                ])
        if i < _SPACING:
            index = 0
            for tooth in range(_TEETH):
                index |= ((s_bytes[4 * tooth + byte] >> bit) & 1) << tooth
            if index:
                point = _add(point, _table_point(index))
        if i % _ROUNDS_PER_STEP == 0:
            yield
    return point


def _run(steps):
    # Drive a step generator to its end and return its value (StopIteration.value).
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _invert_steps(z):
    """z^(p-2) mod p (Fermat), as a generator yielding between runs of at most 50 squarings:
    one pow() call would be one long slice. The addition chain of curve25519's ref10 (254
    squarings, 11 multiplications)."""
    p = _P
    z2 = z * z % p
    t = z2 * z2 % p
    t = t * t % p
    z9 = t * z % p
    z11 = z9 * z2 % p
    z_5_0 = z11 * z11 % p * z9 % p  # z^(2^5 - 1)
    z_10_0 = _square_times(z_5_0, 5) * z_5_0 % p
    z_20_0 = _square_times(z_10_0, 10) * z_10_0 % p
    z_40_0 = _square_times(z_20_0, 20) * z_20_0 % p
    z_50_0 = _square_times(z_40_0, 10) * z_10_0 % p
    yield
    z_100_0 = _square_times(z_50_0, 50) * z_50_0 % p
    yield
    t = _square_times(z_100_0, 50)
    yield
    z_200_0 = _square_times(t, 50) * z_100_0 % p
    yield
    t = _square_times(z_200_0, 50) * z_50_0 % p  # z^(2^250 - 1)
    yield
    return _square_times(t, 5) * z11 % p  # z^(2^255 - 21) = z^(p - 2)


def _square_times(value, count):
    p = _P
    for _ in range(count):
        value = value * value % p
    return value


def _encode_point_steps(point):
    # RFC 8032 §5.1.2: y with the low bit of x in bit 255.
    x, y, z, _ = point
    z_inverse = yield from _invert_steps(z)
    x = x * z_inverse % _P
    y = y * z_inverse % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode_point(encoded):
    # RFC 8032 §5.1.3; None for a string that is not a point.
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= _MASK255
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    v3 = v * v % _P * v % _P
    x = u * v3 % _P * pow(u * v3 % _P * v3 % _P * v % _P, (_P - 5) // 8, _P) % _P
    check = v * x % _P * x % _P
    if check == (-u) % _P:
        x = x * _SQRT_M1 % _P
    elif check != u:
        return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x, y, 1, x * y % _P


def _key_table(point):
    """A 3-tooth comb (spacing 86) for a variable point: entry j = sum of bit_k(j)·2^(86k)·point,
    in cached form (Y+X, Y-X, 2Z, 2d·T). 7 points (entries 1..7), built once per key (172
    doublings), kept as 32-byte little-endian numbers in one 896-byte block: as long ints they
    took three times the room, for as long as commands come. Four teeth would save a
    verification 22 doublings for twice the block (issue #26: a verification per ack is rare,
    the heap is not)."""
    powers = [point]
    for _ in range(_KEY_TEETH - 1):
        current = powers[-1]
        for _ in range(_KEY_SPACING):
            current = _double(current)
        powers.append(current)
    table = bytearray(7 * _KEY_ENTRY)
    sums: list = [None] * 8
    for index in range(1, 8):
        low = index & -index  # lowest set bit: entry = entry without it + that power
        power = powers[(1, 2, 4).index(low)]
        rest = index ^ low
        sums[index] = power if rest == 0 else _add(sums[rest], _cached(power))
        at = (index - 1) * _KEY_ENTRY
        for value in _cached(sums[index]):
            table[at : at + 32] = value.to_bytes(32, "little")
            at += 32
    return memoryview(table)  # slices of a memoryview do not copy


_key_cache: list = [None, None]  # (public key bytes, comb table of -A): commands come from one key


def prepare(public):
    """The comb table of -A for the public key A (x -> -x, t -> -t), built now and kept for
    verify(); None when `public` is not a point. Called when the link starts, with the
    organisation's key: the table is one 896-byte block, which a heap that has run for a while may
    no longer hold in one piece when the first command comes."""
    public = bytes(public)
    if _key_cache[0] != public:
        point = _decode_point(public)
        if point is None:
            return None
        x, y, z, t = point
        _key_cache[1] = _key_table((_P - x, y, z, _P - t))
        _key_cache[0] = public
    return _key_cache[1]


class Signer:
    """One device key: the expanded secret and public key computed once, signing in steps.

    steps = signer.sign_steps(msg)   # a generator: `for _ in steps: await asyncio.sleep_ms(0)`
    signature = signer.signature     # also the generator's return value
    """

    def __init__(self, secret):
        if len(secret) != 32:
            raise ValueError("an Ed25519 secret key is 32 bytes")
        digest = sha512(secret).digest()
        # RFC 8032 §5.1.5: clear the low 3 bits and bit 255, set bit 254.
        scalar = bytearray(digest[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        self._scalar = int.from_bytes(scalar, "little")
        self._prefix = digest[32:]
        self.public = _run(_encode_point_steps(_run(_comb_steps(self._scalar))))
        self.signature = None
        # SHA-512's message schedule window (16 words, evidence.sha512) for this key's signatures,
        # allocated once while the heap is young rather than once per signature.
        self._schedule = [0] * _SCHEDULE_WORDS

    def sign_steps(self, msg):
        """RFC 8032 §5.1.6 as a generator; a slice is a sixth of a SHA-512 block, four comb rounds
        or 50 squarings of the inversion."""
        self.signature = None
        # One message schedule for this signature's two hashes, which run one after the other.
        # Taken while it runs: a signature interleaved with this one (a tag URL and an event)
        # makes its own. Given back at the end; a generator dropped half-way (a cancelled task)
        # never gives it back, so the next signature allocates one and keeps that instead.
        schedule = self._schedule or [0] * _SCHEDULE_WORDS
        self._schedule = None
        h = sha512(self._prefix, schedule)
        yield from h.update_steps(msg)
        r = int.from_bytes((yield from h.digest_steps()), "little") % _L
        # The first hash's state and the words it left in the schedule are not kept through the
        # comb and the inversion, two thirds of the signature's steps (issue #26: a kilobyte or
        # two of the heap's peak, which is reached while a signature waits between steps).
        h = None
        for index in range(_SCHEDULE_WORDS):
            schedule[index] = 0
        encoded_r = yield from _encode_point_steps((yield from _comb_steps(r)))
        h = sha512(encoded_r, schedule)
        h.update(self.public)
        yield from h.update_steps(msg)
        digest = yield from h.digest_steps()
        k = int.from_bytes(digest, "little") % _L
        s = (r + k * self._scalar) % _L
        for index in range(_SCHEDULE_WORDS):
            schedule[index] = 0  # its words are long ints, derived from the secret: let them go
        self._schedule = schedule
        self.signature = encoded_r + s.to_bytes(32, "little")
        return self.signature


_last: list = [None, None]  # (secret, Signer): a device signs with one key, so one entry is enough


def signer(secret):
    """The cached Signer for this secret (public key and expanded secret computed once)."""
    secret = bytes(secret)
    if _last[0] != secret:
        _last[1] = Signer(secret)
        _last[0] = secret
    return _last[1]


def public_key(secret):
    return signer(secret).public


def sign(secret, msg):
    return _run(signer(secret).sign_steps(msg))


def verify(public, msg, sig):
    """RFC 8032 §5.1.7 (cofactorless, like OpenSSL): True only for a valid signature."""
    if len(public) != 32 or len(sig) != 64:
        return False
    table = prepare(public)
    if table is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= _L:
        return False
    h = sha512(sig[:32])
    h.update(public)
    h.update(msg)
    k = int.from_bytes(h.digest(), "little") % _L
    # [S]B - [k]A must encode to R: the comb table is of -A
    check = _run(_comb_steps(s, k, table))
    return _run(_encode_point_steps(check)) == bytes(sig[:32])
