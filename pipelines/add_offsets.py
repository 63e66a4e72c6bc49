"""Offsets sidecars for a dataset written before the index recorded them (`mbt validate --add-offsets`).

Each listed shard is read once (tar headers, TFRecord length fields) to find where its samples
start; its sidecar is written under the shard's own name + `.offsets` (a name the published index
does not list yet, so no reader sees it change), and a new index listing them replaces the old one
in one step, under the split's lock, by the same publication a job uses (pipelines.publish). The
shards themselves are not rewritten.
"""

from __future__ import annotations

from typing import Any

from pipelines.publish import publish, read_published
from pipelines.split_lock import split_lock
from shards.format import storage
from shards.format.checksum import crc32c_hex
from shards.format.dataset_index import list_splits, shard_paths
from shards.format.errors import ShardError
from shards.format.offsets import encode_offsets, load_offsets, offsets_name, scan_offsets


def add_offsets(folder: str, splits: list[str] | None = None) -> dict[str, int]:
    """Record the offsets of every shard of `splits` (default: all) that has none (or whose sidecar is
    missing or fails its CRC32C); returns the sidecars written per split (0: all were there)."""
    written = {}
    for split in splits or list_splits(folder):
        with split_lock(folder, split) as lock:
            published = read_published(folder, split)
            if published.index is None:
                raise ShardError(f"{storage.join(folder, split)}.index.json: no readable index to add offsets to")
            index = dict(published.index, folder=folder, index_path=storage.join(folder, split + ".index.json"))
            written[split] = sum(_add_split(index, fmt) for fmt in index["shards"])
            if written[split]:
                del index["folder"], index["index_path"]
                publish(folder, split, index, lock, published)
    return written


def _add_split(index: dict[str, Any], fmt: str) -> int:
    """Sidecars written for the shards of one format (their entries gain offsets, offsets_crc32c)."""
    n = 0
    for entry, path in zip(index["shards"][fmt], shard_paths(index, fmt)):
        if "offsets" in entry:
            try:
                load_offsets(index, entry)
                continue
            except (ShardError, OSError):
                pass  # missing or damaged: recorded again (the same name, replaced in one step)
        offsets = scan_offsets(path, fmt)
        if len(offsets) != entry["samples"] + 1:
            raise ShardError(f"{path}: {len(offsets) - 1} samples found, the index says {entry['samples']}; "
                             f"run `mbt validate` to see what is wrong with it")
        data = encode_offsets(offsets)
        storage.write_atomic(storage.join(index["folder"], offsets_name(path)), data)
        entry["offsets"], entry["offsets_crc32c"] = offsets_name(path), crc32c_hex(data)
        n += 1
    return n
