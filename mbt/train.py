"""Train MBT from shards: data-parallel on every local (and, multi-host, every global) device.

    mbt train --preset tiny --data demo_out/shards --workdir runs/tiny
    mbt train --preset mbt_base_audioset --data gs://B/audioset --workdir gs://B/runs/as \
        --run.vit_checkpoint=ViT-B_16.npz

Reads top to bottom: mesh, input, model, update step, checkpoints, loop. The update step is the
module-level `train_step(state, batch, rng, cfg)`; everything a run needs to continue after a kill
(parameters, optimiser state, step, input position) is in its checkpoints, so a restarted run
produces exactly the losses an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mbt.config import ModelConfig
from mbt.model import MBT
from mbt.train_config import TrainConfig, with_num_classes
from mbt.train_state import TrainState, init_state, learning_rate, make_optimizer
from shards.format import storage
from shards.format.errors import UserError


class TrainError(UserError, RuntimeError):
    """A run that cannot go on (non-finite loss, incompatible checkpoint); the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# The loss (the optimiser and the state: mbt.train_state).
# ---------------------------------------------------------------------------------------------------
def soft_targets(batch: dict, model: ModelConfig, smoothing: float) -> Any:
    """Targets as probabilities (so that mixup can blend them): [B, C], or {verb, noun} for EPIC."""
    def one_hot(labels, n):
        t = jax.nn.one_hot(labels, n)
        return t * (1 - smoothing) + smoothing / n

    if model.head == "multilabel":
        return batch["labels"].astype(jnp.float32)
    if model.head == "multiclass":
        return one_hot(batch["labels"], model.num_classes)
    return {"verb": one_hot(batch["verb"], model.num_verb_classes),
            "noun": one_hot(batch["noun"], model.num_noun_classes)}


def mixup(batch: dict, targets: Any, rng: jax.Array, cfg: TrainConfig) -> tuple[dict, dict]:
    """Mix each example with the batch's mirror image: (inputs, targets per modality).

    One lambda ~ Beta(a, a) per batch, or with modality_mixup one per modality, each modality's
    targets mixed by its own lambda (scenic's `mixmod`)."""
    mods = cfg.model.modalities
    alpha = cfg.optim.mixup_alpha
    if not alpha:
        return {m: batch[m] for m in mods}, {m: targets for m in mods}
    n = len(mods) if cfg.optim.modality_mixup else 1
    lams = jax.random.beta(rng, alpha, alpha, (n,))
    inputs, per_mod = {}, {}
    for i, m in enumerate(mods):
        lam = lams[i % n]
        inputs[m] = lam * batch[m] + (1 - lam) * batch[m][::-1]
        per_mod[m] = jax.tree.map(lambda t: lam * t + (1 - lam) * t[::-1], targets)
    return inputs, per_mod


def example_loss(logits: Any, targets: Any, head: str) -> jax.Array:
    """[B] loss of one modality's logits: BCE summed over classes, or CE (summed over EPIC's heads)."""
    if head == "multilabel":
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    if head == "multiclass":
        return optax.softmax_cross_entropy(logits, targets)
    return sum(optax.softmax_cross_entropy(logits[k], targets[k]) for k in ("verb", "noun"))


def loss_fn(params, batch: dict, rng: jax.Array, cfg: TrainConfig):
    """Mean over modalities of each modality's own loss (under classifier='joint_gap': the loss of the one
    joint prediction), weighted by the batch mask (padding = 0)."""
    mix_rng, dropout_rng = jax.random.split(rng)
    targets = soft_targets(batch, cfg.model, cfg.optim.label_smoothing)
    inputs, per_mod_targets = mixup(batch, targets, mix_rng, cfg)
    logits, inter = MBT(cfg.model).apply({"params": params}, inputs, train=True, rngs={"dropout": dropout_rng})
    mask = batch["mask"].astype(jnp.float32)
    per_mod = inter["logits"]
    if cfg.model.classifier == "joint_gap":  # one head on both modalities' tokens (scenic's GAP): one loss
        per_mod, per_mod_targets = {"joint": logits}, {"joint": next(iter(per_mod_targets.values()))}
    losses = {m: (example_loss(per_mod[m], per_mod_targets[m], cfg.model.head) * mask).sum()
              / jnp.maximum(mask.sum(), 1.0) for m in per_mod}
    loss = sum(losses.values()) / len(losses)
    return loss, {f"loss_{m}": v for m, v in losses.items()}


# ---------------------------------------------------------------------------------------------------
# The update step.
# ---------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("cfg", "total_steps", "steps_per_epoch"), donate_argnums=(0,))
def train_step(state: TrainState, batch: dict, rng: jax.Array, *, cfg: TrainConfig, total_steps: int,
               steps_per_epoch: int) -> tuple[TrainState, dict]:
    """One SGD step on a (sharded) global batch; returns the new state and scalar metrics."""
    tx = make_optimizer(cfg, total_steps, steps_per_epoch)
    step_rng = jax.random.fold_in(rng, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_rng, cfg)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **aux, "lr": learning_rate(cfg, total_steps, steps_per_epoch)(state.step),
               "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params),
               "update_norm": optax.global_norm(updates)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


# ---------------------------------------------------------------------------------------------------
# Starting from another run (--run.init_from).
# ---------------------------------------------------------------------------------------------------
HEADS = ("head", "head_verb", "head_noun")  # task-specific: re-initialised when their class count differs
_NOT_ARCHITECTURE = {"head", "num_classes", "num_verb_classes", "num_noun_classes", "dropout",
                     "attention_dropout", "stochastic_depth", "dtype"}  # settings a fine-tune may change


def init_from_run(params: dict, run: str, model: ModelConfig) -> dict:
    """`params` with every parameter replaced by the latest checkpoint's of run directory `run`; a head
    of another class count keeps its fresh initialisation (said on stderr). TrainError naming the first
    parameter that is missing or of another shape, and the model settings that differ."""
    import sys

    from mbt.run_dir import load_run
    from flax.traverse_util import flatten_dict, unflatten_dict

    other, theirs, step = load_run(run)
    ours, theirs = flatten_dict(params, sep="/"), flatten_dict(theirs, sep="/")
    shape = lambda tree, p: tuple(tree[p].shape) if p in tree else None  # noqa: E731
    fresh = sorted({p.split("/")[0] for p in set(ours) | set(theirs)
                    if p.split("/")[0] in HEADS and shape(ours, p) != shape(theirs, p)})
    differ = [p for p in sorted(set(ours) | set(theirs))
              if p.split("/")[0] not in fresh and shape(ours, p) != shape(theirs, p)]
    if differ:
        p = differ[0]
        where = (f"is {list(shape(theirs, p))} there, {list(shape(ours, p))} here" if p in ours and p in theirs
                 else "is not in this model" if p in theirs else "is not in that run")
        old, new = dataclasses.asdict(other.model), dataclasses.asdict(model)
        hint = " ".join(f"--model.{k}={','.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
                        for k, v in old.items() if v != new[k] and k not in _NOT_ARCHITECTURE)
        raise TrainError(f"--run.init_from {run}: parameter {p} {where}"
                         + (f"; that run's model differs: {hint}" if hint else ""))
    if fresh and jax.process_index() == 0:
        print(f"init_from {run}: {', '.join(fresh)} re-initialised (another class count than step {step}'s)",
              file=sys.stderr)
    return unflatten_dict({p: ours[p] if p.split("/")[0] in fresh else theirs[p] for p in ours}, sep="/")


# ---------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunPlan:
    """What the loop needs to know before the first step."""

    cfg: TrainConfig
    steps_per_epoch: int
    total_steps: int
    classes: list[str] | None
    index: dict[str, Any] | None  # the training split's index (None: shards without one)
    source: Any  # the shards.input.source.ShardSource resolved from the data spec, once


def plan_run(cfg: TrainConfig, data: str, split: str = "train") -> RunPlan:
    """Resolve the dataset-dependent parts of the config (classes, steps) and check everything fits."""
    from shards.input import source

    src = source.resolve(data, split=split, fmt=cfg.input.format)
    index = src.index or {}
    cfg = with_num_classes(cfg, index.get("classes")).check()
    if cfg.input.batch_size % jax.device_count():
        raise TrainError(f"input.batch_size={cfg.input.batch_size} is not divisible by the "
                         f"{jax.device_count()} devices; pass --input.batch_size=<a multiple>")
    samples = src.num_samples or index.get("num_samples")
    steps_per_epoch = max(1, (samples or cfg.input.batch_size) // cfg.input.batch_size)
    total = cfg.optim.steps or max(1, int(round(cfg.optim.epochs * steps_per_epoch)))
    return RunPlan(cfg=cfg, steps_per_epoch=steps_per_epoch, total_steps=total,
                   classes=index.get("classes"), index=src.index, source=src)


def train(cfg: TrainConfig, data: str, workdir: str, *, eval_data: str | None = None,
          split: str = "train", progress: bool = True) -> dict[str, Any]:
    """Train (resuming from the latest checkpoint in `workdir`) and return the last metrics."""
    from mbt.checkpoints import Checkpointer
    from mbt.distributed import check_same_config
    from mbt.input import data_mesh, device_batches
    from mbt.train_log import MetricWriter, ProgressLine
    from shards.input import make_input

    plan = plan_run(cfg, data, split)
    cfg = plan.cfg
    check_same_config(cfg)
    storage.makedirs(workdir)

    # --- Mesh: every device of every process, batch split over "data", parameters replicated.
    mesh = data_mesh()
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    # --- Model and checkpoints: restore the latest, else start fresh.
    ckpt = Checkpointer(workdir, cfg, keep=cfg.run.keep_checkpoints)
    if jax.process_index() == 0:
        from mbt.run_dir import write_data_record

        write_data_record(workdir, data, split, plan.index)
    state = init_state(cfg, plan.total_steps, plan.steps_per_epoch, cfg.run.seed)
    if cfg.run.init_from and ckpt.latest_step() is None:  # a new run starts from another run's parameters
        state = state.replace(params=init_from_run(state.params, cfg.run.init_from, cfg.model))
    state, input_state = ckpt.restore_latest(state)
    state = jax.device_put(state, replicated)
    start_step = int(state.step)

    # --- Input: this host's slice of each global batch, placed on the mesh with a prefetch of 2.
    batches = make_input(plan.source, cfg.input, split=split, training=True, seed=cfg.run.seed, state=input_state)
    feed = device_batches(batches, mesh, rgb_normalization=cfg.input.rgb_normalization)
    rng = jax.random.key(cfg.run.seed + 1)

    # --- Preemption: SIGTERM asks the loop to save and stop after the current step.
    stop = {"requested": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    writer = MetricWriter(workdir, enabled=jax.process_index() == 0, tensorboard=cfg.run.tensorboard)
    bar = ProgressLine(plan.total_steps, cfg.input.batch_size, enabled=progress and jax.process_index() == 0)
    step_fn = functools.partial(train_step, cfg=cfg, total_steps=plan.total_steps,
                                steps_per_epoch=plan.steps_per_epoch)
    last: dict[str, Any] = {}
    good_step = ckpt.latest_step()
    wait = 0.0
    try:
        for step in range(start_step, plan.total_steps):
            # Time blocked on the input. Steps are dispatched asynchronously, so on a backend that
            # shares the host's cores (CPU) this also counts step time: an upper bound there.
            t0 = time.perf_counter()
            batch = next(feed)
            wait += time.perf_counter() - t0
            state, metrics = step_fn(state, {k: v for k, v in batch.items() if k != "key"}, rng)
            done = step + 1
            if done % cfg.run.log_every == 0 or done == plan.total_steps or stop["requested"]:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(last["loss"]):
                    raise TrainError(f"loss is {last['loss']} at step {done}; the last good checkpoint is "
                                     f"step {good_step} in {workdir} (lower --optim.base_lr, or check the data)")
                # samples the input skipped so far (this host), by reason: bad_shard, bad_sample, ...
                skipped = {f"skipped_{k}": v for k, v in batches.counts().items() if k.startswith("bad_")}
                last.update(step=done, data_wait_s=round(wait, 3), skipped=sum(skipped.values()), **skipped)
                writer.write(done, last)
                bar.update(done, last["loss"], skipped=skipped)
                wait = 0.0
            if done % cfg.run.checkpoint_every == 0 or done == plan.total_steps or stop["requested"]:
                writer.sync()  # (a run in a bucket: its metrics so far land before the checkpoint)
                ckpt.save(done, state, feed.state())
                good_step = done
            if eval_data and cfg.run.eval_every and done % cfg.run.eval_every == 0 and done < plan.total_steps:
                writer.write(done, evaluate_params(cfg, state.params, eval_data, cfg.run.eval_split)["fused"],
                             prefix="eval/")
            if stop["requested"]:
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
        ckpt.close()
        bar.close()
        writer.sync()
    if eval_data and not stop["requested"]:
        result = evaluate_params(cfg, state.params, eval_data, cfg.run.eval_split)
        writer.write(int(state.step), result["fused"], prefix="eval/")
        last["eval"] = result
    writer.close()
    return last


def evaluate_params(cfg: TrainConfig, params, data: str, split: str, **kw) -> dict:
    from mbt.evaluate import evaluate

    return evaluate(cfg, params, data, split, **kw)
