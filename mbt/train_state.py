"""What a training run's state is: parameters, optimiser state and step, its optimiser, and how a
fresh one is made. Shared by the trainer (mbt.train) and the checkpoints (mbt.checkpoints), which
must know the state's shape to restore one without importing the trainer."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mbt.model import init_params
from mbt.train_config import TrainConfig


def learning_rate(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up then cosine decay to 0; the peak is base_lr scaled by batch / 64."""
    peak = cfg.optim.base_lr * cfg.input.batch_size / 64
    warmup = max(1, min(int(round(cfg.optim.warmup_epochs * steps_per_epoch)), total_steps - 1))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1))


def make_optimizer(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    parts = []
    if cfg.optim.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.optim.grad_clip))
    if cfg.optim.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.optim.weight_decay))
    parts.append(optax.sgd(learning_rate(cfg, total_steps, steps_per_epoch), momentum=cfg.optim.momentum))
    return optax.chain(*parts)


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(cfg: TrainConfig, total_steps: int, steps_per_epoch: int, rng: int) -> TrainState:
    """Fresh parameters (or a ViT checkpoint in both streams, AST in the spectrogram's) and optimiser state."""
    # RBG keys: the same parameters for the same seed, and a several times faster compile on CPU
    # than threefry for the init program.
    params = init_params(cfg.model, jax.random.key(rng, impl="unsafe_rbg"))["params"]
    if cfg.run.vit_checkpoint:
        from mbt.vit_checkpoint import init_from_vit

        params = init_from_vit({"params": params}, cfg.run.vit_checkpoint, cfg.model)["params"]
    if cfg.run.ast_checkpoint:  # after ViT's: AST's weights replace the spectrogram stream's
        from mbt.ast_checkpoint import init_from_ast

        params = init_from_ast({"params": params}, cfg.run.ast_checkpoint, cfg.model)["params"]
    opt_state = make_optimizer(cfg, total_steps, steps_per_epoch).init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)
