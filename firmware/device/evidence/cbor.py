"""Deterministic CBOR (RFC 8949 §4.2.1) for events, and a strict decoder for commands.

    from device.evidence.cbor import encode, decode, Tag
    data = encode({1: "tag-0042", 2: 7})      # shortest forms, keys in bytewise order
    assert decode(data) == {1: "tag-0042", 2: 7}
"""

from micropython import const  # CPython runs this module with a stand-in (tests/signing_support.py)


_UINT = const(0)
_NINT = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)
_MAX_DEPTH = const(8)  # events and commands nest three deep; anything deeper is refused
_MAX_UINT = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ValueError):
    """Input that is not deterministic, well-formed CBOR of the supported subset."""


class Tag:
    """A tagged item (RFC 8949 §3.4), e.g. Tag(18, [...]) for COSE_Sign1."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _head(major, value, out):
    # RFC 8949 §4.2.1: the argument in the shortest form.
    if value < 24:
        out.append((major << 5) | value)
    elif value < 0x100:
        out.append((major << 5) | 24)
        out.append(value)
    elif value < 0x10000:
        out.append((major << 5) | 25)
        out.extend(value.to_bytes(2, "big"))
    elif value < 0x100000000:
        out.append((major << 5) | 26)
        out.extend(value.to_bytes(4, "big"))
    elif value <= _MAX_UINT:
        out.append((major << 5) | 27)
        out.extend(value.to_bytes(8, "big"))
    else:
        raise CBORError("integer out of the 64-bit range")


def _encode(obj, out, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nested too deep")
    # bool before int: True is an int in Python.
    if obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(_UINT, obj, out)
        else:
            _head(_NINT, -1 - obj, out)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(_BYTES, len(obj), out)
        out.extend(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(_TEXT, len(raw), out)
        out.extend(raw)
    elif isinstance(obj, (list, tuple)):
        _head(_ARRAY, len(obj), out)
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, dict):
        # RFC 8949 §4.2.1: keys sorted by the bytewise order of their deterministic encodings.
        items = []
        for key in obj:
            encoded_key = bytearray()
            _encode(key, encoded_key, depth + 1)
            items.append((bytes(encoded_key), obj[key]))
        items.sort()  # distinct keys have distinct encodings: the values are never compared
        _head(_MAP, len(items), out)
        for encoded_key, value in items:
            out.extend(encoded_key)
            _encode(value, out, depth + 1)
    elif isinstance(obj, Tag):
        _head(_TAG, obj.tag, out)
        _encode(obj.value, out, depth + 1)
    else:
        raise CBORError("cannot encode %s" % type(obj).__name__)


def encode(obj):
    """Deterministic encoding of int, bytes, str, list/tuple, dict, bool, None and Tag."""
    out = bytearray()
    _encode(obj, out, 0)
    return bytes(out)


def _take(buf, pos, count):
    # the `count` bytes at pos, or CBORError when the input ends first
    end = pos + count
    if end > len(buf):
        raise CBORError("truncated at byte %d" % pos)
    return buf[pos:end]


def _decode(buf, pos, depth):
    # (the item at buf[pos], the position after it)
    if depth > _MAX_DEPTH:
        raise CBORError("nested too deep")
    start = pos
    initial = _take(buf, pos, 1)[0]
    pos += 1
    major = initial >> 5
    info = value = initial & 0x1F
    if info >= 24:
        if major == _SIMPLE:
            raise CBORError("float or simple value at byte %d" % start)
        if info > 27:
            # RFC 8949 §4.2.1: definite lengths only; 28-30 are reserved.
            raise CBORError("indefinite or reserved length at byte %d" % start)
        size = 1 << (info - 24)
        value = int.from_bytes(bytes(_take(buf, pos, size)), "big")
        pos += size
        # RFC 8949 §4.2.1: the argument must use the shortest form.
        if (size == 1 and value < 24) or (size > 1 and value < (1 << (4 * size))):
            raise CBORError("non-shortest argument at byte %d" % start)
    if major == _UINT:
        return value, pos
    if major == _NINT:
        return -1 - value, pos
    if major == _BYTES or major == _TEXT:
        raw = bytes(_take(buf, pos, value))
        pos += value
        if major == _BYTES:
            return raw, pos
        try:
            return str(raw, "utf-8"), pos
        except UnicodeError:
            raise CBORError("invalid UTF-8 at byte %d" % start)
    if major == _ARRAY:
        # Every item takes at least a byte: refuse a length the input cannot hold before allocating.
        if value > len(buf) - pos:
            raise CBORError("truncated at byte %d" % start)
        items = []
        for _ in range(value):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == _MAP:
        if 2 * value > len(buf) - pos:
            raise CBORError("truncated at byte %d" % start)
        result = {}
        previous = None
        for _ in range(value):
            key_start = pos
            key, pos = _decode(buf, pos, depth + 1)
            encoded_key = bytes(buf[key_start:pos])
            if previous is not None and encoded_key <= previous:
                raise CBORError("map key repeated or out of order at byte %d" % key_start)
            previous = encoded_key
            if isinstance(key, (list, dict, Tag)):
                raise CBORError("unhashable map key at byte %d" % key_start)
            item, pos = _decode(buf, pos, depth + 1)
            result[key] = item
        return result, pos
    if major == _TAG:
        item, pos = _decode(buf, pos, depth + 1)
        return Tag(value, item), pos
    # major 7: only false, true and null; no floats, no undefined, no other simple values.
    if info == 20:
        return False, pos
    if info == 21:
        return True, pos
    if info == 22:
        return None, pos
    raise CBORError("float or simple value at byte %d" % start)


def decode(buf):
    """The one item in buf; refuses trailing bytes and anything not deterministically encoded."""
    buf = memoryview(buf)
    obj, end = _decode(buf, 0, 0)
    if end != len(buf):
        raise CBORError("%d trailing bytes after the item" % (len(buf) - end))
    return obj
