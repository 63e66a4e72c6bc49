"""Staged samples: a decoded clip's shard bytes, written out by the worker that decoded it.

A sample's payload (megabytes of JPEGs) never travels through a shuffle. DecodeClip encodes a clip in
every requested format once and writes the pieces (exactly the bytes each shard will hold for it,
format after format) to one staged file under `OUT/.staging-SPLIT-JOB/`; only a record of a few
hundred bytes (key, staged path, bytes per format) goes on through GroupByKey. WriteShard then
streams its shard's staged pieces, in key order, into the shard (temporary name, then rename) and
removes them. Everything goes through shards.format.storage, so the staging area lives beside the
output on a local disk or in a bucket alike. A job removes its staging folder however it ends; what a
killed job staged is removed by the next job that takes the split's lock.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Sequence

from shards.format import storage
from shards.format.schema import Sample

STAGING_PREFIX = ".staging-"
STAGED_SUFFIX = ".sample"
_CHUNK = 1 << 20


def codec(fmt: str):
    """The codec module of a shard format: `sample_bytes(sample)` and `shard_end(written)`."""
    if fmt == "webdataset":
        from shards.format import webdataset_codec as module
    else:
        from shards.format import tfrecord_codec as module
    return module


def staging_dir(output: str, split: str, job: str) -> str:
    """The staging folder of one job: hidden, so no reader or shard pattern ever sees it."""
    return storage.join(output, f"{STAGING_PREFIX}{split}-{job}")


def stage_sample(folder: str, sample: Sample, formats: Sequence[str]) -> dict[str, Any]:
    """Write `sample`'s bytes in every format to one staged file; return the small record that
    stands for it in the shuffle."""
    pieces = [codec(fmt).sample_bytes(sample) for fmt in formats]
    path = storage.join(folder, sample.key + STAGED_SUFFIX)
    storage.makedirs(folder)
    with storage.open_path(path, "wb") as f:
        for piece in pieces:
            f.write(piece)
    return {"key": sample.key, "staged": path, "sizes": [len(p) for p in pieces]}


def shard_size(records: Sequence[dict[str, Any]], fmt: str, position: int) -> int:
    """The bytes of the shard that `records` make in the format at `position` of the staged files."""
    body = sum(r["sizes"][position] for r in records)
    return body + len(codec(fmt).shard_end(body))


def copy_staged(records: Sequence[dict[str, Any]], fmt: str, position: int, out: BinaryIO) -> None:
    """Stream one format's pieces of `records` (in the given order) into `out`, then the shard's end;
    never more than a megabyte in memory."""
    written = 0
    for r in records:
        offset, size = sum(r["sizes"][:position]), r["sizes"][position]
        with storage.open_path(r["staged"], "rb") as f:
            if offset:
                f.seek(offset)
            left = size
            while left:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    raise OSError(f"{r['staged']}: staged file ends {left} bytes early")
                out.write(chunk)
                left -= len(chunk)
        written += size
    out.write(codec(fmt).shard_end(written))


def remove_staged(records: Sequence[dict[str, Any]]) -> None:
    storage.delete([r["staged"] for r in records])
