"""read_shard / read_shard_lazy: one reader for both encodings, same samples out of each."""

from __future__ import annotations

import io

import pytest

from shards.format.errors import ShardError
from shards.format.naming import shard_name
from shards.format.reader import read_shard, read_shard_lazy
from shards.format.tfrecord_codec import write_tfrecord
from shards.format.webdataset_codec import write_webdataset

WRITERS = {"webdataset": write_webdataset, "tfrecord": write_tfrecord}


@pytest.fixture
def shard_paths(samples, tmp_path):
    """{fmt: path} of one shard of `samples` in each encoding."""
    paths = {}
    for fmt, write in WRITERS.items():
        paths[fmt] = tmp_path / shard_name("train", 0, 1, fmt)
        with open(paths[fmt], "wb") as f:
            write(f, samples)
    return paths


def test_both_encodings_read_back_the_same_samples(samples, shard_paths):
    tar = list(read_shard(shard_paths["webdataset"]))  # format from the extension
    tfr = list(read_shard(str(shard_paths["tfrecord"])))
    assert len(tar) == len(tfr) == len(samples)
    for original, a, b in zip(samples, tar, tfr):
        assert a.equals(b) and a.equals(original)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_reads_open_and_non_seekable_files(samples, shard_paths, fmt, non_seekable):
    with open(shard_paths[fmt], "rb") as f:  # named file object: format from f.name
        assert all(a.equals(b) for a, b in zip(samples, read_shard(f), strict=True))
    stream = non_seekable(shard_paths[fmt].read_bytes())
    assert all(a.equals(b) for a, b in zip(samples, read_shard(stream, fmt=fmt), strict=True))


def test_lazy_samples_agree_across_encodings(samples, shard_paths):
    tar = list(read_shard_lazy(shard_paths["webdataset"]))
    tfr = list(read_shard_lazy(shard_paths["tfrecord"]))
    for i, (a, b) in enumerate(zip(tar, tfr, strict=True)):
        assert a.index == b.index == i
        assert a.header == b.header
        assert a.num_frames == b.num_frames == len(samples[i].frames)
        last = a.num_frames - 1
        assert a.frames([last, 0]) == b.frames([last, 0]) == [samples[i].frames[last], samples[i].frames[0]]
        assert (a.melspec == b.melspec).all() and a.to_sample().equals(b.to_sample())


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ShardError, match="pass fmt="):
        list(read_shard(io.BytesIO(b"")))
    with pytest.raises(ShardError, match=r"cannot tell the shard format of .*x\.zip"):
        list(read_shard(tmp_path / "x.zip"))
    with pytest.raises(ShardError, match=r"cannot open shard .*nope\.tar"):
        list(read_shard(tmp_path / "nope.tar"))
    with pytest.raises(ValueError, match="unknown shard format"):
        list(read_shard(io.BytesIO(b""), fmt="zip"))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_errors_name_the_shard_path(shard_paths, fmt, tmp_path):
    cut = tmp_path / shard_name("train", 0, 1, fmt).replace("train", "cut")
    cut.write_bytes(shard_paths[fmt].read_bytes()[:-20000])
    with pytest.raises(ShardError, match=str(cut)):
        list(read_shard(cut))
