"""The grain data source: a split read by sample number through grain's own pipeline and checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from shards.format.checksum import crc32c_hex
from shards.format.dataset_index import load_index, shard_paths
from shards.format.errors import ShardError
from shards.format.offsets import encode_offsets, offsets_name, scan_offsets
from shards.format.reader import read_shard
from shards.input import ShardDataSource

grain = pytest.importorskip("grain")


def with_offsets(folder: str) -> str:
    """Record the offsets sidecars of a dataset made without them (what `validate --add-offsets` does)."""
    path = os.path.join(folder, "train.index.json")
    index = json.loads(open(path).read())
    loaded = load_index(folder, "train")
    for fmt, entries in index["shards"].items():
        for entry, shard in zip(entries, shard_paths(loaded, fmt)):
            data = encode_offsets(scan_offsets(shard, fmt))
            with open(os.path.join(folder, offsets_name(shard)), "wb") as f:
                f.write(data)
            entry["offsets"], entry["offsets_crc32c"] = offsets_name(shard), crc32c_hex(data)
    with open(path, "w") as f:
        json.dump(index, f)
    return folder


def test_a_split_without_offsets_is_one_line_naming_add_offsets(dataset):
    with pytest.raises(ShardError, match=r"mbt validate DIR --add-offsets") as e:
        ShardDataSource(dataset, "train")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_sample_i_is_the_ith_sample_of_the_split_in_shard_order(make_dataset, make_clips, tmp_path, fmt):
    folder = with_offsets(make_dataset(tmp_path / "ds", make_clips(11), num_shards=3))
    source = ShardDataSource(folder, "train", fmt=fmt)
    streamed = [s for p in shard_paths(load_index(folder, "train"), fmt) for s in read_shard(p)]
    assert len(source) == len(streamed) == 11
    for i, s in enumerate(streamed):
        got = source[i]
        assert got["key"] == s.key and got["frames"] == s.frames and got["labels"] == s.labels
        assert np.array_equal(got["melspec"], s.melspec) and got["meta"] == s.meta
    with pytest.raises(IndexError):
        source[11]
    # what grain's worker processes get: a small pickle (no offsets), reading the same samples
    again = pickle.loads(pickle.dumps(source))
    assert not again._offsets and again[7]["key"] == streamed[7].key


def test_a_grain_pipeline_checkpointed_mid_epoch_continues_exactly(make_dataset, make_clips, tmp_path):
    folder = with_offsets(make_dataset(tmp_path / "ds", make_clips(12), num_shards=3))
    source = ShardDataSource(folder, "train")

    def summary(sample: dict) -> tuple:  # a transform of grain's: what a model would take
        return sample["key"], len(sample["frames"]), float(sample["melspec"].mean())

    ds = grain.MapDataset.source(source).shuffle(seed=7).map(summary)
    whole = list(ds)
    assert sorted(k for k, _, _ in whole) == sorted(source[i]["key"] for i in range(len(source)))

    it = iter(ds.to_iter_dataset())
    first = [next(it) for _ in range(5)]
    state = it.get_state()
    rest = list(it)
    assert first + rest == whole
    restored = iter(ds.to_iter_dataset())
    restored.set_state(state)
    assert list(restored) == rest

    # grain's DataLoader with an IndexSampler over the same source, two epochs, saved and restored
    sampler = grain.samplers.IndexSampler(len(source), shard_options=grain.sharding.NoSharding(), shuffle=True,
                                          num_epochs=2, seed=3)
    loader = grain.DataLoader(data_source=source, sampler=sampler, operations=[], worker_count=0)
    it = iter(loader)
    head = [next(it)["key"] for _ in range(15)]  # into the second epoch
    state = it.get_state()
    tail = [s["key"] for s in it]
    assert len(head + tail) == 24 and sorted(head[:12]) == sorted(source[i]["key"] for i in range(12))
    again = iter(grain.DataLoader(data_source=source, sampler=sampler, operations=[], worker_count=0))
    again.set_state(state)
    assert [s["key"] for s in again] == tail
