"""shards.input.augment: crops, flip, colour matrix, SpecAugment, normalisation; switches and determinism."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.input import augment


def frames(n=4, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def example(key="k", **fields):
    return {"__key__": key, "epoch": 0, "window": 0, **fields}


def test_eval_crop_is_centred_and_exact_at_scale(small_input):
    cfg = small_input(crop_size=42)
    assert augment.crop_box(48, 64, cfg=cfg) == (3, 11, 42, 42)  # 0.875 of the short side, centred
    x = frames(1)[0]
    out = augment.resize_into(x[3:45, 11:53], np.empty((42, 42, 3), np.uint8))
    assert (out == x[3:45, 11:53]).all()  # no resampling at scale


@pytest.mark.parametrize("crop", ["random_resized", "scale_jitter"])
def test_random_crops_stay_inside_and_follow_the_seed(small_input, crop):
    cfg = small_input(crop=crop)
    boxes = set()
    for seed in range(50):
        top, left, h, w = augment.crop_box(48, 64, cfg=cfg, rng=np.random.default_rng(seed))
        assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64 and h > 0 and w > 0
        if crop == "scale_jitter":
            assert h == w and 0.65 * 48 - 1 <= h <= 48
        else:
            assert 0.3 * 48 * 64 * 0.8 <= h * w <= 48 * 64
        boxes.add((top, left, h, w))
        assert (top, left, h, w) == augment.crop_box(48, 64, cfg=cfg, rng=np.random.default_rng(seed))
    assert len(boxes) > 30


def test_resize_into_is_half_pixel_bilinear_in_place_and_flips():
    import torch
    from torch.nn import functional as F

    x = frames(1)[0]
    box = x[4:34, 8:48]  # 30 x 40, a strided view
    out = np.zeros((32, 32, 3), np.uint8)
    assert augment.resize_into(box, out) is out and out.any()  # written in place
    # the same as torch's (and tf.image.resize's) bilinear without antialiasing, up to rounding
    ref = F.interpolate(torch.from_numpy(box.astype(np.float32)).permute(2, 0, 1)[None], size=(32, 32),
                        mode="bilinear", align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - ref).max() <= 1.0
    mirrored = augment.resize_into(box, np.empty_like(out), flip=True)
    assert (mirrored == out[:, ::-1]).all()
    smooth = augment.resize_into(x, np.empty((16, 16, 3), np.uint8), antialias=True)  # 4x shrink: area average
    np.testing.assert_allclose(smooth.astype(float), x.reshape(16, 3, 16, 4, 3).mean(axis=(1, 3)), atol=1)


def test_colour_matrix_parts(small_input):
    rgb_mean = np.array([100.0, 120.0, 140.0])
    off = small_input(colour_prob=0.0)
    assert np.allclose(augment.colour_matrix(np.random.default_rng(0), off, rgb_mean),
                       np.concatenate([np.eye(3), np.zeros((3, 1))], 1))
    gray = augment.colour_matrix(np.random.default_rng(0), small_input(colour_prob=0.0, grayscale_prob=1.0),
                                 rgb_mean)
    assert np.allclose(gray[0], gray[1]) and np.allclose(gray[1], gray[2])
    # hue rotation leaves grey grey; brightness/contrast/saturation keep a grey pixel grey too
    jitter = augment.colour_matrix(np.random.default_rng(3), small_input(colour_prob=1.0, hue=0.3), rgb_mean)
    grey = jitter[:, :3] @ np.array([90.0, 90.0, 90.0]) + jitter[:, 3]
    assert np.ptp(grey) < 1e-6
    assert np.allclose(augment.hue_matrix(0.0), np.eye(3)) and np.allclose(augment.hue_matrix(1.0), np.eye(3))


def test_apply_colour_rounds_and_clips():
    x = np.full((2, 4, 4, 3), 200, np.uint8)
    m = np.array([[2, 0, 0, 0], [0, 1, 0, -300], [0, 0, 0.5, 0.4]])
    out = augment.apply_colour(x, m)
    assert (out[..., 0] == 255).all() and (out[..., 1] == 0).all() and (out[..., 2] == 100).all()


def test_normalize_rgb_matches_the_formula():
    x = frames(2)
    expect = (x / 255.0 - augment.IMAGENET_MEAN) / augment.IMAGENET_STD
    np.testing.assert_allclose(augment.normalize_rgb(x), expect, rtol=1e-5, atol=1e-5)
    out = np.empty((3, *x.shape), np.float32)
    augment.normalize_rgb(x, out=out[1], normalization="unit")
    np.testing.assert_allclose(out[1], x / 255.0, rtol=1e-6)
    np.testing.assert_allclose(augment.normalize_rgb(x, normalization="symmetric"), x / 127.5 - 1, atol=1e-6)


def test_symmetric_rgb_is_in_minus_one_to_one():
    # scenic's [-1, 1]: 0 -> -1, 255 -> 1 exactly, nothing outside
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    y = augment.normalize_rgb(x, normalization="symmetric")
    assert y.min() == -1.0 and y.max() == 1.0
    with pytest.raises(ValueError, match="imagenet, unit or symmetric"):
        augment.rgb_affine("scenic")


def jpegs_of(x, quality=95):
    out = []
    for frame in x:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def test_augment_video_switches_and_determinism(small_input):
    jpegs = jpegs_of(frames())
    run = lambda cfg, key="k", training=True: next(augment.augment_video(
        [example(key, jpegs=list(jpegs), frame_indices=(0, 1, 2, 3), __shard__="s")], cfg=cfg,
        training=training, seed=1))["rgb"]
    plain = small_input(flip=False, colour_jitter=False)
    base = run(plain)
    assert base.shape == (4, 32, 32, 3) and base.dtype == np.uint8
    assert (run(plain) == base).all()  # same seed, key, epoch: same clip
    assert not (run(plain, key="other") == base).all()
    # flip: for some key the clip is the mirror image of the unflipped one (same crop: separate draws)
    flips = [(run(small_input(colour_jitter=False), key=f"k{i}"), run(plain, key=f"k{i}")) for i in range(8)]
    assert any((a == b[:, :, ::-1]).all() for a, b in flips) and any((a == b).all() for a, b in flips)
    # colour jitter changes pixels but not the crop (the draws are independent of each other)
    jittered = run(small_input(flip=False, colour_jitter=True, colour_prob=1.0))
    assert not (jittered == base).all()
    # evaluation: the centred crop, whatever the key
    ev = run(small_input(), training=False)
    assert (ev == run(small_input(), key="other", training=False)).all()


def test_augment_video_normalises_into_a_float32_slot_as_normalize_rgb_does(small_input):
    jpegs = jpegs_of(frames())
    ex = lambda: [example("k", jpegs=list(jpegs), frame_indices=(0, 1, 2, 2), __shard__="s")]
    for cfg in (small_input(colour_jitter=True, colour_prob=1.0), small_input(rgb_normalization="unit"),
                small_input(rgb_normalization="symmetric")):
        pixels = next(augment.augment_video(ex(), cfg=cfg, training=True, seed=3))["rgb"]
        slot = np.zeros((4, 32, 32, 3), np.float32)
        out = next(augment.augment_video(ex(), cfg=cfg, training=True, seed=3, slot=lambda: slot))["rgb"]
        assert out is slot and (pixels[2] == pixels[3]).all()  # a repeated frame index: the same frame
        np.testing.assert_array_equal(slot, augment.normalize_rgb(pixels, normalization=cfg.rgb_normalization))


def test_spec_augment_masks_within_limits():
    rng = np.random.default_rng(0)
    widths_t, widths_f = [], []
    for _ in range(200):
        spec = np.ones((800, 128), np.float32)
        augment.spec_augment(spec, rng, time_masks=1, time_mask_max=192, freq_masks=1, freq_mask_max=48)
        masked_rows = (spec == 0).all(axis=1).sum()
        masked_cols = (spec == 0).all(axis=0).sum()
        widths_t.append(masked_rows)
        widths_f.append(masked_cols)
    assert max(widths_t) <= 192 and max(widths_f) <= 48
    assert max(widths_t) > 150 and max(widths_f) > 40  # the whole range is used


def test_augment_audio_normalises_then_masks_with_the_mean(small_input):
    spec = np.full((100, 128), 5.0, np.float32)
    out = next(augment.augment_audio([example(spectrogram=spec.copy())], cfg=small_input(spec_augment=False),
                                     training=True, mel_mean=3.0, mel_std=2.0))["spectrogram"]
    assert out.dtype == np.float32 and np.allclose(out, 1.0)
    masked = next(augment.augment_audio([example(spectrogram=spec.copy())],
                                        cfg=small_input(time_masks=3, freq_masks=3), training=True, seed=4,
                                        mel_mean=3.0, mel_std=2.0))["spectrogram"]
    assert set(np.unique(masked)) <= {0.0, 1.0} and (masked == 0).any()
    ev = next(augment.augment_audio([example(spectrogram=spec.copy())], cfg=small_input(), training=False,
                                    mel_mean=3.0, mel_std=2.0))["spectrogram"]
    assert np.allclose(ev, 1.0)  # no SpecAugment outside training


def test_augment_audio_into_a_slot_leaves_the_window_alone_and_matches_in_place(small_input):
    rng = np.random.default_rng(3)
    spec = rng.normal(-5, 3, (100, 128)).astype(np.float32)
    mean, std = rng.normal(-5, 1, 128), rng.uniform(2, 4, 128)  # per-bin statistics
    cfg = small_input(time_masks=2, freq_masks=2)
    in_place = next(augment.augment_audio([example(spectrogram=spec.copy())], cfg=cfg, training=True, seed=1,
                                          mel_mean=mean, mel_std=std))["spectrogram"]
    slot = np.full((100, 128), np.nan, np.float32)
    window = spec.copy()
    out = next(augment.augment_audio([example(spectrogram=window)], cfg=cfg, training=True, seed=1,
                                     mel_mean=mean, mel_std=std, slot=lambda: slot))["spectrogram"]
    assert out is slot and (window == spec).all()
    np.testing.assert_array_equal(slot, in_place)
