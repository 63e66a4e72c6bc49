"""Where each sample of a shard starts: the offsets sidecar, and reading one sample by its number.

A shard `NAME.tar` / `NAME.tfrecord` written by `mbt ingest` has a sidecar `NAME.tar.offsets`: the
little-endian uint64 byte offsets of its samples' starts (a tar sample's first member header, a
TFRecord record's length field), followed by the end of the last sample, so sample i lies in
[offsets[i], offsets[i + 1]). The index lists it by each shard's entry ("offsets", "offsets_crc32c").
Read with np.frombuffer: 8 bytes a sample, ~16 MB for AudioSet's 2 M, never unpickled.

`read_sample` reads one sample with one range read (one pread locally, one ranged GET from a
store) and gives the LazySample the streaming reader yields for it. `scan_offsets` finds the
offsets of a shard written without them (what `mbt validate --add-offsets` records).
"""

from __future__ import annotations

import io
import os
import posixpath
import struct
import tarfile
from typing import Any, Sequence

import numpy as np

from shards.format import storage
from shards.format.checksum import crc32c_hex
from shards.format.dataset_index import read_exact
from shards.format.errors import ShardError
from shards.format.lazy import LazySample
from shards.format.tar_members import BLOCK, check_member_name

OFFSETS_SUFFIX = ".offsets"
ADD_OFFSETS_HINT = "run `mbt validate DIR --add-offsets` once to record them"


def offsets_name(shard: str) -> str:
    """The sidecar's file name of a shard (its generation-carrying name + .offsets)."""
    return posixpath.basename(shard) + OFFSETS_SUFFIX


def encode_offsets(offsets: Sequence[int]) -> bytes:
    """The sidecar's bytes: the samples' starts and the last sample's end, little-endian uint64."""
    return np.asarray(offsets, dtype="<u8").tobytes()


def decode_offsets(data: bytes, samples: int | None, name: str) -> np.ndarray:
    """The offsets of a sidecar's bytes, checked to be samples + 1 increasing numbers."""
    if len(data) % 8:
        raise ShardError(f"{name}: {len(data)} bytes is not a whole number of uint64 offsets; {ADD_OFFSETS_HINT}")
    offsets = np.frombuffer(data, "<u8").astype(np.int64)
    if (samples is not None and len(offsets) != samples + 1) or np.any(np.diff(offsets) <= 0):
        raise ShardError(f"{name}: {len(offsets)} offsets, not {samples} samples + 1 increasing; "
                         f"{ADD_OFFSETS_HINT}")
    return offsets


def has_offsets(index: dict[str, Any], fmt: str) -> bool:
    return all("offsets" in e for e in index.get("shards", {}).get(fmt, []))


def load_offsets(index: dict[str, Any], entry: dict[str, Any]) -> np.ndarray:
    """The offsets of the shard a loaded index lists as `entry`, CRC32C checked; ShardError (naming
    `mbt validate --add-offsets`) when the index records none."""
    if "offsets" not in entry:
        raise ShardError(f"{index['index_path']}: no sample offsets recorded (an older dataset), so its "
                         f"samples can only be read in order; {ADD_OFFSETS_HINT}")
    path = storage.join(index["folder"], entry["offsets"])
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise ShardError(f"{path} is missing, but {index['index_path']} lists it; {ADD_OFFSETS_HINT}") from None
    found = crc32c_hex(data)
    if entry.get("offsets_crc32c") not in (None, found):
        raise ShardError(f"{path}: crc32c {found}, but {index['index_path']} records "
                         f"{entry['offsets_crc32c']}; {ADD_OFFSETS_HINT}")
    return decode_offsets(data, entry.get("samples"), path)


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a shard: one pread locally, one ranged GET from a store."""
    ranged = storage.open_ranged(path) if storage.is_url(path) else None
    if ranged is not None:
        with ranged:
            data = ranged.raw.fetch(start, end)
    elif storage.is_url(path):
        with storage.open_path(path, "rb") as f:
            f.seek(start)
            data = read_exact(f, end - start)
    else:
        with open(path, "rb") as f:
            data = _pread(f, start, end - start)
    if len(data) != end - start:
        raise ShardError(f"shard {path}: {len(data)} bytes at offset {start}, {end - start} expected: the "
                         f"shard is shorter than its offsets say; {ADD_OFFSETS_HINT}")
    return data


def _pread(f, start: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.pread(f.fileno(), n - got, start + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def sample_from_bytes(data: bytes, fmt: str, shard: str, index: int) -> LazySample:
    """The LazySample of one sample's bytes as they lie in a shard of format `fmt`."""
    if fmt == "webdataset":
        from shards.format.webdataset_codec import iter_webdataset

        # the sample's members, then the end-of-archive blocks the strict tar reader expects
        samples = iter_webdataset(io.BytesIO(data + bytes(2 * BLOCK)), shard)
    else:
        from shards.format.tfrecord_codec import iter_tfrecord

        samples = iter_tfrecord(io.BytesIO(data), shard)
    found = list(samples)
    if len(found) != 1:
        raise ShardError(f"shard {shard}: {len(found)} samples at sample #{index}'s offsets, not one; "
                         f"{ADD_OFFSETS_HINT}")
    sample = found[0]
    sample.index = index
    return sample


def read_sample(path: str, fmt: str, index: int, offsets: np.ndarray) -> LazySample:
    """Sample `index` of the shard at `path` (local or URL), read with one range read."""
    if not 0 <= index < len(offsets) - 1:
        raise IndexError(f"sample #{index} out of range for shard {path} with {len(offsets) - 1} samples")
    data = read_range(path, int(offsets[index]), int(offsets[index + 1]))
    return sample_from_bytes(data, fmt, path, index)


def scan_offsets(path: str, fmt: str) -> list[int]:
    """The offsets (starts + the last end) of a shard written without a sidecar, by reading it once."""
    with storage.open_path(path, "rb") as f:
        return _scan_tar(f, path) if fmt == "webdataset" else _scan_tfrecord(f, path)


def _scan_tar(f, path: str) -> list[int]:
    offsets, key, end = [], None, 0
    try:
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:  # (headers only: nothing is extracted)
                k = check_member_name(member.name, path)[0]
                if k != key:
                    offsets.append(member.offset)
                    key = k
                end = member.offset_data + member.size + (-member.size % BLOCK)
    except tarfile.TarError as e:
        raise ShardError(f"shard {path}: not a readable tar ({e}); run `mbt validate` on it") from None
    return offsets + [end] if offsets else [0]


def _scan_tfrecord(f, path: str) -> list[int]:
    from shards.format.tfrecord_codec import masked_crc

    offsets, pos, size = [], 0, storage.size(path)
    while True:
        head = read_exact(f, 12)
        if not head:
            return offsets + [pos]
        (length,) = struct.unpack("<Q", head[:8].ljust(8, b"\0"))
        if len(head) < 12 or struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]) or (
                size is not None and pos + 16 + length > size):
            raise ShardError(f"shard {path}: record #{len(offsets)} at byte {pos} is truncated or its length "
                             f"field is corrupt; run `mbt validate` on it")
        offsets.append(pos)
        f.seek(length + 4, 1)
        pos += 16 + length
