"""The encoder: per-modality transformer streams and how they fuse from layer L_f on.

Layers l < L_f run each modality on its own. From L_f on (paper, Sec. 3):
- `bottleneck`: B shared tokens z_fsn. Each modality's block runs on [z_m || z_fsn] (Eq. 8); the next
  z_fsn is the mean of the modalities' updated copies (Eq. 9). Cross-modal information passes only
  through those B tokens: no RGB token ever attends to a spectrogram token.
- `self_attention`: one joint sequence [z_rgb || z_spec] through one block per layer (Eq. 4).
- `cross_attention`: each modality keeps its own weights; its queries attend to all tokens of both
  modalities, MCA(LN(z_m), LN(z)) (Eq. 6). Only the keys/values see the other modality's tokens, so the
  joint sequence never runs through a whole block once per modality.
- `none`: no fusion (late fusion, L_f = L); the streams meet only when their logits are averaged.

Block names: `encoderblock_{l}` when one set of weights serves every token (one modality, a shared
encoder, or a self-attention layer), else `encoderblock_{l}_{modality}`. Every block of layer l is
initialised from ViT layer l (mbt/vit_checkpoint.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mbt.config import ModelConfig
from mbt.transformer import EncoderBlock

Array = jax.Array


class FuseBottlenecks(nn.Module):
    """Eq. 9: the next layer's bottleneck tokens are the mean of every modality's updated bottlenecks.

    A module of its own (it has no parameters) so that tests can intercept it and hold the bottleneck
    updates fixed while another modality's input changes.
    """

    @nn.compact
    def __call__(self, updates: list[Array]) -> Array:
        return jnp.mean(jnp.stack(updates), axis=0)


class Encoder(nn.Module):
    """Transformer layers with fusion, then a final LayerNorm per stream."""

    config: ModelConfig  # sizes, fusion strategy, L_f, regularisation, dtype

    @nn.compact
    def __call__(
        self, tokens: dict[str, Array], *, train: bool, return_attention: bool = False
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """tokens {modality: [B, N_m, D]} -> ({modality: normalised [B, N_m, D]}, intermediates).

        With return_attention, intermediates['attention'] is [L, B, N_all, N_all]: at every layer, the
        head-averaged attention laid out over the union of tokens [rgb | spectrogram | bottlenecks]
        (rows attend to columns; rows of tokens that did not move in a layer are the identity).
        """
        cfg = self.config
        mods = cfg.modalities
        dtype = jnp.dtype(cfg.dtype)
        b, d = next(iter(tokens.values())).shape[0], cfg.hidden_size
        num_layers = cfg.num_layers
        first_fused = num_layers - cfg.fused_layers
        separate_weights = len(mods) > 1 and not cfg.share_encoder
        sizes = {m: tokens[m].shape[1] for m in mods}
        layout = _Layout(sizes, cfg.num_bottlenecks if cfg.fusion == "bottleneck" and cfg.fused_layers else 0)

        if layout.num_bottlenecks:
            init = nn.initializers.normal(stddev=0.02)
            z_fsn = self.param("bottleneck", init, (1, layout.num_bottlenecks, d))
            z_fsn = jnp.broadcast_to(z_fsn.astype(dtype), (b, layout.num_bottlenecks, d))

        x = dict(tokens)
        maps = []
        for lyr in range(num_layers):
            block = lambda name: EncoderBlock(  # noqa: E731
                num_heads=cfg.heads, mlp_dim=cfg.mlp_size, dtype=dtype, dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                drop_path=cfg.stochastic_depth * lyr / max(num_layers - 1, 1),
                layer_norm_epsilon=cfg.layer_norm_epsilon, gelu_exact=cfg.gelu_exact, name=name,
            )  # fmt: skip
            fused = lyr >= first_fused
            if fused and cfg.fusion == "self_attention":
                # One joint sequence through one block: every token attends to every token.
                z, w = block(f"encoderblock_{lyr}")(_concat(x, mods), deterministic=not train)
                x = _split(z, sizes, mods)
                maps.append(layout.joint(w) if return_attention else None)
                continue
            if separate_weights:
                blocks = {m: block(f"encoderblock_{lyr}_{m}") for m in mods}
            else:
                shared = block(f"encoderblock_{lyr}")
                blocks = {m: shared for m in mods}
            w = {}
            if not fused:
                for m in mods:
                    x[m], w[m] = blocks[m](x[m], deterministic=not train)
                maps.append(layout.separate(w) if return_attention else None)
            elif cfg.fusion == "bottleneck":
                updates = []
                for m in mods:
                    out, w[m] = blocks[m](jnp.concatenate([x[m], z_fsn], axis=1), deterministic=not train)
                    x[m], fsn_m = out[:, : sizes[m]], out[:, sizes[m] :]
                    updates.append(fsn_m)
                z_fsn = FuseBottlenecks(name=f"fuse_{lyr}")(updates)
                maps.append(layout.bottleneck(w) if return_attention else None)
            else:  # cross_attention
                z = _concat(x, mods)
                for m in mods:
                    x[m], w[m] = blocks[m](x[m], context=z, deterministic=not train)
                maps.append(layout.cross(w) if return_attention else None)

        if separate_weights:
            norms = {m: nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=dtype, name=f"encoder_norm_{m}") for m in mods}
        else:
            shared_norm = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=dtype, name="encoder_norm")
            norms = {m: shared_norm for m in mods}
        out = {m: norms[m](x[m]) for m in mods}
        intermediates = {"attention": jnp.stack(maps)} if return_attention else {}
        return out, intermediates


def _concat(x: dict[str, Array], mods: tuple[str, ...]) -> Array:
    return jnp.concatenate([x[m] for m in mods], axis=1)


def _split(z: Array, sizes: dict[str, int], mods: tuple[str, ...]) -> dict[str, Array]:
    out, start = {}, 0
    for m in mods:
        out[m] = z[:, start : start + sizes[m]]
        start += sizes[m]
    return out


class _Layout:
    """Places each layer's per-stream attention weights into one [B, N_all, N_all] matrix."""

    def __init__(self, sizes: dict[str, int], num_bottlenecks: int):
        self.sizes = sizes
        self.num_bottlenecks = num_bottlenecks
        self.offsets, start = {}, 0
        for m, n in sizes.items():
            self.offsets[m] = start
            start += n
        self.num_modality_tokens = start
        self.total = start + num_bottlenecks

    def _empty(self, w: Array) -> Array:
        b = w.shape[0]
        return jnp.broadcast_to(jnp.eye(self.total, dtype=jnp.float32), (b, self.total, self.total))

    def _rows(self, m: str) -> slice:
        return slice(self.offsets[m], self.offsets[m] + self.sizes[m])

    def separate(self, w: dict[str, Array]) -> Array:
        a = self._empty(next(iter(w.values())))
        for m, wm in w.items():
            a = a.at[:, self._rows(m), self._rows(m)].set(wm)
        return a

    def joint(self, w: Array) -> Array:
        n = self.num_modality_tokens
        return self._empty(w).at[:, :n, :n].set(w)

    def cross(self, w: dict[str, Array]) -> Array:
        a = self._empty(next(iter(w.values())))
        for m, wm in w.items():
            a = a.at[:, self._rows(m), : self.num_modality_tokens].set(wm)
        return a

    def bottleneck(self, w: dict[str, Array]) -> Array:
        a = self._empty(next(iter(w.values())))
        fsn = slice(self.num_modality_tokens, self.total)
        fsn_rows = 0.0
        for m, wm in w.items():
            n = self.sizes[m]
            a = a.at[:, self._rows(m), self._rows(m)].set(wm[:, :n, :n])
            a = a.at[:, self._rows(m), fsn].set(wm[:, :n, n:])
            # The fused bottleneck is the mean of the streams' copies, so its row is the mean of theirs.
            row = jnp.zeros(wm.shape[:1] + (self.num_bottlenecks, self.total), jnp.float32)
            row = row.at[:, :, self._rows(m)].set(wm[:, n:, :n]).at[:, :, fsn].set(wm[:, n:, n:])
            fsn_rows = fsn_rows + row / len(w)
        return a.at[:, fsn, :].set(fsn_rows)
