"""Attention maps: the joint attention layout of every fusion strategy, CLS->RGB maps, rollout."""

import dataclasses

import jax
import numpy as np
import pytest

from mbt.attention_maps import cls_attention_to_rgb, rgb_attention_maps, token_offsets
from mbt.config import MBTError, tiny
from mbt.model import MBT


@pytest.mark.parametrize(
    "changes",
    [
        # Through bottlenecks, frames reach the spectrogram CLS only over two fused layers.
        {"fusion": "bottleneck", "fusion_layer": 0},
        # Layer 0 separate, layer 1 fused.
        {"fusion": "self_attention", "fusion_layer": 1, "classifier": "gap", "rgb_tokenizer": "tubelet"},
        {"fusion": "cross_attention", "fusion_layer": 1},
    ],
)
def test_joint_attention_is_row_stochastic_and_maps_fit_the_frames(changes, random_variables, random_inputs, fast_jit):
    cfg = dataclasses.replace(tiny(), **changes)
    variables, inputs = random_variables(cfg), random_inputs(cfg, batch_size=2)
    _, inter = fast_jit(lambda v, x: MBT(cfg).apply(v, x, return_attention=True))(variables, inputs)
    attention = np.asarray(inter["attention"])
    offsets = token_offsets(cfg)
    n_all = max(s.stop for s in offsets.values())
    assert attention.shape == (cfg.num_layers, 2, n_all, n_all)
    # Every token's attention (or identity, for tokens a layer leaves alone) sums to one.
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    rgb, spec = offsets["rgb"], offsets["spectrogram"]
    if cfg.fusion_layer == 1:  # layer 0 is separate: no attention across modalities
        assert not np.any(attention[0][:, rgb, spec]) and not np.any(attention[0][:, spec, rgb])
    if cfg.fusion == "bottleneck":
        assert not np.any(attention[1][:, rgb, spec])  # RGB never attends to spectrogram tokens
        assert np.all(attention[1][:, rgb, offsets["bottleneck"]].sum(-1) > 0)
    else:
        assert np.all(attention[1][:, rgb, spec].sum(-1) > 0)

    for method in ("last", "rollout"):
        maps = rgb_attention_maps(inter["attention"], cfg, method)
        assert set(maps) == {"rgb", "spectrogram"}
        repeats = cfg.tubelet_frames if cfg.rgb_tokenizer == "tubelet" else 1
        for m in maps.values():
            assert m.shape == (2, cfg.num_frames, 2, 2)  # [B, F, 14, 14] at 224px; 2x2 at 32px
            assert np.all(m >= 0) and np.all(m.sum(axis=(1, 2, 3)) <= repeats * (1 + 1e-5))
        if cfg.fusion == "bottleneck" and method == "last":
            # The spectrogram CLS only sees the frames through the bottlenecks: rollout finds it.
            assert not np.any(maps["spectrogram"])
        else:
            assert np.all(maps["spectrogram"].sum(axis=(1, 2, 3)) > 0)
        if cfg.rgb_tokenizer == "tubelet":  # each tubelet's map is shown on both of its frames
            np.testing.assert_array_equal(maps["rgb"][:, 0], maps["rgb"][:, 1])


def test_rollout_matches_the_full_matrix_product():
    cfg = dataclasses.replace(tiny(), fusion="self_attention", fusion_layer=0)
    n_all = sum(cfg.num_tokens(m) for m in cfg.modalities)
    rs = np.random.RandomState(0)
    attention = rs.uniform(size=(cfg.num_layers, 1, n_all, n_all)).astype(np.float32)
    attention /= attention.sum(-1, keepdims=True)
    rollout = np.eye(n_all)
    for a in attention[:, 0]:
        a = 0.5 * a + 0.5 * np.eye(n_all)
        rollout = (a / a.sum(-1, keepdims=True)) @ rollout
    maps = rgb_attention_maps(attention, cfg, "rollout")
    rgb_patches = slice(1, cfg.num_tokens("rgb"))
    spec_cls = cfg.num_tokens("rgb")
    np.testing.assert_allclose(maps["rgb"][0].ravel(), rollout[0, rgb_patches], rtol=1e-5)
    np.testing.assert_allclose(maps["spectrogram"][0].ravel(), rollout[spec_cls, rgb_patches], rtol=1e-5)


def test_cls_attention_to_rgb_runs_the_model(random_variables, random_inputs):
    cfg = dataclasses.replace(tiny(), modalities=("rgb",), fusion="none", num_frames=4)
    maps = cls_attention_to_rgb(cfg, random_variables(cfg), random_inputs(cfg, 3), method="last")
    assert set(maps) == {"rgb"} and maps["rgb"].shape == (3, 4, 2, 2)


def test_maps_need_rgb_and_a_known_method():
    attention = jax.numpy.zeros((2, 1, 5, 5))
    with pytest.raises(MBTError, match="rgb"):
        rgb_attention_maps(attention, dataclasses.replace(tiny(), modalities=("spectrogram",)))
    with pytest.raises(MBTError, match="rollout"):
        rgb_attention_maps(attention, tiny(), "mean")
