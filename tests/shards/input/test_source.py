"""shards.input.source: shard specs (brace, folder + split, index, glob, list, URL) -> ordered shard lists."""

from __future__ import annotations

import os

import pytest

from shards.format.errors import ShardError
from shards.format.tar_members import DeferredMember
from shards.format.webdataset_codec import _member_header, encode_members
from shards.input import source


def names(src) -> list[str]:
    return [os.path.basename(p) for p in src.paths]


def test_brace_pattern_finds_the_index_beside_the_shards(dataset):
    src = source.resolve(os.path.join(dataset, "train-{00000..00003}-of-00004.tfrecord"))
    assert src.fmt == "tfrecord" and len(src.paths) == 4
    assert names(src) == sorted(names(src))
    assert src.index is not None and src.num_samples == 20 and src.index["classes"]


def test_folder_and_split_read_the_index_and_prefer_webdataset(dataset):
    tar = source.resolve(dataset, split="train")
    tfr = source.resolve(dataset, split="train", fmt="tfrecord")
    assert tar.fmt == "webdataset" and tfr.fmt == "tfrecord"
    # both encodings resolve to the same shard order: shard ids mean the same samples
    assert [n.rsplit(".", 1)[0] for n in names(tar)] == [n.rsplit(".", 1)[0] for n in names(tfr)]
    assert tar.fingerprint() == tfr.fingerprint()
    assert tar.counts == tfr.counts and sum(tar.counts) == 20
    assert source.resolve(os.path.join(dataset, "train.index.json")).paths == tar.paths


def test_glob_list_and_single_path(dataset):
    globbed = source.resolve(os.path.join(dataset, "train-*.tar"))
    listed = source.resolve(list(reversed(globbed.paths)))  # sorted by name whatever the order given
    single = source.resolve(globbed.paths[2])
    assert globbed.paths == listed.paths and single.paths == (globbed.paths[2],)
    assert single.counts[0] == globbed.counts[2]


def test_specs_that_match_nothing_are_errors_naming_the_spec(dataset, tmp_path):
    with pytest.raises(ShardError, match="empty shard list"):
        source.resolve([])
    missing = str(tmp_path / "nope-{00000..00003}.tar")
    with pytest.raises(ShardError, match=r"nope-\{00000\.\.00003\}\.tar.* matches no shard"):
        source.resolve(missing)
    with pytest.raises(ShardError, match=r"matches no shard"):
        source.resolve(str(tmp_path / "*.tfrecord"))
    with pytest.raises(ShardError, match=r"1 of 5 shards are missing: .*train-00004-of-00004\.tar"):
        source.resolve(os.path.join(dataset, "train-{00000..00004}-of-00004.tar"))
    with pytest.raises(ShardError, match=r"no index for split 'test' \(splits here: train\)"):
        source.resolve(dataset, split="test")
    with pytest.raises(ShardError, match="mixes .tar and .tfrecord"):
        source.resolve(os.path.join(dataset, "train-00000-of-00004.*"))
    with pytest.raises(ShardError, match="neither"):
        (tmp_path / "x.zip").write_bytes(b"")
        source.resolve(str(tmp_path / "x.zip"))


def test_urls_go_through_fsspec(dataset):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for name in os.listdir(dataset):
        with open(os.path.join(dataset, name), "rb") as f, fs.open(f"/ds/{name}", "wb") as out:
            out.write(f.read())
    src = source.resolve("memory://ds/train-{00000..00003}-of-00004.tar")
    assert src.num_samples == 20  # the index beside the shards was found through the URL too
    keys = [s.key for p in src.paths for s in source.iter_shard(p, src.fmt)]
    assert sorted(keys) == [f"k{i:02d}" for i in range(20)]
    assert source.resolve("memory://ds", split="train").paths == tuple(f"memory://ds/{n}" for n in names(src))
    with pytest.raises(ShardError, match="memory://ds/nope"):
        source.resolve("memory://ds/nope-{0..1}.tar")


def test_a_tar_sample_missing_a_member_fails_alone(tmp_path, make_clip):
    good = [make_clip(f"s{i}", 1.0) for i in range(3)]
    path = tmp_path / "train-00000-of-00001.tar"
    with open(path, "wb") as f:
        members = [m for s in good for m in encode_members(s) if m[0] != "s1.mel.npy"]
        for name, data in members:
            f.write(_member_header(name, len(data)) + data + bytes(-len(data) % 512))
        f.write(bytes(1024))
    got = list(source.iter_shard(str(path), "webdataset"))
    assert [s.key for s in got] == ["s0", "s1", "s2"]  # the key is known without the JSON
    assert got[0].melspec.shape == (100, 128) and got[2].labels == [0]
    with pytest.raises(ShardError, match=r"sample s1 is missing s1\.mel\.npy"):
        got[1].melspec


def test_write_dataset_helper_round_trips(tmp_path, make_clip, make_dataset):
    folder = make_dataset(tmp_path / "d", [make_clip("a_1", 1.0), make_clip("b_2", 2.0)], num_shards=2,
                           formats=("webdataset",))
    src = source.resolve(folder)
    assert sum(src.counts) == 2
    assert [os.path.getsize(p) for p in src.paths] == [s["bytes"] for s in src.index["shards"]["webdataset"]]


def test_local_tar_frames_are_read_only_when_asked_for(dataset, make_clips, tmp_path):
    path = source.resolve(dataset).paths[1]
    originals = {s.key: s for s in make_clips(20)}
    seen = 0
    for lazy in source.iter_shard(path, "webdataset"):
        assert isinstance(lazy._members["mjpeg"], DeferredMember)  # left in the file, not read
        assert lazy.frames([3, 0]) == [originals[lazy.key].frames[3], originals[lazy.key].frames[0]]
        assert lazy.to_sample().equals(originals[lazy.key])
        seen += 1
    assert seen == source.resolve(dataset).counts[1]
    with pytest.raises(ShardError, match="read after the shard's iteration ended"):
        lazy.frame(0)
    cut = tmp_path / "train-00000-of-00001.tar"
    data = open(path, "rb").read()
    cut.write_bytes(data[:6000])  # inside the first sample's .mjpeg
    with pytest.raises(ShardError, match=r"train-00000-of-00001\.tar: truncated"):
        list(source.iter_shard(str(cut), "webdataset"))


def test_a_folder_named_like_an_index_is_one_line_naming_what_to_pass(tmp_path, small_input):
    from shards.input import make_input

    folder = tmp_path / "x.index.json"
    folder.mkdir()
    with pytest.raises(ShardError) as e:
        source.resolve(str(folder))
    message = str(e.value)
    assert len(message.splitlines()) == 1 and str(folder) in message
    assert "is a folder" in message and "pass the dataset folder that holds SPLIT.index.json" in message
    with pytest.raises(ShardError, match="is a folder"):  # as `mbt train --data` resolves it
        make_input(str(folder), small_input())
