"""Tokenizers: RGB frames and log-mel spectrograms -> token sequences with CLS and position embeddings.

- RGB `patch2d`: every frame [S, S, 3] is cut into 16x16 patches (ViT), F*(S/16)^2 tokens, frame-major
  and row-major inside a frame.
- RGB `tubelet`: t x 16 x 16 space-time patches (ViViT), F/t*(S/16)^2 tokens.
- Spectrogram: the [100*seconds, 128] log-mel is a one-channel image cut into 16x16 patches, time-major:
  8 s -> 50 x 8 = 400 tokens. AST's layout is a setting: patches at a (time, frequency) stride below
  16 overlap (AST: 10, so 1024 x 128 -> 101 x 12 patches), and its tokens run frequency-major (AST
  transposes the log-mel to [128, T] before its convolution, whose [D, F', T'] output is flattened row
  by row: token f * T' + t).

Tokens start with the learned prefix: none ('gap'), CLS ('token'), or CLS then AST's distillation token
('ast'); every position, prefix included, has its own learned embedding.
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
    use_dist: bool = False  # and after it a learned distillation token ('ast' classifier)
    stride: tuple[int, int] | None = None  # spectrogram (time, frequency) stride; None: patch_size
    frequency_major: bool = False  # spectrogram tokens frequency row by row (AST) instead of time-major
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
        strides = tuple(self.stride) if self.kind == "spectrogram" and self.stride else kernel
        x = nn.Conv(
            self.hidden_size, kernel, strides=strides, padding="VALID", dtype=self.dtype, name="embedding"
        )(x)
        if self.kind == "spectrogram" and self.frequency_major:
            x = x.transpose(0, 2, 1, 3)  # [B, T', F', D] -> [B, F', T', D]
        x = x.reshape(b, -1, self.hidden_size)
        prefix = [self.param(name, nn.initializers.zeros, (1, 1, self.hidden_size))
                  for name, used in (("cls", self.use_cls), ("dist", self.use_dist)) if used]  # fmt: skip
        if prefix:
            prefix = [jnp.broadcast_to(t.astype(self.dtype), (b, 1, self.hidden_size)) for t in prefix]
            x = jnp.concatenate(prefix + [x], axis=1)
        # One learned vector per token position (space and time), as ViT/ViViT/AST; the CLS has one too.
        posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
        x = x + posemb.astype(self.dtype)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic)
