"""Attention maps onto the frames: CLS->RGB from the last layer or by rollout, reshaped to [F, h, w].

The model's joint attention layout itself (rows sum to one, which modality sees which) is checked for
every fusion strategy in test_model.py::test_forward_is_finite.
"""

import dataclasses

import jax
import numpy as np
import pytest

from mbt.attention_maps import cls_attention_to_rgb, rgb_attention_maps, token_offsets
from mbt.config import MBTError
from tests.mbt.models import small_model


def test_bottleneck_spectrogram_cls_reaches_the_frames_only_by_rollout(random_variables, random_inputs):
    # Every layer fused (frames reach the spectrogram CLS over two bottleneck layers); 4 frames as tubelets.
    cfg = dataclasses.replace(small_model(), fusion="bottleneck", fusion_layer=0, rgb_tokenizer="tubelet", num_frames=4)
    variables, inputs = random_variables(cfg), random_inputs(cfg, batch_size=2)
    for method in ("last", "rollout"):
        maps = cls_attention_to_rgb(cfg, variables, inputs, method)
        assert set(maps) == {"rgb", "spectrogram"}
        for m in maps.values():
            assert m.shape == (2, 4, 2, 2)  # [B, F, 14, 14] at 224 px; 2x2 at 32 px
            assert np.all(m >= 0) and np.all(m.sum(axis=(1, 2, 3)) <= 2 * (1 + 1e-5))  # 2 frames per tubelet
            np.testing.assert_array_equal(m[:, 0], m[:, 1])  # one tubelet's map on both of its frames
            np.testing.assert_array_equal(m[:, 2], m[:, 3])
        assert np.all(maps["rgb"].sum(axis=(1, 2, 3)) > 0)
        if method == "last":
            assert not np.any(maps["spectrogram"])  # it never attends to an RGB patch directly
        else:
            assert np.all(maps["spectrogram"].sum(axis=(1, 2, 3)) > 0)


def _random_attention(cfg, batch=1, seed=0):
    n_all = max(s.stop for s in token_offsets(cfg).values())
    a = np.random.RandomState(seed).uniform(size=(cfg.num_layers, batch, n_all, n_all)).astype(np.float32)
    return a / a.sum(-1, keepdims=True)


def test_rollout_matches_the_full_matrix_product():
    cfg = dataclasses.replace(small_model(), fusion="self_attention", fusion_layer=0)
    attention = _random_attention(cfg)
    n_all = attention.shape[-1]
    rollout = np.eye(n_all)
    for a in attention[:, 0]:
        a = 0.5 * a + 0.5 * np.eye(n_all)
        rollout = (a / a.sum(-1, keepdims=True)) @ rollout
    maps = rgb_attention_maps(attention, cfg, "rollout")
    rgb_patches = slice(1, cfg.num_tokens("rgb"))  # after the RGB CLS
    spec_cls = cfg.num_tokens("rgb")
    np.testing.assert_allclose(maps["rgb"][0].ravel(), rollout[0, rgb_patches], rtol=1e-5)
    np.testing.assert_allclose(maps["spectrogram"][0].ravel(), rollout[spec_cls, rgb_patches], rtol=1e-5)


def test_gap_models_use_the_mean_of_their_tokens():
    cfg = dataclasses.replace(small_model(), classifier="gap")  # no CLS tokens
    attention = _random_attention(cfg, batch=2)
    offsets = token_offsets(cfg)
    maps = rgb_attention_maps(attention, cfg, "last")
    for m in ("rgb", "spectrogram"):
        want = attention[-1][:, offsets[m], offsets["rgb"]].mean(axis=1)
        np.testing.assert_allclose(maps[m].reshape(2, -1), want, rtol=1e-5)


def test_maps_need_rgb_and_a_known_method():
    attention = jax.numpy.zeros((2, 1, 5, 5))
    with pytest.raises(MBTError, match="rgb"):
        rgb_attention_maps(attention, dataclasses.replace(small_model(), modalities=("spectrogram",)))
    with pytest.raises(MBTError, match="rollout"):
        rgb_attention_maps(attention, small_model(), "mean")
