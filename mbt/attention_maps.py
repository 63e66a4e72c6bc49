"""Where each modality's CLS token looks in the frames: attention to the RGB patches as [F, h, w] maps.

The paper's Figure 6. The model returns, per layer, one [N_all, N_all] head-averaged attention matrix
over the union of tokens [rgb | spectrogram | bottlenecks] (mbt/fusion.py). From it:
- `last`: the last layer's attention from the CLS row to the RGB patch columns. Under bottleneck fusion
  the spectrogram CLS never attends to RGB patches directly, so its `last` map is zero: use rollout.
- `rollout` (Abnar & Zuidema, 2020): the product over layers of 0.5*A + 0.5*I (row-normalised), so
  attention that reaches the frames through other tokens (bottlenecks included) is counted.
With classifier='gap' there is no CLS token; the mean over the modality's own tokens stands in for it. With
'ast' the query is the mean of the CLS and distillation rows (the model pools the mean of both tokens).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import numpy as np

from mbt.config import MBTError, ModelConfig
from mbt.model import MBT

METHODS = ("last", "rollout")


def token_offsets(config: ModelConfig) -> dict[str, slice]:
    """Rows/columns of each modality's tokens (CLS included) and of the bottlenecks in the union layout."""
    out, start = {}, 0
    for m in config.modalities:
        n = config.num_tokens(m)
        out[m] = slice(start, start + n)
        start += n
    if config.fusion == "bottleneck" and config.fused_layers:
        out["bottleneck"] = slice(start, start + config.num_bottlenecks)
    return out


def rgb_attention_maps(attention: jax.Array, config: ModelConfig, method: str = "last") -> dict[str, np.ndarray]:
    """attention [L, B, N_all, N_all] (from the model) -> {modality: [B, F, h, w]} maps onto the frames.

    Tubelet maps are repeated over the t frames each tubelet covers, so every frame has its map.
    """
    if method not in METHODS:
        raise MBTError(f"attention map method {method!r}: choose one of {list(METHODS)}")
    if "rgb" not in config.modalities:
        raise MBTError("attention maps onto the frames need the 'rgb' modality")
    offsets = token_offsets(config)
    prefix = config.num_prefix_tokens  # CLS (and distillation) tokens before the patches
    patches = slice(offsets["rgb"].start + prefix, offsets["rgb"].stop)
    attention = np.asarray(attention, np.float32)  # small enough for numpy, and no per-shape compiles
    total = attention.shape[-1]

    # One query vector per modality: its CLS row, or the mean of its token rows (GAP).
    q = np.zeros((len(config.modalities), total), np.float32)
    for i, m in enumerate(config.modalities):
        if prefix:
            q[i, offsets[m].start : offsets[m].start + prefix] = 1.0 / prefix
        else:
            q[i, offsets[m]] = 1.0 / (offsets[m].stop - offsets[m].start)
    mass = np.broadcast_to(q, (attention.shape[1],) + q.shape)  # [B, M, N]

    if method == "last":
        mass = mass @ attention[-1]
    else:
        # Propagate the query rows down from the top layer: q @ A_L' @ ... @ A_1', never the N x N product.
        for a in attention[::-1]:
            a = 0.5 * a + 0.5 * np.eye(total, dtype=np.float32)
            mass = mass @ (a / a.sum(axis=-1, keepdims=True))

    t, h, w = config.rgb_grid
    maps = mass[:, :, patches].reshape(mass.shape[0], len(config.modalities), t, h, w)
    if config.rgb_tokenizer == "tubelet":
        maps = np.repeat(maps, config.tubelet_frames, axis=2)
    return {m: maps[:, i] for i, m in enumerate(config.modalities)}


def cls_attention_to_rgb(
    config: ModelConfig, variables: Mapping, inputs: Mapping[str, jax.Array], method: str = "last"
) -> dict[str, np.ndarray]:
    """Run the model (eval mode) on a batch and return {modality: [B, F, h, w]} CLS->RGB attention."""
    return rgb_attention_maps(_attention(config, variables, inputs), config, method)


@functools.partial(jax.jit, static_argnums=0)  # one compile per config, reused batch after batch
def _attention(config: ModelConfig, variables: Mapping, inputs: Mapping[str, jax.Array]) -> jax.Array:
    return MBT(config).apply(variables, inputs, return_attention=True)[1]["attention"]
