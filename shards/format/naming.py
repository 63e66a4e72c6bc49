"""Shard file names, the stable key -> shard assignment, and how many shards a split needs.

`train-00003-of-00064.tar`: the TFDS / webdataset convention, so brace patterns
(`train-{00000..00063}.tar`) and other tools find the files.
"""

from __future__ import annotations

import hashlib
import math
import os
import re

from shards.format.schema import check_key

FORMATS = ("webdataset", "tfrecord")  # the two encodings, as the CLI's --format names them
EXTENSIONS = {"webdataset": ".tar", "tfrecord": ".tfrecord"}

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")  # no '-': it separates split from shard number
_GENERATION_RE = re.compile(r"^[0-9a-f]{8}$")
_NAME_RE = re.compile(
    r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5,})-of-(?P<num>\d{5,})(?:-g(?P<generation>[0-9a-f]{8}))?"
    r"(?P<ext>\.tar|\.tfrecord)$")


def check_format(fmt: str) -> str:
    """Return `fmt` if it is one of FORMATS, else raise ValueError listing them."""
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown shard format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def shard_name(split: str, index: int, num_shards: int, fmt: str, generation: str | None = None) -> str:
    """File name of shard `index` of `num_shards`: `train-00000-of-00064.tar` (or `.tfrecord`); with
    the ingestion job's `generation` (8 hex digits), `train-00000-of-00064-g1a2b3c4d.tar`, so a new
    generation's shards never replace an older one's before its index is written."""
    if not _SPLIT_RE.match(split):
        raise ValueError(f"invalid split name {split!r}: use [A-Za-z0-9_] only (e.g. train, validation)")
    if not (isinstance(num_shards, int) and num_shards >= 1 and isinstance(index, int)
            and 0 <= index < num_shards):
        raise ValueError(f"shard index {index!r} out of range for {num_shards!r} shards")
    if generation is not None and not _GENERATION_RE.match(generation):
        raise ValueError(f"invalid generation {generation!r}: use 8 hex digits")
    tag = f"-g{generation}" if generation else ""
    return f"{split}-{index:05d}-of-{num_shards:05d}{tag}{EXTENSIONS[check_format(fmt)]}"


def parse_shard_name(name: str) -> tuple[str, int, int, str]:
    """(split, index, num_shards, fmt) of a shard file name or path; ValueError if it isn't one."""
    m = _NAME_RE.match(os.path.basename(str(name)))
    if not m or int(m["index"]) >= int(m["num"]):
        raise ValueError(f"{name!r} is not a shard name like train-00000-of-00064.tar")
    fmt = next(f for f, ext in EXTENSIONS.items() if ext == m["ext"])
    return m["split"], int(m["index"]), int(m["num"]), fmt


def format_for_path(path: str | os.PathLike) -> str:
    """The format a shard path's extension says (`.tar` -> webdataset, `.tfrecord` -> tfrecord)."""
    p = os.fspath(path)
    p = p.decode() if isinstance(p, bytes) else p
    for fmt, ext in EXTENSIONS.items():
        if p.endswith(ext):
            return fmt
    raise ValueError(f"cannot tell the shard format of {p!r}: name it *.tar or *.tfrecord, or pass fmt=")


def assign_shard(key: str, num_shards: int) -> int:
    """The shard a sample goes to: a stable hash of its key (the same on every machine and run)."""
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    digest = hashlib.sha256(check_key(key).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def num_shards_for(num_samples: int, samples_per_shard: int) -> int:
    """How many shards hold `num_samples` at about `samples_per_shard` each (at least one)."""
    if not (isinstance(samples_per_shard, int) and samples_per_shard >= 1):
        raise ValueError(f"samples_per_shard must be a positive int, got {samples_per_shard!r}")
    if not (isinstance(num_samples, int) and num_samples >= 0):
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    return max(1, math.ceil(num_samples / samples_per_shard))
