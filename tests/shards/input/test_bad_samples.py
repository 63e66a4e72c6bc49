"""The training input and damaged samples: each is one counted, named skip, never a batch, never an
allocation of what a forged header claims, and a small split with one of them still trains."""

from __future__ import annotations

import itertools
import json
import os
import struct
import tarfile
import warnings

import numpy as np
import pytest

from shards.format.errors import ShardError
from shards.input import BadInputWarning, make_input


def real_keys(batches):
    return [str(k) for b in batches for k, m in zip(b["key"], b["mask"]) if m]


def small_clips(make_clip, n: int, seconds: float = 1.0):
    """n one-second clips of 16x16 frames: keys c00, c01, ..."""
    return [make_clip(f"c{i:02d}", seconds, labels=(i % 5,), seed=i, width=16, height=16) for i in range(n)]


def shard_of(folder: str, key: str, ext: str) -> str:
    """The shard of `folder` that holds sample `key`."""
    from shards.format.reader import read_shard_lazy

    for name in sorted(os.listdir(folder)):
        if name.endswith(ext) and key in [s.key for s in read_shard_lazy(os.path.join(folder, name))]:
            return os.path.join(folder, name)
    raise AssertionError(f"no shard holds {key}")


def flip_mel_to_inf(folder: str, key: str) -> str:
    """Write +inf into every row of KEY.mel.npy, in place (the tar keeps its size: the index still fits)."""
    path = shard_of(folder, key, ".tar")
    with tarfile.open(path) as tar:
        member = tar.getmember(f"{key}.mel.npy")
    rows = (member.size - 128) // 512
    with open(path, "r+b") as f:
        for row in range(rows):
            f.seek(member.offset_data + 128 + row * 512 + 4 * (row % 128))
            f.write(np.float32(np.inf).tobytes())
    return path


def forge_frames(sample, height: int, width: int):
    """The sample with every frame's SOF header claiming height x width (its data unchanged)."""
    frames = []
    for frame in sample.frames:
        data = bytearray(frame)
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
        frames.append(bytes(data))
    sample.frames = frames
    return sample


def caught(fn):
    """(what fn() returned, the BadInputWarnings it raised)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in seen if issubclass(w.category, BadInputWarning)]


@pytest.mark.parametrize("damage", ["jpeg", "melspec"])
def test_a_small_split_with_one_bad_sample_trains_every_epoch(tmp_path, small_input, make_clip, make_dataset, damage):
    """32 samples, one bad, a shuffle buffer larger than the split (as the tiny preset's): the reader
    runs epochs ahead of what leaves the buffer, which must not read as an epoch without a good sample."""
    clips = small_clips(make_clip, 32)
    if damage == "jpeg":  # found after the shuffle buffer, when the frames are decoded
        clips[5].frames = [b"\xff\xd8" + bytes(60)] * len(clips[5].frames)
    folder = make_dataset(tmp_path / damage, clips, num_shards=2, formats=("webdataset",))
    if damage == "melspec":  # found before it, when the window is cut
        flip_mel_to_inf(folder, "c05")
    good = sorted(c.key for c in clips if c.key != "c05")
    cfg = small_input(batch_size=8, shuffle_buffer=64)

    it = make_input(folder, cfg, seed=0)  # endless, as training is: four epochs' worth of batches
    batches, warned = caught(lambda: list(itertools.islice(it, 16)))
    assert sorted(set(real_keys(batches))) == good
    reason = "bad_jpeg" if damage == "jpeg" else "bad_sample"
    assert it.counts()[reason] >= 3 and all("sample c05 of shard" in w for w in warned)

    it = make_input(folder, small_input(batch_size=8, shuffle_buffer=64, epochs=1), seed=0)
    batches, warned = caught(lambda: list(it))
    assert sorted(real_keys(batches)) == good  # the 31 good samples, each once
    assert it.counts()[reason] == 1 and len(warned) == 1 and f"({reason})" in warned[0]


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_non_finite_spectrograms_are_bad_samples_never_batched(tmp_path, small_input, make_clip, make_dataset, fmt):
    clips = small_clips(make_clip, 6)
    if fmt == "tfrecord":  # a NaN as the writer stored it (the record's CRC holds)
        clips[2].melspec[40, 7] = np.nan
    folder = make_dataset(tmp_path / fmt, clips, num_shards=1, formats=(fmt,))
    if fmt == "webdataset":
        flip_mel_to_inf(folder, "c02")  # a flipped value in place: the shard keeps its size
    cfg = small_input(batch_size=5, epochs=1, format=fmt, mel_mean=0.0, mel_std=1.0)  # (not the index's: NaN)
    it = make_input(folder, cfg, seed=0)
    batches, warned = caught(lambda: list(it))
    assert sorted(real_keys(batches)) == ["c00", "c01", "c03", "c04", "c05"]
    assert all(np.isfinite(b["spectrogram"]).all() for b in batches)
    assert it.counts()["bad_sample"] == 1
    (warning,) = warned
    assert "sample c02 of shard" in warning and "non-finite values in melspec" in warning
    with pytest.raises(ShardError, match=r"c02.*non-finite values in melspec"):  # evaluation raises
        list(make_input(folder, cfg, training=False))


@pytest.mark.parametrize("claim, features, says", [
    ((65000, 65000), None, "65000x65000 pixels, more than any frame is read at"),
    ((4000, 4000), {"short_side": 16}, "4000x4000 pixels, far larger than this dataset's frames"),
])
def test_a_frame_header_claiming_a_huge_size_is_a_bad_jpeg(tmp_path, small_input, make_clip, make_dataset,
                                                          claim, features, says):
    clips = small_clips(make_clip, 5)
    forge_frames(clips[1], *claim)
    folder = make_dataset(tmp_path / "forged", clips, num_shards=1, formats=("webdataset",))
    if features:
        index_file = os.path.join(folder, "train.index.json")
        index = json.load(open(index_file))
        index["features"] = features
        json.dump(index, open(index_file, "w"))
    it = make_input(folder, small_input(batch_size=4, epochs=1), seed=0)
    batches, warned = caught(lambda: list(it))
    assert sorted(real_keys(batches)) == ["c00", "c02", "c03", "c04"] and it.counts()["bad_jpeg"] == 1
    (warning,) = warned
    assert "sample c01 of shard" in warning and says in warning


def test_a_tfrecord_failing_its_crc_costs_one_sample_not_the_rest_of_its_shard(tmp_path, small_input, make_clip,
                                                                             make_dataset):
    clips = small_clips(make_clip, 6)
    folder = make_dataset(tmp_path / "crc", clips, num_shards=1, formats=("tfrecord",))
    path = os.path.join(folder, "train-00000-of-00001.tfrecord")
    data = bytearray(open(path, "rb").read())
    offset = 0
    for _ in range(2):  # past records #0 and #1
        offset += struct.unpack("<Q", data[offset:offset + 8])[0] + 16
    data[offset + 12 + 100] ^= 0x40  # a byte inside record #2 (c02): its data CRC fails, its length holds
    open(path, "wb").write(bytes(data))
    it = make_input(folder, small_input(batch_size=5, epochs=1), seed=0)
    batches, warned = caught(lambda: list(it))
    assert sorted(real_keys(batches)) == ["c00", "c01", "c03", "c04", "c05"]
    assert it.counts()["bad_sample"] == 1 and "bad_shard" not in it.counts()
    assert "record #2 is corrupt (data crc mismatch)" in warned[0]
