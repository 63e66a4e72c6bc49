"""Random access into both shard formats: the offsets sidecar, and sample i read with one range read
returning what the streaming reader yields."""

from __future__ import annotations

import itertools
import os
import struct

import numpy as np
import pytest

from shards.format import storage, tfrecord_codec, webdataset_codec
from shards.format.dataset_index import load_index, shard_paths
from shards.format.errors import ShardError
from shards.format.offsets import (decode_offsets, encode_offsets, load_offsets, read_sample, scan_offsets)
from shards.format.reader import read_shard_lazy

CODECS = {"webdataset": webdataset_codec, "tfrecord": tfrecord_codec}


def same(a, b) -> None:
    """Two LazySamples hold the same sample."""
    x, y = a.to_sample(), b.to_sample()
    assert (x.key, x.labels, x.label_text, x.meta, x.verb, x.noun) == (y.key, y.labels, y.label_text, y.meta,
                                                                      y.verb, y.noun)
    assert x.frames == y.frames and np.array_equal(x.melspec, y.melspec)


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_scanned_offsets_are_where_the_writer_put_each_sample(samples, tmp_path, fmt):
    # what pipelines.shard_io records: the sizes of the samples' pieces, cumulated
    codec = CODECS[fmt]
    path = str(tmp_path / f"train-00000-of-00001.{'tar' if fmt == 'webdataset' else 'tfrecord'}")
    with open(path, "wb") as f:
        (webdataset_codec.write_webdataset if fmt == "webdataset" else tfrecord_codec.write_tfrecord)(f, samples)
    written = list(itertools.accumulate((len(codec.sample_bytes(s)) for s in samples), initial=0))
    assert scan_offsets(path, fmt) == written
    offsets = decode_offsets(encode_offsets(written), len(samples), "x")
    for i, streamed in enumerate(read_shard_lazy(path, fmt)):
        lazy = read_sample(path, fmt, i, offsets)
        assert type(lazy) is type(streamed) and lazy.index == i
        same(lazy, streamed)
    with pytest.raises(IndexError):
        read_sample(path, fmt, len(samples), offsets)


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_every_sample_of_a_dataset_reads_by_number_as_it_streams(dataset, fmt):
    index = load_index(dataset, "train")
    for path in shard_paths(index, fmt):
        offsets = np.asarray(scan_offsets(path, fmt))
        assert offsets[-1] <= os.path.getsize(path)
        streamed = list(read_shard_lazy(path, fmt))
        assert len(offsets) == len(streamed) + 1
        for i in reversed(range(len(streamed))):  # (any order)
            same(read_sample(path, fmt, i, offsets), streamed[i])


def test_a_sidecar_that_is_not_offsets_is_refused():
    with pytest.raises(ShardError, match="whole number"):
        decode_offsets(b"123", None, "x.offsets")
    with pytest.raises(ShardError, match="add-offsets"):
        decode_offsets(encode_offsets([0, 10, 5]), 2, "x.offsets")
    with pytest.raises(ShardError, match="not 3 samples"):
        decode_offsets(encode_offsets([0, 10, 20]), 3, "x.offsets")
    index = {"index_path": "i.json", "folder": ".", "shards": {}}
    with pytest.raises(ShardError, match="mbt validate DIR --add-offsets"):
        load_offsets(index, {"path": "a.tar", "samples": 1})


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_from_a_bucket_each_sample_is_one_range_read(dataset, gcs_bucket, fmt):
    local = shard_paths(load_index(dataset, "train"), fmt)[1]
    remote = f"{gcs_bucket}/offsets-{fmt}/{os.path.basename(local)}"
    with open(local, "rb") as f:
        storage.write_atomic(remote, f.read())
    offsets = np.asarray(scan_offsets(remote, fmt))  # (scanned from the bucket too)
    assert list(offsets) == scan_offsets(local, fmt)
    streamed = list(read_shard_lazy(local, fmt))
    before = dict(storage.RANGE_READS)
    for i in range(len(streamed)):
        same(read_sample(remote, fmt, i, offsets), streamed[i])
    assert storage.RANGE_READS["requests"] - before["requests"] == len(streamed)
    assert storage.RANGE_READS["bytes"] - before["bytes"] == offsets[-1]  # each sample's bytes, once


def test_scanning_a_shard_with_a_forged_length_field_is_a_shard_error(samples, tmp_path):
    from shards.format.tfrecord_codec import masked_crc, write_tfrecord

    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    length = struct.pack("<Q", 2**60)
    with open(path, "wb") as f:
        write_tfrecord(f, samples)
        f.write(length + struct.pack("<I", masked_crc(length)) + bytes(64))
    with pytest.raises(ShardError, match=rf"record #{len(samples)} .* truncated or its length"):
        scan_offsets(path, "tfrecord")
