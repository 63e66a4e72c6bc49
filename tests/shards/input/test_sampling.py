"""shards.input.sampling: temporal windows, spectrogram windows, padding, decoding only the sampled frames."""

from __future__ import annotations

import numpy as np
import pytest

from shards.format import jpeg
from shards.format.errors import ShardError
from shards.format.lazy import LazySample
from shards.input import sampling


class MemorySample(LazySample):
    """A LazySample over a Sample in memory (the stages only use the LazySample interface)."""

    def __init__(self, sample, index=0, shard="mem.tar"):
        super().__init__(shard, index)
        self.sample = sample

    def _header(self):
        s = self.sample
        return {"key": s.key, "labels": s.labels, "label_text": s.label_text, "meta": s.meta,
                "verb": s.verb, "noun": s.noun}

    @property
    def num_frames(self):
        return len(self.sample.frames)

    def frame(self, i):
        return self.sample.frames[self._check_frame_index(i)]

    def _melspec(self):
        return self.sample.melspec


def test_frame_offsets_spread_or_stride():
    assert sampling.frame_offsets(8, 8.0) == [0, 25, 50, 75, 100, 125, 150, 175]  # stride 25t/F = 25
    assert sampling.frame_offsets(3, 1.0) == [0, 8, 16]  # 25/3 floored
    assert sampling.frame_offsets(32, 2.0, frame_stride=1) == list(range(32))  # EPIC
    assert sampling.video_span(8, 8.0) == 200 and sampling.video_span(32, 2.0, 1) == 32


def test_centre_random_and_spaced_windows():
    kw = dict(num_frames=4, clip_seconds=1.0)
    (centre,) = sampling.choose_windows(75, 300, mode="centre", **kw)  # 3 s clip, 1 s window
    assert centre.frames == (25, 31, 37, 43) and centre.spec_start == 100 and centre.spec_rows == 100
    assert centre.frames_padded == centre.spec_padded == 0
    starts = set()
    for seed in range(40):
        (w,) = sampling.choose_windows(75, 300, mode="random", rng=np.random.default_rng(seed), **kw)
        assert 0 <= w.frames[0] <= 50 and w.spec_start == 4 * w.frames[0]  # synchronous: same instant
        starts.add(w.frames[0])
    assert len(starts) > 20
    spaced = sampling.choose_windows(75, 300, mode="spaced", count=3, **kw)
    assert [w.frames[0] for w in spaced] == [0, 25, 50] and [w.spec_start for w in spaced] == [0, 100, 200]


def test_asynchronous_spectrogram_windows_start_independently():
    kw = dict(num_frames=4, clip_seconds=1.0, async_spectrogram=True)
    offsets = set()
    for seed in range(30):
        (w,) = sampling.choose_windows(250, 1000, mode="random", rng=np.random.default_rng(seed), **kw)
        assert 0 <= w.spec_start <= 900
        offsets.add(w.spec_start - 4 * w.frames[0])
    assert len(offsets) > 10


def test_short_clips_are_padded_and_the_padding_recorded():
    (w,) = sampling.choose_windows(10, 40, mode="centre", num_frames=4, clip_seconds=1.0)
    assert w.frames == (0, 6, 9, 9) and w.frames_padded == 2  # frames 12 and 18 don't exist: last repeated
    assert w.spec_start == 0 and w.spec_padded == 60
    mel = np.ones((40, 128), np.float32)
    cut = sampling.cut_spectrogram(mel, w)
    assert cut.shape == (100, 128) and (cut[:40] == 1).all() and (cut[40:] == sampling.SILENCE).all()


def test_sample_windows_cuts_the_right_frames_and_rows(make_clip):
    clip = make_clip("c_0", seconds=3.0)
    cfg = type("Cfg", (), dict(num_frames=4, clip_seconds=1.0, frame_stride=None, async_spectrogram=False,
                               test_windows=3))
    out = list(sampling.sample_windows([{"lazy": MemorySample(clip), "__ref__": (0, 0, 0)}], cfg=cfg,
                                       training=False, seed=0))
    assert [ex["window"] for ex in out] == [0, 1, 2] and all(ex["num_windows"] == 3 for ex in out)
    last = out[2]
    assert last["frame_indices"] == (50, 56, 62, 68)
    assert last["jpegs"] == [clip.frames[i] for i in (50, 56, 62, 68)]
    assert last["spectrogram"].shape == (100, 128)
    np.testing.assert_allclose(last["spectrogram"][:, 0], np.arange(200, 300) / 100, atol=0.05)
    assert last["__key__"] == "c_0" and last["labels"] == [0]


def test_a_kaldi_fbank_clip_is_padded_with_asts_zeros(make_clip):
    # AST's loader zero-pads its fbank to target_length; a log-mel clip (or one from before feature_kind) gets silence
    clip = make_clip("c_0", seconds=0.6)
    cfg = type("Cfg", (), dict(num_frames=4, clip_seconds=1.0, frame_stride=None, async_spectrogram=False,
                               test_windows=1))
    for kind, pad in ((None, sampling.SILENCE), ("log_mel", sampling.SILENCE), ("kaldi_fbank", 0.0)):
        clip.meta = {k: v for k, v in clip.meta.items() if k != "feature_kind"}
        if kind:
            clip.meta["feature_kind"] = kind
        (ex,) = sampling.sample_windows([{"lazy": MemorySample(clip)}], cfg=cfg, training=False, seed=0)
        assert ex["spec_padded"] == 40 and (ex["spectrogram"][60:] == pad).all()
        np.testing.assert_array_equal(ex["spectrogram"][:60], clip.melspec)


def decode_centre_window(monkeypatch, clip) -> tuple[dict, list[bytes]]:
    """Sample the centred 4-frame, 1 s window of `clip` and decode it (its centred 42 px box, the exact
    pixels of the 48 px frames); also return every JPEG decoded."""
    from shards.input import InputConfig
    from shards.input.augment import augment_video

    calls = []
    real = jpeg.decode_jpeg
    monkeypatch.setattr(jpeg, "decode_jpeg", lambda data, **kw: calls.append(data) or real(data, **kw))
    cfg = InputConfig(num_frames=4, clip_seconds=1.0, crop_size=42)
    (ex,) = augment_video(sampling.sample_windows([{"lazy": MemorySample(clip)}], cfg=cfg, training=False, seed=0),
                          cfg=cfg, training=False)
    return ex, calls


def test_only_the_sampled_frames_are_decoded(monkeypatch, make_clip):
    clip = make_clip("c_1", seconds=2.0)
    (w,) = sampling.choose_windows(50, 200, mode="centre", num_frames=4, clip_seconds=1.0)
    sampled = set(w.frames)
    # every other frame is broken: decoding any of them would fail
    clip.frames = [f if i in sampled else b"\xff\xd8 not a jpeg" for i, f in enumerate(clip.frames)]
    ex, calls = decode_centre_window(monkeypatch, clip)
    assert len(calls) == 4 and ex["rgb"].shape == (4, 42, 42, 3) and ex["rgb"].dtype == np.uint8
    # frame i is grey level ~4i (+ up to 11 of noise): the decoded frames are the sampled ones
    np.testing.assert_allclose(ex["rgb"].mean(axis=(1, 2, 3)), [4 * i + 5.5 for i in w.frames], atol=2)


def test_a_padded_window_decodes_its_repeated_frame_once(monkeypatch, make_clip):
    clip = make_clip("c_2", seconds=0.4)  # 10 frames, window of 25
    ex, calls = decode_centre_window(monkeypatch, clip)
    assert ex["frames_padded"] == 2 and ex["spec_padded"] == 60 and len(calls) == 3
    assert (ex["rgb"][2] == ex["rgb"][3]).all()


def test_bad_samples_go_to_on_error_or_raise(make_clip):
    from shards.input import InputConfig
    from shards.input.augment import augment_video

    clip = make_clip("c_3", seconds=1.0)
    clip.frames[12] = b"\xff\xd8 truncated"  # the centred window samples frames 0, 6, 12, 18
    cfg = InputConfig(num_frames=4, clip_seconds=1.0, crop_size=32)
    examples = lambda: sampling.sample_windows([{"lazy": MemorySample(clip)}], cfg=cfg, training=False, seed=0)
    video = lambda on_error=sampling.raise_error: augment_video(examples(), cfg=cfg, training=False,
                                                                on_error=on_error)
    with pytest.raises(ShardError, match=r"shard mem\.tar, sample c_3: frame 12 is not a decodable JPEG"):
        list(video())
    errors = []
    assert list(video(lambda *a: errors.append(a))) == []
    assert errors[0][0] == "bad_jpeg" and errors[0][1]["__key__"] == "c_3"
    empty = make_clip("c_4", seconds=1.0)
    empty.frames = []
    with pytest.raises(ShardError, match="sample c_4 has no frames"):
        list(sampling.sample_windows([{"lazy": MemorySample(empty)}], cfg=cfg, training=False, seed=0))
