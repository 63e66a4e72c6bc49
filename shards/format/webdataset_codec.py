"""WebDataset encoding: samples <-> a tar stream of `KEY.json`, `KEY.mjpeg`, `KEY.mel.npy` members.

- `KEY.json`   labels, label_text, verb/noun (when present), meta, and `frame_offsets`/`frame_lengths`:
               where each frame's JPEG lies inside `KEY.mjpeg`, so a loader decodes only what it samples.
- `KEY.mjpeg`  the frames' JPEG bytes, concatenated.
- `KEY.mel.npy` the float32 [T, 128] spectrogram, `np.save`d; loaded with `allow_pickle=False`.

Writing is deterministic (fixed tar header fields, sorted-key JSON): the same samples give the same
bytes, so a rerun of the ingestion rewrites identical shards. It needs only `write()` on the file
object, so it streams to non-seekable outputs (Beam FileSystems, gs://).

Reading parses the tar itself, strictly: a truncated archive, a bad header checksum, a member that is
not a plain file, or a member name outside `KEY.{json,mjpeg,mel.npy}` (no '/', no '..', no leading
'-') raises ShardError naming the shard and the member. Nothing is ever unpickled; webdataset's own
decoders are not used.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import tarfile
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import numpy as np

from shards.format.dataset_index import read_all, read_exact
from shards.format.errors import ShardError
from shards.format.lazy import LazySample
from shards.format.schema import NUM_MEL_BINS, Sample, SchemaError, check_key

SUFFIXES = ("json", "mjpeg", "mel.npy")  # every member of a sample is KEY.<one of these>
MAX_MEMBER_BYTES = 1 << 30  # larger than any clip; a bigger size field means a corrupt header

_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar pads the archive to whole records, as tarfile and GNU tar do
_ZERO_BLOCK = bytes(_BLOCK)
# the .npy header np.save writes for a float32 [T, 128] array (format 1.0, padded to 128 bytes)
_NPY_HEADER_BYTES = 128
_NPY_AS_WRITTEN = re.compile(rb"\x93NUMPY\x01\x00\x76\x00\{'descr': '<f4', 'fortran_order': False, "
                             rb"'shape': \((\d+), 128\), \} *\n")
_FIX = "re-create the shard (mbt ingest writes shards under a temporary name and renames them when whole)"


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
        parts += [_member_header(name, len(data)), data, bytes(-len(data) % _BLOCK)]
    return b"".join(parts)


def shard_end(written: int) -> bytes:
    """What closes a tar shard after `written` bytes of members: two zero blocks, padded to a whole
    record (as tarfile and GNU tar write it)."""
    end = 2 * _BLOCK
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

def check_member_name(name: str, shard: str) -> tuple[str, str]:
    """(key, suffix) of a member name, or ShardError if it is not `KEY.json|KEY.mjpeg|KEY.mel.npy`."""
    bad = None
    if not name or "/" in name or "\\" in name or "\x00" in name:
        bad = "member names must be plain file names (no '/', no '\\')"
    elif ".." in name:
        bad = "member names must not contain '..'"
    elif name.startswith("-"):
        bad = "member names must not start with '-'"
    else:
        key, _, suffix = name.partition(".")
        if suffix not in SUFFIXES:
            known = ", ".join("KEY." + s for s in SUFFIXES)
            bad = f"unknown member type {suffix!r}; a sample has only {known}"
        else:
            try:
                return check_key(key), suffix
            except SchemaError as e:
                bad = str(e)
    raise ShardError(f"shard {shard}: refusing member {name!r}: {bad}; this is not a shard written by "
                     f"this toolkit (or it was tampered with) - {_FIX}")


def _number(field: bytes, what: str, shard: str, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (bad {what} field "
                         f"{field!r}); {_FIX}") from None


def _pax_records(data: bytes, shard: str, offset: int) -> dict[str, str]:
    records, pos = {}, 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            record = data[space + 1:pos + length]
            if length <= 0 or not record.endswith(b"\n"):
                raise ValueError("bad record length")
            k, _, v = record[:-1].partition(b"=")
            records[k.decode("utf-8")] = v.decode("utf-8")
            pos += length
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"shard {shard}: corrupt pax header at byte {offset} ({e}); {_FIX}") from None
    return records


class DeferredMember:
    """A member's bytes left in a seekable file: len() and slices read only the bytes asked for.

    Made by iter_tar_members(defer=...); valid while the archive is being iterated (file open)."""

    def __init__(self, fileobj: BinaryIO, start: int, size: int, shard: str, name: str):
        self.fileobj, self.start, self.size, self.shard, self.name = fileobj, start, size, shard, name
        # a file of an object store (shards.format.storage.open_ranged): one ranged GET per slice
        self.fetch = getattr(getattr(fileobj, "raw", None), "fetch", None)
        self.fetch_ranges = getattr(getattr(fileobj, "raw", None), "fetch_ranges", None)
        try:  # a local file: one pread per slice, the file's position untouched
            self.fd: int | None = (fileobj.fileno() if isinstance(fileobj, io.BufferedReader)
                                   and self.fetch is None else None)
        except (OSError, ValueError):
            self.fd = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: slice) -> bytes:
        start, stop, step = item.indices(self.size)
        if step != 1:
            raise ValueError("a deferred member is read in contiguous slices only")
        if getattr(self.fileobj, "closed", False):
            raise ShardError(f"shard {self.shard}: {self.name} read after the shard's iteration ended; "
                             f"with defer_frames, read a sample's frames while iterating")
        if self.fetch is not None:
            data = self.fetch(self.start + start, self.start + stop) if stop > start else b""
        elif self.fd is not None:
            end = self.start + stop
            data = read_all(lambda left: os.pread(self.fd, left, end - left), max(0, stop - start))
        else:
            here = self.fileobj.tell()
            try:
                self.fileobj.seek(self.start + start)
                data = read_exact(self.fileobj, max(0, stop - start))
            finally:
                self.fileobj.seek(here)
        if len(data) < stop - start:
            raise ShardError(f"shard {self.shard}: truncated inside member {self.name!r}; the file is "
                             f"incomplete - {_FIX}")
        return data

    def slices(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of several (start, stop) ranges; from an object store, fetched concurrently."""
        if self.fetch_ranges is None or len(ranges) < 2:
            return [self[a:b] for a, b in ranges]
        if getattr(self.fileobj, "closed", False):
            return [self[a:b] for a, b in ranges]  # (raises the error naming the member)
        bad = [(a, b) for a, b in ranges if not 0 <= a <= b <= self.size]
        if bad:
            raise ValueError(f"ranges {bad} lie outside {self.name} ({self.size} bytes)")
        data = self.fetch_ranges([(self.start + a, self.start + b) for a, b in ranges])
        if any(len(d) != b - a for d, (a, b) in zip(data, ranges)):
            raise ShardError(f"shard {self.shard}: truncated inside member {self.name!r}; the file is "
                             f"incomplete - {_FIX}")
        return data


def iter_tar_members(fileobj: BinaryIO, shard: str, defer: bytes | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each plain-file member of a tar stream, strictly checked; reads sequentially.

    defer=b".mjpeg" (seekable files only): members whose name ends so are not read but yielded as a
    DeferredMember, so a loader reads just the slices (frames) it uses."""
    offset, long_name, pax = 0, None, {}
    while True:
        header = read_exact(fileobj, _BLOCK)
        if len(header) < _BLOCK:
            where = "before its end-of-archive marker" if not header else "inside a member header"
            raise ShardError(f"shard {shard}: truncated at byte {offset + len(header)} ({where}); "
                             f"the file is incomplete - {_FIX}")
        if header == _ZERO_BLOCK:
            return  # end of archive; what follows is padding
        stored = _number(header[148:156], "checksum", shard, offset)
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:]):
            # (old tar writers summed the bytes as signed; that sum is only worked out when it is needed)
            raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (checksum mismatch); "
                             f"the file is damaged - {_FIX}")
        name = header[:100].split(b"\x00", 1)[0]
        if header[257:263] == b"ustar\x00" and header[345:500].strip(b"\x00"):
            name = header[345:500].split(b"\x00", 1)[0] + b"/" + name
        size = _number(header[124:136], "size", shard, offset)
        typeflag = header[156:157]
        if typeflag not in (b"x", b"g") and "size" in pax:
            size = int(pax["size"]) if pax["size"].isdigit() else -1
        if not 0 <= size <= MAX_MEMBER_BYTES:
            raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (member size {size}); "
                             f"{_FIX}")
        final = pax["path"].encode("utf-8") if "path" in pax else long_name if long_name is not None else name
        if defer is not None and typeflag in (b"0", b"\x00") and final.endswith(defer):
            # (a cut inside it shows as a truncated header next: the sample's .mel.npy follows it)
            data = DeferredMember(fileobj, fileobj.tell(), size, shard, final.decode("utf-8", "replace"))
            fileobj.seek(size + -size % _BLOCK, 1)
        else:
            data = read_exact(fileobj, size)
            pad = read_exact(fileobj, -size % _BLOCK)
            if len(data) < size or len(pad) < -size % _BLOCK:
                raise ShardError(f"shard {shard}: truncated inside member {name.decode('utf-8', 'replace')!r} "
                                 f"(header at byte {offset}); the file is incomplete - {_FIX}")
        offset += _BLOCK + size + -size % _BLOCK
        if typeflag == b"x":  # pax extended header for the next member (long names)
            pax = _pax_records(data, shard, offset)
            continue
        if typeflag == b"g":  # pax global header: nothing we use
            continue
        if typeflag == b"L":  # GNU long name for the next member
            long_name = data.split(b"\x00", 1)[0]
            continue
        if "path" in pax:
            name = pax["path"].encode("utf-8")
        elif long_name is not None:
            name = long_name
        pax, long_name = {}, None
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ShardError(f"shard {shard}: member name {name!r} is not UTF-8; {_FIX}") from None
        if typeflag not in (b"0", b"\x00"):
            raise ShardError(f"shard {shard}: refusing member {text!r}: not a plain file (tar type "
                             f"{typeflag!r}); shards hold only files - {_FIX}")
        yield text, data


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
        try:
            mel = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # object arrays land here: never unpickled
            raise self.error(f"{self._key}.mel.npy is not a plain numpy array ({e})") from None
        if not (isinstance(mel, np.ndarray) and mel.dtype.kind == "f" and mel.dtype.itemsize == 4
                and mel.ndim == 2 and mel.shape[1] == NUM_MEL_BINS):
            raise self.error(f"{self._key}.mel.npy must be float32 [T, {NUM_MEL_BINS}], got "
                             f"{getattr(mel, 'dtype', type(mel))} {getattr(mel, 'shape', '')}")
        return mel.astype(np.float32, copy=False)


    def _check_complete(self) -> None:
        # Only iter_webdataset(strict=False) yields incomplete samples; they fail here, one at a time.
        missing = [f"{self._key}.{s}" for s in SUFFIXES if s not in self._members]
        if missing:
            raise self.error(f"sample {self._key} is missing {', '.join(missing)}")


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
