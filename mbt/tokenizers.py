"""Tokenizers: RGB frames and log-mel spectrograms -> token sequences with CLS and position embeddings.

- RGB `patch2d`: every frame [S, S, 3] is cut into 16x16 patches (ViT), F*(S/16)^2 tokens, frame-major
  and row-major inside a frame.
- RGB `tubelet`: t x 16 x 16 space-time patches (ViViT), F/t*(S/16)^2 tokens.
- Spectrogram: the [100*seconds, 128] log-mel is a one-channel image cut into 16x16 patches (AST),
  time-major: 8 s -> 50 x 8 = 400 tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

KINDS = ("patch2d", "tubelet", "spectrogram")


class Tokenizer(nn.Module):
    """Linear patch embedding + optional CLS token + learned position embedding + dropout."""

    kind: str  # one of KINDS
    hidden_size: int  # D
    patch_size: int = 16  # spatial patch side (and spectrogram patch side)
    tubelet_frames: int = 2  # temporal extent of a tubelet ('tubelet' only)
    use_cls: bool = True  # prepend a learned CLS token ('token' classifier)
    dropout: float = 0.0  # on the embedded tokens
    dtype: jnp.dtype = jnp.float32  # compute dtype

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        """RGB [B, F, S, S, 3] or spectrogram [B, T, M] -> tokens [B, (1+)N, D]."""
        b = x.shape[0]
        p = self.patch_size
        x = x.astype(self.dtype)
        if self.kind == "patch2d":
            x = x.reshape((-1,) + x.shape[2:])  # frames as images: [B*F, S, S, 3]
            kernel = (p, p)
        elif self.kind == "tubelet":
            kernel = (self.tubelet_frames, p, p)  # [B, F, S, S, 3] -> [B, F/t, S/p, S/p, D]
        else:
            x = x[..., None]  # one-channel image [B, T, M, 1]
            kernel = (p, p)
        x = nn.Conv(
            self.hidden_size, kernel, strides=kernel, padding="VALID", dtype=self.dtype, name="embedding"
        )(x)
        x = x.reshape(b, -1, self.hidden_size)
        if self.use_cls:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_size))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.hidden_size)), x], axis=1)
        # One learned vector per token position (space and time), as ViT/ViViT/AST; the CLS has one too.
        posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
        x = x + posemb.astype(self.dtype)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic)
