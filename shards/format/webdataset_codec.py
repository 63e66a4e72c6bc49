"""WebDataset encoding: samples <-> a tar stream of `KEY.json`, `KEY.mjpeg`, `KEY.mel.npy` members.

- `KEY.json`   labels, label_text, verb/noun (when present), meta, and `frame_offsets`/`frame_lengths`:
               where each frame's JPEG lies inside `KEY.mjpeg`, so a loader decodes only what it samples.
- `KEY.mjpeg`  the frames' JPEG bytes, concatenated.
- `KEY.mel.npy` the float32 [T, 128] spectrogram, `np.save`d; loaded with `allow_pickle=False`.

Writing is deterministic (fixed tar header fields, sorted-key JSON): the same samples give the same
bytes, so a rerun of the ingestion rewrites identical shards. It needs only `write()` on the file
object, so it streams to non-seekable outputs (an upload to gs://).

Reading parses the tar itself, strictly (shards.format.tar_members), and decodes a sample's members
on demand (`TarSample`). Nothing is ever unpickled; webdataset's own decoders are not used.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import numpy as np

from shards.format.errors import REWRITE_FIX as _FIX
from shards.format.errors import ShardError
from shards.format.lazy import Damaged, LazySample
from shards.format.schema import NUM_MEL_BINS, Sample, SchemaError
from shards.format.tar_members import BLOCK, SUFFIXES, DeferredMember, check_member_name, iter_tar_members

_RECORD = 20 * BLOCK  # tar pads the archive to whole records, as tarfile and GNU tar do
# the .npy header np.save writes for a float32 [T, 128] array (format 1.0, padded to 128 bytes)
_NPY_HEADER_BYTES = 128
_NPY_AS_WRITTEN = re.compile(rb"\x93NUMPY\x01\x00\x76\x00\{'descr': '<f4', 'fortran_order': False, "
                             rb"'shape': \((\d+), 128\), \} *\n")


# ----------------------------------------------------------------------------------------- writing

def encode_members(sample: Sample) -> list[tuple[str, bytes]]:
    """The (member name, bytes) of one sample, in the order they are written."""
    sample.validate()
    offsets, pos = [], 0
    for f in sample.frames:
        offsets.append(pos)
        pos += len(f)
    header: dict[str, Any] = {
        "labels": list(sample.labels), "label_text": list(sample.label_text), "meta": sample.meta,
        "frame_offsets": offsets, "frame_lengths": [len(f) for f in sample.frames],
    }
    for name in ("verb", "noun"):
        if getattr(sample, name) is not None:
            header[name] = getattr(sample, name)
    try:
        js = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"sample {sample.key}: meta/labels are not plain JSON ({e}); "
                          f"convert numpy scalars to int/float and NaN to null") from None
    mel = io.BytesIO()
    np.save(mel, np.ascontiguousarray(sample.melspec, dtype="<f4"), allow_pickle=False)
    return [(f"{sample.key}.json", js.encode("utf-8")),
            (f"{sample.key}.mjpeg", b"".join(sample.frames)),
            (f"{sample.key}.mel.npy", mel.getvalue())]


def _member_header(name: str, size: int) -> bytes:
    # Every field fixed, so the bytes depend on the name and size only.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 0, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def sample_bytes(sample: Sample) -> bytes:
    """One sample as it lies inside a shard: its three members, each a tar header, the data and the
    padding to a whole block. A shard is these pieces in key order, then `shard_end`."""
    parts = []
    for name, data in encode_members(sample):
        parts += [_member_header(name, len(data)), data, bytes(-len(data) % BLOCK)]
    return b"".join(parts)


def shard_end(written: int) -> bytes:
    """What closes a tar shard after `written` bytes of members: two zero blocks, padded to a whole
    record (as tarfile and GNU tar write it)."""
    end = 2 * BLOCK
    return bytes(end + -(written + end) % _RECORD)


def write_webdataset(fileobj: BinaryIO, samples: Iterable[Sample]) -> int:
    """Write `samples` as one tar shard to a writable binary file object; return how many were written.

    Only `fileobj.write` is used (non-seekable streams are fine); `fileobj` is left open.
    """
    written, count = 0, 0
    for sample in samples:
        data = sample_bytes(sample)
        fileobj.write(data)
        written += len(data)
        count += 1
    fileobj.write(shard_end(written))
    return count


# ----------------------------------------------------------------------------------------- reading

class TarSample(LazySample):
    """A sample read from a tar shard: its three members' bytes, decoded on demand."""

    def __init__(self, shard: str, index: int, key: str, members: dict[str, bytes]):
        super().__init__(shard, index)
        self._key, self._members = key, members

    @property
    def key(self) -> str:
        return self._key  # known from the member names: no JSON parse, and named even when incomplete

    def _header(self) -> dict[str, Any]:
        self._check_complete()
        try:
            h = json.loads(self._members["json"].decode("utf-8"))  # (json's own bytes decoding is slower)
        except (ValueError, RecursionError) as e:
            raise self.error(f"{self._key}.json is not valid JSON ({e})") from None
        if not isinstance(h, dict):
            raise self.error(f"{self._key}.json is not a JSON object")
        labels, text, meta = h.get("labels", []), h.get("label_text", []), h.get("meta", {})
        offsets, lengths = h.get("frame_offsets"), h.get("frame_lengths")
        verb, noun = h.get("verb"), h.get("noun")
        if not (_ints(labels) and isinstance(text, list) and all(isinstance(t, str) for t in text)
                and isinstance(meta, dict) and (verb is None or type(verb) is int)
                and (noun is None or type(noun) is int)):
            raise self.error(f"{self._key}.json has fields of the wrong type")
        starts = _tiling(offsets, lengths, len(self._members["mjpeg"])) if _ints(lengths) else None
        if starts is None:
            raise self.error(f"{self._key}.json frame_offsets/frame_lengths do not tile {self._key}.mjpeg")
        self._offsets, self._lengths = starts, lengths
        return {"key": self._key, "labels": labels, "label_text": text, "meta": meta,
                "verb": verb, "noun": noun}

    @property
    def num_frames(self) -> int:
        self.header  # parses the offsets
        return len(self._offsets)

    def frame(self, i: int) -> bytes:
        i = self._check_frame_index(i)
        return self._members["mjpeg"][self._offsets[i]:self._offsets[i] + self._lengths[i]]

    def frames(self, indices: Sequence[int] | None = None) -> list[bytes]:
        mjpeg = self._members.get("mjpeg")
        if not isinstance(mjpeg, DeferredMember) or indices is None:
            return super().frames(indices)
        checked = [self._check_frame_index(i) for i in indices]
        return mjpeg.slices([(self._offsets[i], self._offsets[i] + self._lengths[i]) for i in checked])

    def _melspec(self) -> np.ndarray:
        self._check_complete()
        data = self._members["mel.npy"]
        written = _NPY_AS_WRITTEN.fullmatch(data[:_NPY_HEADER_BYTES])
        if written and len(data) == _NPY_HEADER_BYTES + int(written[1]) * NUM_MEL_BINS * 4:
            # what write_webdataset writes: read without np.load's header parser (a tenth of a ms)
            return np.frombuffer(data, "<f4", offset=_NPY_HEADER_BYTES).reshape(-1, NUM_MEL_BINS)
        return self._npy(data)

    def _npy(self, data: bytes) -> np.ndarray:
        """A .npy written by another tool: its header parsed (never np.load, which allocates the shape
        the header claims and unpickles object arrays), the shape checked against the bytes there."""
        name = f"{self._key}.mel.npy"
        f = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f, max_header_size=10_000)
        except (ValueError, SyntaxError, EOFError) as e:
            raise self.error(f"{name} is not a plain numpy array ({e})") from None
        if dtype.hasobject:
            raise self.error(f"{name} is not a plain numpy array (an object array: never unpickled)")
        if not (dtype.kind == "f" and dtype.itemsize == 4 and len(shape) == 2 and shape[1] == NUM_MEL_BINS):
            raise self.error(f"{name} must be float32 [T, {NUM_MEL_BINS}], its header says {dtype} {shape}")
        held = len(data) - f.tell()
        if shape[0] * NUM_MEL_BINS * 4 != held:
            raise self.error(f"{name}: its header says {shape[0]} rows ({shape[0] * NUM_MEL_BINS * 4} bytes), "
                             f"the member holds {held} bytes after it")
        mel = np.frombuffer(data, dtype, offset=f.tell())
        mel = mel.reshape(shape[::-1]).T if fortran else mel.reshape(shape)
        return mel.astype(np.float32, copy=False)

    def _check_complete(self) -> None:
        # Only iter_webdataset(strict=False) yields incomplete samples; they fail here, one at a time.
        missing = [f"{self._key}.{s}" for s in SUFFIXES if s not in self._members]
        if missing:
            raise self.error(f"sample {self._key} is missing {', '.join(missing)}")
        damaged = [m.what for m in self._members.values() if isinstance(m, Damaged)]
        if damaged:
            raise self.error(damaged[0])

    def _known_key(self) -> str | None:
        return self._key


def _ints(xs: object) -> bool:
    """A list of ints >= 0 (not bools)."""
    return isinstance(xs, list) and set(map(type, xs)) <= {int} and (not xs or min(xs) >= 0)


def _tiling(offsets: object, lengths: list[int], total: int) -> list[int] | None:
    """The frames' offsets (ints) if `offsets` puts frames of `lengths` back to back, exactly filling
    the .mjpeg member of `total` bytes; else None."""
    starts = list(itertools.accumulate(lengths[:-1], initial=0))[:len(lengths)]
    return starts if sum(lengths) == total and offsets == starts else None


def iter_webdataset(fileobj: BinaryIO, shard: str, strict: bool = True,
                    defer_frames: bool = False) -> Iterator[TarSample]:
    """The samples of a tar shard, in order, as lazily decoded TarSamples; ShardError on anything amiss.

    The training input's choices: strict=False yields a sample that lacks a member instead of raising,
    so the rest of the shard stays readable (reading its fields then raises ShardError naming it);
    defer_frames=True (a seekable file) reads from KEY.mjpeg only the frames asked for, while the
    shard is being iterated, instead of the whole clip.
    """
    key, members, seen, index = None, {}, set(), 0
    for name, data in iter_tar_members(fileobj, shard, defer=b".mjpeg" if defer_frames else None):
        k, suffix = check_member_name(name, shard)
        if k != key:
            if members:
                if strict:
                    _incomplete(shard, key, members)
                yield TarSample(shard, index, key, members)
                index += 1
            if k in seen:
                raise ShardError(f"shard {shard}: sample {k} appears twice (member {name!r}); {_FIX}")
            key, members = k, {}
            seen.add(k)
        if suffix in members:
            raise ShardError(f"shard {shard}: member {name!r} appears twice; {_FIX}")
        members[suffix] = data
        if len(members) == len(SUFFIXES):
            yield TarSample(shard, index, key, members)
            key, members, index = None, {}, index + 1
    if members:
        if strict:
            _incomplete(shard, key, members)
        yield TarSample(shard, index, key, members)


def _incomplete(shard: str, key: str | None, members: dict[str, bytes]) -> None:
    missing = ", ".join(f"{key}.{s}" for s in SUFFIXES if s not in members)
    raise ShardError(f"shard {shard}: sample {key} is missing {missing}; {_FIX}")
