"""A dataset split as a grain `RandomAccessDataSource`: sample i by its number, for grain's own
samplers, sharding, transforms and checkpointing.

    import grain
    from shards.input.grain_source import ShardDataSource

    source = ShardDataSource("gs://B/audioset", split="train")     # local or gs://
    ds = grain.MapDataset.source(source).shuffle(seed=0).map(my_transform).batch(32)

Global sample i is sample i - counts[:s].sum() of shard s (the index's shards in order, their sample
counts cumulated), read with one range read through its shard's offsets sidecar (shards.format.offsets;
each sidecar is read once per process, 8 bytes a sample). A dataset made before the sidecars existed
is one line naming `mbt validate --add-offsets`. grain is imported by grain, not here: this class has
the methods its RandomAccessDataSource protocol asks for (`__len__`, `__getitem__`), and pickles small
(folder, split, format; the sidecars are read again in each worker process).
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import numpy as np

from shards.format import dataset_index
from shards.format.errors import ShardError
from shards.format.lazy import LazySample
from shards.format.offsets import ADD_OFFSETS_HINT, has_offsets, load_offsets, read_sample


class ShardDataSource:
    """The samples of one split of a dataset folder, by number, as dicts:

    key (str), frames (list of the frames' JPEG bytes, undecoded: decode what you sample with
    shards.format.jpeg or any JPEG decoder), melspec (float32 [T, 128]), labels (list of class
    indices into the index's `classes`), label_text, meta (dict), verb and noun (EPIC; else None)."""

    def __init__(self, folder: str, split: str = "train", fmt: str | None = None):
        self.folder, self.split = folder, split
        index = dataset_index.load_index(folder, split)
        self.fmt = fmt or ("webdataset" if "webdataset" in index["shards"] else next(iter(index["shards"])))
        if not has_offsets(index, self.fmt):
            raise ShardError(f"{index['index_path']}: no sample offsets recorded (an older dataset), so "
                             f"its samples can't be read by number; {ADD_OFFSETS_HINT}")
        self._paths = dataset_index.shard_paths(index, self.fmt)
        self._entries = index["shards"][self.fmt]
        self._starts = list(itertools.accumulate((e["samples"] for e in self._entries), initial=0))
        self._index = index
        self._offsets: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, sample in that shard) of global sample `i`."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        shard = bisect.bisect_right(self._starts, i) - 1
        return shard, i - self._starts[shard]

    def lazy(self, i: int) -> LazySample:
        """Global sample `i` as the LazySample the streaming reader yields for it."""
        shard, k = self.locate(i)
        if shard not in self._offsets:
            self._offsets[shard] = load_offsets(self._index, self._entries[shard])
        return read_sample(self._paths[shard], self.fmt, k, self._offsets[shard])

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.lazy(i).to_sample()
        return {"key": s.key, "frames": s.frames, "melspec": s.melspec, "labels": s.labels,
                "label_text": s.label_text, "meta": s.meta, "verb": s.verb, "noun": s.noun}

    def __repr__(self) -> str:
        return f"ShardDataSource({self.folder!r}, split={self.split!r}, fmt={self.fmt!r}, {len(self)} samples)"

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "_offsets": {}}  # (a worker reads the sidecars it needs itself)
