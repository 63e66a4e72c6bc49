"""TFRecord encoding: samples <-> `tf.train.SequenceExample` records with DMVR's / scenic's key names.

feature_lists
  image/encoded            one JPEG (bytes_list of one) per frame, 25 fps
  melspec/feature/floats   one float_list per second of spectrogram: 100 x 128 floats, time-major;
                           the last second zero-padded (scenic reads FixedLenSequenceFeature([100*128]))
context
  clip/label/index (int64 list)   clip/label/text (bytes list)   video/filename (bytes: meta["source"])
  clip/start/timestamp, clip/end/timestamp (int64 microseconds: meta["start"], meta["end"])
  clip/key (bytes)   clip/meta (JSON bytes)   clip/label/verb, clip/label/noun (EPIC, when present)
  melspec/num_rows (int64: the spectrogram's true row count, so the reader trims the padding exactly)

Records are framed as TFRecord files are (uint64 length, masked crc32c of it, data, masked crc32c of
it) with google_crc32c, and the SequenceExample is encoded by `shards.format.sequence_example`: writing and
reading need no TensorFlow. Reading checks every CRC, and a length field against the bytes the file
has left before reading that many; a truncated or corrupt record raises ShardError naming the shard
and the record number. A record whose data fails its CRC still has its length: with strict=False it
is yielded as a sample that raises when read, and the records after it are read.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO, Iterable, Iterator

import google_crc32c
import numpy as np

from shards.format import sequence_example as sx
from shards.format.dataset_index import read_exact
from shards.format.errors import REWRITE_FIX as _FIX
from shards.format.errors import ShardError
from shards.format.lazy import Damaged, LazySample
from shards.format.limits import MAX_MEMBER_BYTES, bytes_left, read_bounded
from shards.format.schema import MEL_ROWS_PER_SECOND, NUM_MEL_BINS, Sample, SchemaError, check_key

# Key names. The first group is what DMVR and scenic's MBT read; the rest is ours.
IMAGE = "image/encoded"
MELSPEC = "melspec/feature/floats"
LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
FILENAME = "video/filename"
START = "clip/start/timestamp"
END = "clip/end/timestamp"
KEY = "clip/key"
META = "clip/meta"
VERB = "clip/label/verb"
NOUN = "clip/label/noun"
MEL_ROWS = "melspec/num_rows"

MEL_FLOATS_PER_SECOND = MEL_ROWS_PER_SECOND * NUM_MEL_BINS  # 12800


# ------------------------------------------------------------------------------------ record framing

def masked_crc(data: bytes) -> int:
    """TFRecord's masked crc32c of `data`."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One framed record: length, its masked crc, the data, the data's masked crc."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc(length)), data, struct.pack("<I", masked_crc(data))))


def write_record(fileobj: BinaryIO, data: bytes) -> int:
    """Append one framed record to `fileobj`; return the bytes written."""
    fileobj.write(frame_record(data))
    return len(data) + 16


def iter_records(fileobj: BinaryIO, shard: str, strict: bool = True) -> Iterator[bytes | Damaged]:
    """The data of each record of a TFRecord stream, CRCs checked; reads sequentially.

    strict=False: a record whose data fails its CRC is yielded as `Damaged` and reading goes on (its
    length field, CRC-checked, still frames the next record); a bad length field always ends the shard."""
    number, offset, left = 0, 0, bytes_left(fileobj)
    while True:
        head = read_exact(fileobj, 12)
        if not head:
            return
        if len(head) < 12:
            raise ShardError(f"shard {shard}: truncated in the header of record #{number}; "
                             f"the file is incomplete - {_FIX}")
        (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
        if crc != masked_crc(head[:8]):
            raise ShardError(f"shard {shard}: record #{number} has a corrupt length (crc mismatch); "
                             f"the file is damaged - {_FIX}")
        available = None if left is None else max(0, left - offset - 12)
        if length > MAX_MEMBER_BYTES or (available is not None and length + 4 > available):
            has = (f"the file has {available} bytes left" if available is not None
                   else f"a record can have at most {MAX_MEMBER_BYTES}")
            raise ShardError(f"shard {shard}: truncated or corrupt at record #{number}: its length field says "
                             f"{length} bytes, {has}; {_FIX}")
        data = read_bounded(fileobj, length)
        tail = read_exact(fileobj, 4)
        if len(data) < length or len(tail) < 4:
            raise ShardError(f"shard {shard}: truncated inside record #{number} ({len(data)} of {length} "
                             f"bytes); the file is incomplete - {_FIX}")
        if struct.unpack("<I", tail)[0] != masked_crc(data):
            what = f"record #{number} is corrupt (data crc mismatch)"
            if strict:
                raise ShardError(f"shard {shard}: {what}; the file is damaged - {_FIX}")
            yield Damaged(what)
        else:
            yield data
        number, offset = number + 1, offset + 16 + length


# ----------------------------------------------------------------------------------------- writing

def _microseconds(sample: Sample, name: str, default: float) -> int:
    value = sample.meta.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"sample {sample.key}: meta[{name!r}] must be seconds as a number, got {value!r}")
    return int(round(value * 1_000_000))


def encode_sample(sample: Sample) -> bytes:
    """One sample as a serialized SequenceExample (deterministic bytes)."""
    sample.validate()
    try:
        meta = json.dumps(sample.meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise SchemaError(f"sample {sample.key}: meta is not plain JSON ({e}); "
                          f"convert numpy scalars to int/float and NaN to null") from None
    start = _microseconds(sample, "start", 0.0)
    end = _microseconds(sample, "end", start / 1e6 + sample.duration)
    context = {
        LABEL_INDEX: sx.int64_feature(sample.labels),
        LABEL_TEXT: sx.bytes_feature([t.encode("utf-8") for t in sample.label_text]),
        FILENAME: sx.bytes_feature([str(sample.meta.get("source", "")).encode("utf-8")]),
        START: sx.int64_feature([start]),
        END: sx.int64_feature([end]),
        KEY: sx.bytes_feature([sample.key.encode("ascii")]),
        META: sx.bytes_feature([meta]),
        MEL_ROWS: sx.int64_feature([sample.melspec.shape[0]]),
    }
    if sample.verb is not None:
        context[VERB] = sx.int64_feature([sample.verb])
    if sample.noun is not None:
        context[NOUN] = sx.int64_feature([sample.noun])
    rows = sample.melspec.shape[0]
    seconds = math.ceil(rows / MEL_ROWS_PER_SECOND)
    mel = np.zeros((seconds * MEL_ROWS_PER_SECOND, NUM_MEL_BINS), "<f4")
    mel[:rows] = sample.melspec
    mel = mel.reshape(seconds, MEL_FLOATS_PER_SECOND)
    feature_lists = {
        IMAGE: [sx.bytes_feature([f]) for f in sample.frames],
        MELSPEC: [sx.float_feature(second) for second in mel],
    }
    return sx.encode(context, feature_lists)


def sample_bytes(sample: Sample) -> bytes:
    """One sample as it lies inside a shard: its framed SequenceExample. A shard is these pieces in key
    order, then `shard_end` (nothing)."""
    return frame_record(encode_sample(sample))


def shard_end(written: int) -> bytes:
    """A TFRecord file has no trailer."""
    return b""


def write_tfrecord(fileobj: BinaryIO, samples: Iterable[Sample]) -> int:
    """Write `samples` as one TFRecord shard to a writable binary file object; return how many.

    Only `fileobj.write` is used (non-seekable streams are fine); `fileobj` is left open.
    """
    count = 0
    for sample in samples:
        fileobj.write(sample_bytes(sample))
        count += 1
    return count


# ----------------------------------------------------------------------------------------- reading

class TFRecordSample(LazySample):
    """A sample read from a TFRecord shard: the serialized SequenceExample, parsed on first access."""

    def __init__(self, shard: str, index: int, data: bytes | Damaged):
        super().__init__(shard, index)
        self._data = data
        self._parsed: tuple[dict, dict] | None = None

    def _parse(self) -> tuple[dict, dict]:
        if isinstance(self._data, Damaged):
            raise self.error(self._data.what)
        if self._parsed is None:
            try:
                self._parsed = sx.decode(self._data)
            except (ValueError, UnicodeDecodeError) as e:
                raise self.error(f"record is not a tf.train.SequenceExample ({e})") from None
        return self._parsed

    def _known_key(self) -> str | None:
        key = super()._known_key()
        value = self._parsed[0].get(KEY) if key is None and self._parsed is not None else None
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes):
            try:
                key = check_key(value[0].decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                pass  # (a bad key is reported as such when the header is read)
        return key

    def _one(self, name: str, kind: type, required: bool = True) -> Any:
        value = self._parse()[0].get(name)
        if value is None and not required:
            return None
        if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], kind)):
            raise self.error(f"context feature {name!r} is missing or not a single {kind.__name__}")
        return value[0]

    def _list(self, name: str, kind: type) -> list:
        value = self._parse()[0].get(name)
        if value is None:
            return []
        if not (isinstance(value, list) and all(isinstance(v, kind) for v in value)):
            raise self.error(f"context feature {name!r} is not a list of {kind.__name__}")
        return value

    def _header(self) -> dict[str, Any]:
        try:
            key = check_key(self._one(KEY, bytes).decode("utf-8"))
            meta = json.loads(self._one(META, bytes))
            text = [t.decode("utf-8") for t in self._list(LABEL_TEXT, bytes)]
        except (ValueError, RecursionError) as e:  # ShardError is a ValueError too: re-raised as is
            if isinstance(e, ShardError):
                raise
            raise self.error(f"bad {KEY}, {META} or {LABEL_TEXT} ({e})") from None
        labels = self._list(LABEL_INDEX, int)
        if not isinstance(meta, dict) or not all(x >= 0 for x in labels):
            raise self.error(f"{META} must be a JSON object and {LABEL_INDEX} non-negative ints")
        return {"key": key, "labels": labels, "label_text": text, "meta": meta,
                "verb": self._one(VERB, int, required=False), "noun": self._one(NOUN, int, required=False)}

    @property
    def num_frames(self) -> int:
        return len(self._parse()[1].get(IMAGE, []))

    def frame(self, i: int) -> bytes:
        i = self._check_frame_index(i)
        value = self._parse()[1][IMAGE][i]
        if not (isinstance(value, list) and len(value) == 1):
            raise self.error(f"{IMAGE}[{i}] is not a single JPEG")
        return value[0]

    def _melspec(self) -> np.ndarray:
        seconds = self._parse()[1].get(MELSPEC, [])
        if not all(isinstance(s, np.ndarray) and s.size == MEL_FLOATS_PER_SECOND for s in seconds):
            raise self.error(f"every {MELSPEC} element must hold {MEL_FLOATS_PER_SECOND} floats")
        full = len(seconds) * MEL_ROWS_PER_SECOND
        rows = self._one(MEL_ROWS, int, required=False)
        rows = full if rows is None else rows  # written by another tool: keep every row
        if not full - MEL_ROWS_PER_SECOND < rows <= full and not rows == full == 0:
            raise self.error(f"{MEL_ROWS}={rows} does not fit {len(seconds)} seconds of {MELSPEC}")
        if not seconds:
            return np.zeros((0, NUM_MEL_BINS), np.float32)
        return np.concatenate(seconds).reshape(full, NUM_MEL_BINS)[:rows].copy()


def iter_tfrecord(fileobj: BinaryIO, shard: str, strict: bool = True) -> Iterator[TFRecordSample]:
    """The samples of a TFRecord shard, in order, as lazily decoded TFRecordSamples.

    strict=False (the training input's and validate's choice): a record whose data fails its CRC is
    yielded as a sample that raises ShardError when read, so one bad record costs one sample."""
    for index, data in enumerate(iter_records(fileobj, shard, strict=strict)):
        yield TFRecordSample(shard, index, data)
