"""`tf.train.SequenceExample` wire format, written and read in plain Python (no TensorFlow needed).

The message is small and fixed (tensorflow/core/example/{example,feature}.proto):
  SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
  Features { map<string, Feature> feature = 1; }
  FeatureLists { map<string, FeatureList> feature_list = 1; }
  FeatureList { repeated Feature feature = 1; }
  Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
  BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
  Int64List { repeated int64 value = 1 [packed]; }
Encoding it by hand keeps the writer free of the TensorFlow runtime and makes the bytes equal to
protobuf's deterministic serialization (map keys sorted); decoding it by hand turns a packed float list
into numpy with one `frombuffer`. Tests check both directions against TensorFlow's own protos.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence, Union

import numpy as np

# A decoded Feature: list[bytes] (bytes_list), float32 array (float_list), list[int] (int64_list),
# or None when no kind is set.
Value = Union[list, np.ndarray, None]

_U64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------------- encoding
# An encoded message is a list of byte chunks, joined once at the end: a clip's frames are copied once,
# not once per nesting level.
Chunks = list


def _varint(n: int) -> bytes:
    n &= _U64  # negative int64s take ten bytes, as protobuf writes them
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: Chunks) -> Chunks:
    """A length-delimited field (wire type 2) holding `payload`."""
    return [_varint(number << 3 | 2) + _varint(sum(map(len, payload))), *payload]


def bytes_feature(values: Sequence[bytes]) -> Chunks:
    """An encoded Feature holding a BytesList."""
    return _field(1, [c for v in values for c in _field(1, [bytes(v)])])


def float_feature(values: np.ndarray | Sequence[float]) -> Chunks:
    """An encoded Feature holding a (packed) FloatList."""
    arr = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return _field(2, _field(1, [arr.tobytes()]) if arr.size else [])


def int64_feature(values: Sequence[int]) -> Chunks:
    """An encoded Feature holding a (packed) Int64List."""
    return _field(3, _field(1, [b"".join(_varint(int(v)) for v in values)]) if len(values) else [])


def _map_entry(key: str, value: Chunks) -> Chunks:
    return _field(1, [*_field(1, [key.encode("utf-8")]), *_field(2, value)])


def encode(context: Mapping[str, Chunks], feature_lists: Mapping[str, Sequence[Chunks]]) -> bytes:
    """A serialized SequenceExample from encoded Features (see *_feature); map keys in sorted order,
    as protobuf's deterministic serialization writes them."""
    ctx = [c for k, feature in sorted(context.items()) for c in _map_entry(k, feature)]
    lists = [c for k, feats in sorted(feature_lists.items())
             for c in _map_entry(k, [c for f in feats for c in _field(1, f)])]
    return b"".join([*_field(1, ctx), *_field(2, lists)])


# ----------------------------------------------------------------------------------------- decoding

def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of a message; unknown fields are the caller's."""
    pos, n = 0, len(buf)
    while pos < n:
        tag, pos = _read_varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > n:
            raise ValueError("field runs past the end of its message")
        yield tag >> 3, wire, value


def _floats(buf: memoryview) -> np.ndarray:
    parts = []
    for number, wire, v in _fields(buf):
        if number == 1 and wire in (2, 5):  # packed, or one float per field
            if len(v) % 4:
                raise ValueError("packed float list of a length not a multiple of 4")
            parts.append(np.frombuffer(v, dtype="<f4"))
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def _int64s(buf: memoryview) -> list[int]:
    out = []
    for number, wire, v in _fields(buf):
        if number == 1 and wire == 0:
            out.append(v)
        elif number == 1 and wire == 2:  # packed
            pos = 0
            while pos < len(v):
                x, pos = _read_varint(v, pos)
                out.append(x)
    return [x - (1 << 64) if x >> 63 else x for x in out]


def _feature(buf: memoryview) -> Value:
    value: Value = None
    for number, wire, v in _fields(buf):
        if wire != 2:
            continue
        if number == 1:
            value = [bytes(b) for n, w, b in _fields(v) if n == 1 and w == 2]
        elif number == 2:
            value = _floats(v)
        elif number == 3:
            value = _int64s(v)
    return value


def _map_entries(buf: memoryview) -> Iterator[tuple[str, memoryview]]:
    for number, wire, entry in _fields(buf):
        if number == 1 and wire == 2:
            key, value = "", memoryview(b"")
            for n, w, v in _fields(entry):
                if n == 1 and w == 2:
                    key = bytes(v).decode("utf-8")
                elif n == 2 and w == 2:
                    value = v
            yield key, value


def decode(data: bytes | memoryview) -> tuple[dict[str, Value], dict[str, list[Value]]]:
    """(context, feature_lists) of a serialized SequenceExample; ValueError if it is malformed."""
    context: dict[str, Value] = {}
    feature_lists: dict[str, list[Value]] = {}
    for number, wire, v in _fields(memoryview(data)):
        if number == 1 and wire == 2:
            for key, feature in _map_entries(v):
                context[key] = _feature(feature)
        elif number == 2 and wire == 2:
            for key, flist in _map_entries(v):
                feature_lists[key] = [_feature(f) for n, w, f in _fields(flist) if n == 1 and w == 2]
    return context, feature_lists
