"""MBT: the Multimodal Bottleneck Transformer (Nagrani et al., NeurIPS 2021) in Flax.

    variables = init_params(config, seed)                       # or mbt.vit_checkpoint.init_from_vit
    logits, inter = MBT(config).apply(variables, {"rgb": rgb, "spectrogram": spec}, train=True,
                                      rngs={"dropout": key})
    inter["logits"]["rgb"], inter["pre_logits"]["spectrogram"], ...   # per modality

Inputs are a dict with one entry per modality in config.modalities:
- "rgb": float [B, F, S, S, 3] (normalised frames),
- "spectrogram": float [B, T, M] (normalised log-mel, T = 100 per second, M = 128 bins).

Each modality is tokenized, encoded (mbt/fusion.py), pooled by its own CLS token (or the mean of its own
tokens: RGB's 8x more tokens never outvote the spectrogram), and classified by one shared head; the
prediction is the mean of the per-modality logits. classifier='joint_gap' is scenic's 'gap' instead: one
mean over the tokens of both modalities together, one head (the per-modality logits are then the head
on each stream's own mean, for diagnosis).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mbt.config import ModelConfig, MBTError
from mbt.fusion import Encoder
from mbt.tokenizers import Tokenizer

Array = jax.Array


class MBT(nn.Module):
    """Tokenizers -> fused transformer encoder -> per-modality pooling -> shared head -> mean logits."""

    config: ModelConfig  # everything about the model; see mbt/config.py

    @nn.compact
    def __call__(
        self, inputs: Mapping[str, Array], *, train: bool = False, return_attention: bool = False
    ) -> tuple[Array | dict[str, Array], dict]:
        """Returns (logits, intermediates).

        logits: [B, C] float32, the mean over modalities; for head='verb_noun' a dict
          {"verb": [B, num_verb_classes], "noun": [B, num_noun_classes]}.
        intermediates:
          "logits": {modality: logits of that modality alone (same structure as `logits`)},
          "pre_logits": {modality: [B, D] float32 pooled, normalised representation},
          "attention": [L, B, N_all, N_all] (only with return_attention; see mbt/fusion.py and
            mbt/attention_maps.py for the token layout).
        """
        cfg = self.config
        check_inputs(cfg, inputs)
        dtype = jnp.dtype(cfg.dtype)
        tokens = {}
        for m in cfg.modalities:
            kind = cfg.rgb_tokenizer if m == "rgb" else "spectrogram"
            tokens[m] = Tokenizer(
                kind=kind, hidden_size=cfg.hidden_size, patch_size=cfg.patch_size,
                tubelet_frames=cfg.tubelet_frames, use_cls=cfg.classifier in ("token", "ast"),
                use_dist=cfg.classifier == "ast", stride=cfg.spectrogram_stride,
                frequency_major=cfg.spectrogram_order == "frequency_major",
                dropout=cfg.dropout, dtype=dtype, name=f"{m}_tokenizer",
            )(inputs[m], deterministic=not train)  # fmt: skip

        encoded, intermediates = Encoder(cfg, name="encoder")(
            tokens, train=train, return_attention=return_attention
        )

        # Each modality pooled on its own; the head and the averaging run in float32.
        if cfg.classifier == "token":
            pre_logits = {m: encoded[m][:, 0].astype(jnp.float32) for m in cfg.modalities}
        elif cfg.classifier == "ast":  # the mean of the CLS and distillation tokens (AST, DeiT at test time)
            pre_logits = {m: (encoded[m][:, 0].astype(jnp.float32) + encoded[m][:, 1].astype(jnp.float32)) / 2
                          for m in cfg.modalities}
        else:
            pre_logits = {m: encoded[m].astype(jnp.float32).mean(axis=1) for m in cfg.modalities}

        # Zero-initialised heads: fine-tuning starts from the identical function for every class.
        dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.zeros, name=name)  # noqa: E731
        # AST's head normalises the pooled token once more (LayerNorm + Linear); one norm for every modality.
        heads_in = pre_logits
        if cfg.head_norm:
            norm = nn.LayerNorm(epsilon=cfg.head_norm_epsilon, name="head_norm")
            heads_in = {m: norm(z) for m, z in pre_logits.items()}
        if cfg.head == "verb_noun":
            verb, noun = dense(cfg.num_verb_classes, "head_verb"), dense(cfg.num_noun_classes, "head_noun")
            per_modality = {m: {"verb": verb(z), "noun": noun(z)} for m, z in heads_in.items()}
        else:
            head = dense(cfg.num_classes, "head")
            per_modality = {m: head(z) for m, z in heads_in.items()}
        logits = jax.tree.map(lambda *xs: sum(xs) / len(xs), *per_modality.values())
        if cfg.classifier == "joint_gap":
            # scenic's 'gap': one mean over the tokens of all modalities together (never the bottlenecks),
            # one head. The per-modality logits above stay: the head on each stream's own mean.
            joint = jnp.concatenate([encoded[m] for m in cfg.modalities], axis=1).astype(jnp.float32).mean(1)
            joint = norm(joint) if cfg.head_norm else joint
            logits = {"verb": verb(joint), "noun": noun(joint)} if cfg.head == "verb_noun" else head(joint)

        intermediates.update(logits=per_modality, pre_logits=pre_logits)
        return logits, intermediates


def check_inputs(config: ModelConfig, inputs: Mapping[str, Array]) -> None:
    """Raise MBTError naming the modality and both shapes when the inputs don't fit the config."""
    expected = config.input_shapes()
    missing = [m for m in expected if m not in inputs]
    if missing:
        raise MBTError(f"model inputs lack {missing}; it was built for modalities {list(expected)}")
    for m, shape in expected.items():
        got = tuple(inputs[m].shape)
        if len(got) != len(shape) or got[1:] != shape[1:]:
            raise MBTError(
                f"input {m!r} has shape {got}, but the config expects [batch, {', '.join(map(str, shape[1:]))}]"
                " (set num_frames / image_size / spectrogram_frames / num_mel_bins to match the data)"
            )


def dummy_inputs(config: ModelConfig, batch_size: int = 1) -> dict[str, Array]:
    """Zero inputs of the configured shapes, for model.init."""
    return {m: jnp.zeros(s, jnp.float32) for m, s in config.input_shapes(batch_size).items()}


def init_params(config: ModelConfig, rng: Array | int = 0) -> dict:
    """Freshly initialised float32 parameters ({'params': ...} variables) for `config`.

    XLA:CPU compiles the threefry RNG program slowly (about a minute for B/16 on 2 cores); a key made
    with jax.random.key(seed, impl="unsafe_rbg") compiles several times faster.
    """
    rng = jax.random.key(rng) if isinstance(rng, int) else rng
    return _init(config, rng)


@functools.partial(jax.jit, static_argnums=0)  # configs are frozen, hence hashable: one compile each
def _init(config: ModelConfig, rng: Array) -> dict:
    return MBT(config).init(rng, dummy_inputs(config))


def param_shapes(config: ModelConfig) -> dict:
    """The variables' shapes and dtypes without allocating them (for B/16 on a laptop)."""
    return jax.eval_shape(lambda: MBT(config).init(jax.random.key(0), dummy_inputs(config)))


def count_params(variables) -> int:
    """Number of parameters in a variables tree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables)))
