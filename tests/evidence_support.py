"""The RFC 8032 §6 reference Ed25519, kept naive on purpose: the yardstick for device/evidence/ed25519.py.

Runs under CPython and the MicroPython unix port (no annotations, no f-strings), so the bench
can time it on the same port as the device code:

    import evidence_support as ref
    ref.use_sha512(lambda data: hashlib.sha512(data).digest())
    signature = ref.sign(secret, b"message")

`comb_table()` rebuilds device/evidence/ed25519_table.py from these affine-independent formulas.
"""

_sha512 = None


def use_sha512(function):
    global _sha512
    _sha512 = function


p = 2**255 - 19
q = 2**252 + 27742317777372353535851937790883648493


def modp_inv(x):
    return pow(x, p - 2, p)


d = -121665 * modp_inv(121666) % p
modp_sqrt_m1 = pow(2, (p - 1) // 4, p)


def sha512_modq(s):
    return int.from_bytes(_sha512(s), "little") % q


def point_add(P, Q):
    A, B = (P[1] - P[0]) * (Q[1] - Q[0]) % p, (P[1] + P[0]) * (Q[1] + Q[0]) % p
    C, D = 2 * P[3] * Q[3] * d % p, 2 * P[2] * Q[2] % p
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F, G * H, F * G, E * H)


def point_mul(s, P):
    Q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            Q = point_add(Q, P)
        P = point_add(P, P)
        s >>= 1
    return Q


def point_equal(P, Q):
    if (P[0] * Q[2] - Q[0] * P[2]) % p != 0:
        return False
    if (P[1] * Q[2] - Q[1] * P[2]) % p != 0:
        return False
    return True


def recover_x(y, sign):
    if y >= p:
        return None
    x2 = (y * y - 1) * modp_inv(d * y * y + 1)
    if x2 == 0:
        if sign:
            return None
        return 0
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p != 0:
        x = x * modp_sqrt_m1 % p
    if (x * x - x2) % p != 0:
        return None
    if (x & 1) != sign:
        x = p - x
    return x


g_y = 4 * modp_inv(5) % p
g_x = recover_x(g_y, 0)
G = (g_x, g_y, 1, g_x * g_y % p)


def point_compress(P):
    zinv = modp_inv(P[2])
    x = P[0] * zinv % p
    y = P[1] * zinv % p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def point_decompress(s):
    if len(s) != 32:
        raise ValueError("Invalid input length for decompression")
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % p)


def secret_expand(secret):
    if len(secret) != 32:
        raise ValueError("Bad size of private key")
    h = _sha512(secret)
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return (a, h[32:])


def secret_to_public(secret):
    (a, dummy) = secret_expand(secret)
    return point_compress(point_mul(a, G))


def sign(secret, msg):
    a, prefix = secret_expand(secret)
    A = point_compress(point_mul(a, G))
    r = sha512_modq(prefix + msg)
    R = point_mul(r, G)
    Rs = point_compress(R)
    h = sha512_modq(Rs + A + msg)
    s = (r + h * a) % q
    return Rs + s.to_bytes(32, "little")


def verify(public, msg, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    A = point_decompress(public)
    if not A:
        return False
    Rs = signature[:32]
    R = point_decompress(Rs)
    if not R:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= q:
        return False
    h = sha512_modq(Rs + public + msg)
    sB = point_mul(s, G)
    hA = point_mul(h, A)
    return point_equal(sB, point_add(R, hA))


def comb_table(teeth=8, spacing=32):
    """Affine (x, y) of sum(bit_k(j) * 2^(spacing*k) * G) for j = 1 .. 2^teeth - 1, as bytes:
    x then y, 32 bytes each, little-endian (the layout device/evidence/ed25519_table.py holds)."""
    powers = [point_mul(1 << (spacing * k), G) for k in range(teeth)]
    out = bytearray()
    for index in range(1, 1 << teeth):
        point = (0, 1, 1, 0)
        for k in range(teeth):
            if index >> k & 1:
                point = point_add(point, powers[k])
        zinv = modp_inv(point[2])
        out += (point[0] * zinv % p).to_bytes(32, "little")
        out += (point[1] * zinv % p).to_bytes(32, "little")
    return bytes(out)
