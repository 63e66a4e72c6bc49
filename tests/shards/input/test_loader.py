"""shards.input end to end on real shards: batches, exactly-once, resume, format parity, bad input."""

from __future__ import annotations

import itertools
import json
import os
import shutil

import numpy as np
import pytest

from shards.format.errors import ShardError
from shards.input import BadInputWarning, InputConfig, make_input, tiny_input


def take(it, n):
    return list(itertools.islice(it, n))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
            assert np.array_equal(x[k], y[k]), k


def real_keys(batches):
    return [k for b in batches for k, m in zip(b["key"], b["mask"]) if m]


def test_batches_have_fixed_shapes_and_types(dataset, small_input):
    it = make_input(dataset, small_input(), seed=0, process_index=0, process_count=1)
    batch = next(it)
    assert batch["rgb"].shape == (4, 4, 32, 32, 3) and batch["rgb"].dtype == np.float32
    assert batch["spectrogram"].shape == (4, 100, 128) and batch["spectrogram"].dtype == np.float32
    assert batch["labels"].shape == (4, 5) and batch["labels"].dtype == np.float32
    assert set(np.unique(batch["labels"])) <= {0.0, 1.0} and (batch["labels"].sum(1) >= 1).all()
    assert batch["key"].shape == (4,) and batch["mask"].tolist() == [1, 1, 1, 1]
    for name in ("window", "frames_padded", "spec_padded"):
        assert batch[name].shape == (4,) and batch[name].dtype == np.int32
    # normalised: ImageNet-normalised pixels and mel values around 0
    assert -2.2 < batch["rgb"].min() and batch["rgb"].max() < 2.7
    assert abs(float(batch["spectrogram"].mean())) < 1.5
    assert json.loads(json.dumps(it.state())) == it.state()  # the state is plain JSON


def test_uint8_batches_are_the_float32_ones_before_normalisation(dataset, small_input):
    from shards.input.augment import normalize_rgb

    kw = dict(seed=3, process_index=0, process_count=1)
    f32 = take(make_input(dataset, small_input(), **kw), 2)
    u8 = take(make_input(dataset, small_input(rgb_uint8=True), **kw), 2)
    for a, b in zip(f32, u8):
        assert b["rgb"].dtype == np.uint8 and (a["key"] == b["key"]).all()
        np.testing.assert_array_equal(a["rgb"], normalize_rgb(b["rgb"]))
        np.testing.assert_array_equal(a["spectrogram"], b["spectrogram"])


def test_labels_as_class_index_and_verb_noun(tmp_path, small_input, make_clip, make_dataset):
    folder = make_dataset(tmp_path / "epic", [make_clip(f"e{i}", 1.0, labels=(i % 3,), verb=i, noun=2 * i)
                                               for i in range(6)], num_shards=2, formats=("webdataset",))
    cls = next(make_input(folder, small_input(labels="class_index"), training=False))
    assert cls["labels"].dtype == np.int32 and cls["labels"].shape == (4,)
    vn = next(make_input(folder, small_input(labels="verb_noun"), training=False))
    assert "labels" not in vn and (vn["noun"] == 2 * vn["verb"]).all()
    bad = make_input(folder, small_input(labels="verb_noun", num_classes=1), training=False)
    assert next(bad)["verb"].dtype == np.int32  # verb/noun don't check num_classes


def test_the_same_seed_gives_the_same_batches(dataset, small_input):
    cfg = small_input()
    a = take(make_input(dataset, cfg, seed=7, process_index=0, process_count=1), 6)
    b = take(make_input(dataset, cfg, seed=7, process_index=0, process_count=1), 6)
    c = take(make_input(dataset, cfg, seed=8, process_index=0, process_count=1), 6)
    assert_same_batches(a, b)
    assert real_keys(a) != real_keys(c)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_once_per_epoch_across_2_hosts_x_2_workers(dataset, small_input, workers):
    cfg = small_input(epochs=2, num_workers=workers, worker_processes=False)
    keys = {0: [], 1: []}
    per_host_batches = []
    for host in range(2):
        batches = list(make_input(dataset, cfg, seed=3, process_index=host, process_count=2))
        per_host_batches.append(len(batches))
        for b in batches:
            assert b["rgb"].shape[0] == 2  # batch_size 4 over 2 hosts
        keys_host = real_keys(batches)
        keys[0] += keys_host  # both epochs, both hosts
    assert sorted(keys[0]) == sorted([f"k{i:02d}" for i in range(20)] * 2)
    assert per_host_batches[0] == per_host_batches[1]  # hosts step in lockstep


def test_resume_continues_exactly(dataset, small_input):
    cfg = small_input(num_workers=2, worker_processes=False)  # two streams, shuffle buffers of 6
    it = make_input(dataset, cfg, seed=5, process_index=0, process_count=1)
    take(it, 3)
    saved = json.loads(json.dumps(it.state()))
    after = take(it, 9)  # crosses an epoch boundary of both streams (10 samples each)
    restored = make_input(dataset, cfg, seed=5, process_index=0, process_count=1, state=saved)
    assert_same_batches(take(restored, 9), after)
    assert restored.counts()["examples"] == it.counts()["examples"]


def test_resume_of_a_finite_evaluation_with_multi_clip_windows(dataset, small_input):
    cfg = small_input(test_windows=3)
    full = list(make_input(dataset, cfg, training=False))
    assert len(real_keys(full)) == 60 and full[-1]["mask"].sum() == 4  # 3 windows x 20 clips
    assert sorted(set(np.concatenate([b["window"] for b in full]).tolist())) == [0, 1, 2]
    it = make_input(dataset, cfg, training=False)
    head = take(it, 5)  # 20 windows: the batch boundary falls inside a clip's windows
    rest = list(make_input(dataset, cfg, training=False, state=it.state()))
    assert_same_batches(head + rest, full)


def test_tar_and_tfrecord_give_the_same_batches(dataset, small_input):
    cfg = small_input(colour_jitter=True, colour_prob=1.0, grayscale_prob=0.5, async_spectrogram=True)
    tar = take(make_input(dataset, cfg, seed=11, process_index=0, process_count=1), 6)
    tfr = take(make_input(dataset, InputConfig(**{**cfg.__dict__, "format": "tfrecord"}), seed=11,
                          process_index=0, process_count=1), 6)
    assert_same_batches(tar, tfr)


def test_evaluation_is_ordered_padded_and_lockstep(tmp_path, small_input, make_clips, make_dataset):
    folder = make_dataset(tmp_path / "uneven", make_clips(11), num_shards=3, formats=("webdataset",))
    cfg = small_input(batch_size=4)
    hosts = [list(make_input(folder, cfg, training=False, process_index=h, process_count=2)) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1])  # the index's counts let every host make the same number
    keys = real_keys(hosts[0]) + real_keys(hosts[1])
    assert sorted(keys) == [f"k{i:02d}" for i in range(11)]
    last = hosts[1][-1]
    assert last["mask"].min() == 0 and (last["rgb"][last["mask"] == 0] == 0).all()
    assert (last["key"][last["mask"] == 0] == "").all()
    again = list(make_input(folder, cfg, training=False, process_index=1, process_count=2))
    assert_same_batches(again, hosts[1])


def test_short_clips_are_padded_not_dropped(tmp_path, small_input, make_clip, make_dataset):
    folder = make_dataset(tmp_path / "short", [make_clip("short_1", 0.4), make_clip("long_1", 2.0)],
                           num_shards=1, formats=("tfrecord",))
    it = make_input(folder, small_input(batch_size=2), training=False)
    (batch,) = list(it)
    got = dict(zip(batch["key"], zip(batch["frames_padded"], batch["spec_padded"])))
    assert got == {"short_1": (2, 60), "long_1": (0, 0)}
    assert it.counts()["padded_video"] == 1 and it.counts()["padded_audio"] == 1


# ---------------------------------------------------------------------------------------- bad input

@pytest.fixture
def broken(tmp_path, make_clips, make_dataset):
    """A copy of a 12-clip dataset in both formats, to break."""
    def make(name):
        return make_dataset(tmp_path / name, make_clips(12), num_shards=3)
    return make


def keys_of_shard(path, fmt):
    from shards.input.source import iter_shard
    return [s.key for s in iter_shard(path, fmt)]


def relist(folder, path):
    """Make the index list `path` at its present size: a shard broken before it was indexed (the
    training input's bad-input policy), not one changed after (which every reader refuses)."""
    import json

    index_file = os.path.join(folder, "train.index.json")
    index = json.load(open(index_file))
    for entries in index["shards"].values():
        for entry in entries:
            if entry["path"] == os.path.basename(path):
                entry["bytes"] = os.path.getsize(path)
    json.dump(index, open(index_file, "w"))


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_truncated_shard_skip_counts_and_warns_raise_names_it(broken, small_input, fmt):
    folder = broken(f"trunc_{fmt}")
    ext = ".tar" if fmt == "webdataset" else ".tfrecord"
    path = os.path.join(folder, f"train-00001-of-00003{ext}")
    keys = keys_of_shard(path, fmt)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    cfg = small_input(format=fmt, epochs=1)
    with pytest.raises(ShardError, match=rf"train-00001-of-00003{ext} has \d+ bytes, but .* the split is not whole"):
        make_input(folder, cfg, seed=0)  # cut after its index was written: refused at once
    relist(folder, path)
    with pytest.warns(BadInputWarning, match=rf"train-00001-of-00003{ext}"):
        it = make_input(folder, cfg, seed=0)
        got = real_keys(list(it))
    assert it.counts()["bad_shard"] == 1
    assert set(got) < {f"k{i:02d}" for i in range(12)} and len(got) >= 12 - len(keys)
    with pytest.raises(ShardError, match=rf"train-00001-of-00003{ext}.*truncated"):
        list(make_input(folder, cfg, training=False))


def test_sample_missing_a_field_skip_and_raise(tmp_path, small_input, make_clips, make_dataset):
    from shards.format.webdataset_codec import _member_header, encode_members

    folder = make_dataset(tmp_path / "missing", make_clips(6), num_shards=1, formats=("webdataset",))
    path = os.path.join(folder, "train-00000-of-00001.tar")
    members = [m for s in sorted(make_clips(6), key=lambda s: s.key) for m in encode_members(s)
               if m[0] != "k02.mjpeg"]
    with open(path, "wb") as f:
        for name, data in members:
            f.write(_member_header(name, len(data)) + data + bytes(-len(data) % 512))
        f.write(bytes(1024))
    relist(folder, path)
    cfg = small_input(batch_size=5, epochs=1)
    with pytest.warns(BadInputWarning, match=r"sample k02 of shard .*train-00000-of-00001\.tar \(bad_sample\)"):
        it = make_input(folder, cfg, seed=0)
        got = real_keys(list(it))
    assert sorted(got) == ["k00", "k01", "k03", "k04", "k05"] and it.counts()["bad_sample"] == 1
    with pytest.raises(ShardError, match=r"sample k02 is missing k02\.mjpeg"):
        list(make_input(folder, cfg, training=False))


def test_undecodable_jpeg_skip_and_raise(tmp_path, small_input, make_clips, make_dataset):
    samples = make_clips(6)
    samples[3].frames = [b"\xff\xd8" + bytes(200)] * len(samples[3].frames)  # k03: no frame decodes
    folder = make_dataset(tmp_path / "jpeg", samples, num_shards=2)
    for fmt in ("webdataset", "tfrecord"):
        cfg = small_input(batch_size=5, epochs=1, format=fmt)
        with pytest.warns(BadInputWarning, match=r"sample k03 of shard .* \(bad_jpeg\)"):
            it = make_input(folder, cfg, seed=0)
            assert sorted(real_keys(list(it))) == ["k00", "k01", "k02", "k04", "k05"]
        assert it.counts()["bad_jpeg"] == 1
        with pytest.raises(ShardError, match=r"sample k03: frame \d+ is not a decodable JPEG"):
            list(make_input(folder, cfg, training=False))


def test_no_usable_sample_raises_instead_of_hanging(tmp_path, small_input, make_clips, make_dataset):
    samples = make_clips(2)
    for s in samples:
        s.frames = [b"\xff\xd8" + bytes(50)] * len(s.frames)
    folder = make_dataset(tmp_path / "allbad", samples, num_shards=1, formats=("webdataset",))
    with pytest.warns(BadInputWarning), pytest.raises(ShardError, match="no usable sample in a whole epoch"):
        next(make_input(folder, small_input(), seed=0))


def test_specs_and_configs_that_cannot_work_are_clear_errors(dataset, tmp_path, small_input):
    with pytest.raises(ShardError, match="empty shard list"):
        make_input([], small_input())
    with pytest.raises(ShardError, match=r"'.*nothing-\*\.tar' matches no shard"):
        make_input(str(tmp_path / "nothing-*.tar"), small_input())
    with pytest.raises(ValueError, match="crop must be"):
        small_input(crop="zoom")
    with pytest.raises(ValueError, match="does not split evenly over 3 hosts"):
        make_input(dataset, small_input(), process_index=0, process_count=3)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(os.path.join(dataset, "train-00000-of-00004.tar"), lone / "x-00000-of-00001.tar")
    with pytest.raises(ValueError, match="set InputConfig.num_classes"):
        make_input(str(lone / "x-00000-of-00001.tar"), small_input())
    with pytest.raises(ValueError, match="no mel statistics"):
        make_input(str(lone / "x-00000-of-00001.tar"), small_input(num_classes=5))
    it = make_input(dataset, small_input(), seed=1, process_index=0, process_count=1)
    next(it)
    with pytest.raises(ValueError, match="seed: saved 1, now 2"):
        make_input(dataset, small_input(), seed=2, process_index=0, process_count=1, state=it.state())


def test_tiny_preset_runs(dataset):
    batch = next(make_input(dataset, tiny_input(), seed=0, process_index=0, process_count=1))
    assert batch["rgb"].shape == (4, 4, 32, 32, 3)


@pytest.mark.slow
def test_two_worker_processes_give_the_in_process_batches_and_resume(dataset, small_input):
    procs = small_input(num_workers=2)
    inproc = small_input(num_workers=2, worker_processes=False)
    kw = dict(seed=9, process_index=0, process_count=1)
    with make_input(dataset, procs, **kw) as it:
        head = take(it, 4)
        saved = it.state()
        tail = take(it, 4)
    assert_same_batches(head + tail, take(make_input(dataset, inproc, **kw), 8))
    with make_input(dataset, procs, state=saved, **kw) as restored:
        assert_same_batches(take(restored, 4), tail)
    # exactly once per epoch with real worker processes too (2 hosts x 2 workers)
    cfg = small_input(num_workers=2, epochs=1)
    keys = [k for h in range(2) for k in real_keys(list(make_input(dataset, cfg, seed=2, process_index=h,
                                                                   process_count=2)))]
    assert sorted(keys) == [f"k{i:02d}" for i in range(20)]


@pytest.mark.slow
def test_worker_batches_are_lent_without_copies_and_never_overwritten_while_held(dataset, small_input):
    from shards.input import workers

    kw = dict(seed=4, process_index=0, process_count=1)
    expected = take(make_input(dataset, small_input(num_workers=1, worker_processes=False), **kw), 12)
    with make_input(dataset, small_input(num_workers=1), **kw) as it:
        ring = it._ring
        held = take(it, 6)  # more than a worker's LEASES: the rest are copies, the worker never waits
        blocks = [b.numpy() for b in ring.blocks[0]]
        in_slots = [any(np.shares_memory(b["rgb"], block) for block in blocks) for b in held]
        assert sum(in_slots) == workers.LEASES and ring.lent[0] == workers.LEASES
        del held[:2]  # the lent ones go back to the worker, which reuses them...
        assert ring.lent[0] == 0
        held += take(it, 6)  # ...for later batches, while the copies held meanwhile stay intact
    assert_same_batches(held, expected[2:])


def test_no_readable_sample_through_workers_is_one_line_naming_the_stream(tmp_path, small_input, make_clips,
                                                                         make_dataset):
    import dataclasses

    clips = [dataclasses.replace(c, frames=[f[:2] + bytes(len(f) - 2) for f in c.frames]) for c in make_clips(4)]
    folder = make_dataset(tmp_path / "garbage", clips, num_shards=1, formats=("webdataset",))
    with pytest.raises(ShardError) as e:  # (the worker warns about each skip on its own stderr)
        next(make_input(folder, small_input(num_workers=1), seed=0))
    assert "no usable sample" in str(e.value) and "Traceback" not in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_the_import_path_from_before_the_two_rooms_still_works():
    import shards.input
    import shards.stream

    assert {"make_input", "InputConfig"} <= set(shards.stream.__all__)
    for name in shards.stream.__all__:
        assert getattr(shards.stream, name) is getattr(shards.input, name)


def test_fixed_mel_statistics_replace_the_index_s_each_on_its_own():
    # AST's constants on kaldi_fbank features: `--input.mel_mean=... --input.mel_std=...` set one at a time
    from mbt.train_config import get_config
    from shards.input import mel_statistics
    from shards.input.config import AST_MEL_MEAN, AST_MEL_STD

    index = {"mel_mean": -5.0, "mel_std": 3.0}
    cfg = get_config("tiny", [f"input.mel_mean={AST_MEL_MEAN}", f"input.mel_std={AST_MEL_STD}"]).input
    assert mel_statistics(cfg, index, "d") == (AST_MEL_MEAN, AST_MEL_STD) == (-4.2677393, 4.5689974 * 2)
    assert mel_statistics(InputConfig(mel_mean=1.0), index, "d") == (1.0, 3.0)
    assert mel_statistics(InputConfig(mel_std=2.0), index, "d") == (-5.0, 2.0)
    assert mel_statistics(InputConfig(), index, "d") == (-5.0, 3.0)
    with pytest.raises(ShardError, match="no mel statistics"):
        mel_statistics(InputConfig(mel_mean=1.0), {}, "d")
