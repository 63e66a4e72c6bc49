"""The pre-LN transformer block shared by every stream and fusion strategy.

    y = z + MSA(LN(z))          (or MCA(LN(z_m), LN(z)) when keys/values come from a larger token set)
    z' = y + MLP(LN(y))

Parameter names and shapes follow the public ViT checkpoints (query/key/value kernels [D, heads,
head_dim], out [heads, head_dim, D]) so that mbt/vit_checkpoint.py copies them without reshaping.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Attention(nn.Module):
    """Multi-head dot-product attention; keys and values may come from a different token set."""

    num_heads: int  # D must divide by it
    dtype: jnp.dtype = jnp.float32  # compute dtype (parameters stay float32)
    attention_dropout: float = 0.0  # dropout on the attention weights

    @nn.compact
    def __call__(self, x: Array, kv: Array, *, deterministic: bool) -> tuple[Array, Array]:
        """x [B, Nq, D] attends to kv [B, Nk, D]; returns ([B, Nq, D], weights averaged over heads [B, Nq, Nk])."""
        d = x.shape[-1]
        head_dim = d // self.num_heads
        proj = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, head_dim), dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name
        )
        q = proj("query")(x)  # [B, Nq, H, hd]
        k = proj("key")(kv)  # [B, Nk, H, hd]
        v = proj("value")(kv)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(self.dtype)
        # Softmax in float32 even for bf16 compute: its sum runs over up to ~2000 keys.
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        dropped = nn.Dropout(self.attention_dropout)(weights, deterministic=deterministic)
        y = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(self.dtype), v)
        y = nn.DenseGeneral(
            d, axis=(-2, -1), dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name="out"
        )(y)
        # Only the head average is kept: it is what attention maps and rollout use, at 1/H the memory.
        return y, weights.mean(axis=1)


class Mlp(nn.Module):
    """Dense -> GELU (tanh approximation, as ViT was trained; exact erf for AST) -> Dense."""

    mlp_dim: int  # hidden width, 4*D in every ViT variant
    dtype: jnp.dtype = jnp.float32  # compute dtype
    dropout: float = 0.0  # after each Dense
    gelu_exact: bool = False  # erf GELU (torch's nn.GELU: AST, DeiT) instead of the tanh approximation

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6), name=name,
        )  # fmt: skip
        width = x.shape[-1]
        x = nn.gelu(dense(self.mlp_dim, "hidden")(x), approximate=not self.gelu_exact)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = dense(width, "output")(x)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic)


class EncoderBlock(nn.Module):
    """One pre-LN transformer layer with dropout and stochastic depth on both residual branches."""

    num_heads: int  # attention heads
    mlp_dim: int  # MLP hidden width
    dtype: jnp.dtype = jnp.float32  # compute dtype
    dropout: float = 0.0  # after attention and in the MLP
    attention_dropout: float = 0.0  # on the attention weights
    drop_path: float = 0.0  # probability of skipping a residual branch, per example (stochastic depth)
    layer_norm_epsilon: float = 1e-6  # both LayerNorms' (ViT, AST; Hugging Face's AST: 1e-12)
    gelu_exact: bool = False  # the MLP's GELU: exact erf (AST) or the tanh approximation (ViT)

    @nn.compact
    def __call__(
        self, x: Array, context: Array | None = None, *, deterministic: bool
    ) -> tuple[Array, Array]:
        """x [B, N, D] -> ([B, N, D], attention [B, N, Nk]).

        With `context` [B, Nk, D] the queries are x's tokens and the keys/values are context's, both
        normalised by this block's LayerNorm (the paper's MCA(LN(z_m), LN(z)) for cross-attention).
        """
        norm = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype, name="attention_norm")
        y = norm(x)
        kv = y if context is None else norm(context)
        y, weights = Attention(self.num_heads, self.dtype, self.attention_dropout, name="attention")(
            y, kv, deterministic=deterministic
        )
        y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
        x = x + self._drop_path(y, deterministic)
        y = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype, name="mlp_norm")(x)
        y = Mlp(self.mlp_dim, self.dtype, self.dropout, self.gelu_exact, name="mlp")(y, deterministic=deterministic)
        return x + self._drop_path(y, deterministic), weights

    def _drop_path(self, y: Array, deterministic: bool) -> Array:
        """Zero the branch for a random subset of examples; rescale the rest so eval needs no change."""
        if deterministic or self.drop_path == 0.0:
            return y
        keep = 1.0 - self.drop_path
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
        return jnp.where(mask, y / keep, jnp.zeros_like(y))
