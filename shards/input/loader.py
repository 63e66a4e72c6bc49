"""The training input of a host: shards -> shuffled, split, sampled, augmented, fixed-shape numpy batches.

    it = make_input("data/", InputConfig(batch_size=64, num_workers=8), split="train", seed=0)
    batch = next(it)     # rgb [B,F,224,224,3] f32, spectrogram [B,100t,128] f32, labels, key, mask, ...
    saved = it.state()   # small dict: save it with the checkpoint
    it = make_input("data/", cfg, split="train", seed=0, state=saved)   # continues exactly

One loader stream per worker and host (shards.input.order splits the shards between them; each
stream is the pipeline of shards.input.pipeline). Streams run in torch DataLoader worker processes
(`num_workers`, shards.input.workers), or in this process; the host takes their batches
round-robin, in the order torch's DataLoader gives them, so both ways give the same batches. Both
encodings go through the same Python pipeline (one JPEG decoder, one resize), which is why a `.tar`
and a `.tfrecord` dataset give the same batch for the same seed; tf.data would decode differently.

Worker processes start from a fork server, which imports the script that created
them, as spawn does: guard a training script with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Iterator

import numpy as np

from shards.format.errors import ShardError
from shards.input import order, source
from shards.input.config import InputConfig
from shards.input.pipeline import Plan, Stream

STATE_VERSION = 1


class InputIterator:
    """Fixed-shape numpy batches from one host's loader streams, with `state()` and `counts()`."""

    def __init__(self, plan: Plan, state: dict | None):
        self.plan = plan
        w = plan.streams_per_host
        self._states: list[dict | None] = list(state["streams"]) if state else [None] * w
        self._next = state["next"] if state else 0
        self._batches = state["batches"] if state else 0
        self._first = self._next
        self._loader: Any = None
        self._local: list[tuple[int, Iterator]] = []
        if plan.cfg.num_workers and plan.cfg.worker_processes:
            from shards.input import workers

            self._ring = workers.Ring(plan)
            self._loader = iter(workers.make_loader(plan, self._states, self._first, self._ring))
        else:
            order_ = [(self._first + i) % w for i in range(w)]  # round-robin from the saved next stream
            self._local = [(s, iter(Stream(plan, s, self._states[s]))) for s in order_]
            self._turn = 0

    def __iter__(self) -> "InputIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._loader is not None:
            try:
                item = next(self._loader)
            except ShardError as e:  # torch wraps a worker's error in its whole traceback: keep the error
                from shards.input.workers import worker_error_message

                raise ShardError(worker_error_message(str(e))) from None
            local, state = item["stream"], item["state"]
            batch = self._ring.take(local, item)
        else:
            local, batch, state = self._next_local()
        self._states[local] = state
        self._next = (local + 1) % self.plan.streams_per_host
        self._batches += 1
        return batch

    def _next_local(self) -> tuple[int, dict, dict]:
        while self._local:  # as torch's DataLoader: round-robin, skipping exhausted streams
            self._turn %= len(self._local)
            local, it = self._local[self._turn]
            try:
                batch, state = next(it)
            except StopIteration:
                del self._local[self._turn]
                continue
            self._turn += 1
            return local, batch, state
        raise StopIteration

    def state(self) -> dict[str, Any]:
        """Where the input is, after the last batch returned: a small JSON-able dict."""
        p = self.plan
        return {"version": STATE_VERSION, "seed": p.seed, "training": p.training,
                "process_index": p.process_index, "process_count": p.process_count,
                "streams_per_host": p.streams_per_host, "batch_size": p.batch_size,
                "source": p.source.fingerprint(), "next": self._next, "batches": self._batches,
                "streams": [dict(s) if s else _fresh_state() for s in self._states]}

    def counts(self) -> dict[str, int]:
        """Totals of this host so far: examples, batches, padded_video/audio, and skips by reason
        (bad_shard, bad_sample, bad_jpeg, bad_label). Includes counts from before a restore."""
        total: dict[str, int] = {}
        for s in self._states:
            for k, v in (s or {}).get("counts", {}).items():
                total[k] = total.get(k, 0) + v
        return dict(sorted(total.items()))

    def close(self) -> None:
        """Stop the worker processes (also done when the iterator is garbage-collected)."""
        self._loader, self._local = None, []

    def __enter__(self) -> "InputIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fresh_state() -> dict[str, Any]:
    return {"position": order.Position().to_dict(), "buffer": [], "batches": 0, "counts": {}}


def make_input(spec: Any, cfg: InputConfig | None = None, *, split: str = "train", training: bool = True,
               seed: int = 0, process_index: int | None = None, process_count: int | None = None,
               state: dict | None = None) -> InputIterator:
    """The training (or evaluation) input of a shard spec (see shards.input.source; or the ShardSource
    already resolved from one) as batches of this host.

    training=True: shards and samples shuffled per epoch, random windows, augmentation, endless
    unless cfg.epochs is set, bad input skipped. training=False: in order, centred (or
    cfg.test_windows) windows, no augmentation, one epoch, last batch padded (mask 0), bad input
    raised. process_index/count default to jax's when jax is imported, else 0/1. `state` is a
    dict from InputIterator.state(): the iterator continues exactly after it.
    """
    cfg = cfg or InputConfig()
    src = spec if isinstance(spec, source.ShardSource) else source.resolve(spec, split=split, fmt=cfg.format)
    if process_index is None or process_count is None:
        process_index, process_count = _jax_process()
    if cfg.batch_size % process_count:
        raise ShardError(f"batch_size {cfg.batch_size} does not split evenly over {process_count} hosts; "
                         f"use a multiple of {process_count}")
    index = src.index or {}
    num_classes = cfg.num_classes or (len(index["classes"]) if index.get("classes") else None)
    if cfg.labels == "multi_hot" and not num_classes:
        raise ShardError(f"multi-hot labels need the number of classes: {src.spec} has no index with "
                         f"classes; set InputConfig.num_classes")
    mel_mean, mel_std = mel_statistics(cfg, index, src.spec)
    epochs = cfg.epochs if cfg.epochs is not None else (None if training else 1)
    streams = max(1, cfg.num_workers)
    plan = Plan(source=src, cfg=cfg, training=training, seed=seed, process_index=process_index,
                 process_count=process_count, streams_per_host=streams,
                 batch_size=cfg.batch_size // process_count, num_classes=num_classes,
                 mel_mean=mel_mean, mel_std=mel_std, epochs=epochs, target=None,
                 on_error=cfg.on_error or ("skip" if training else "raise"))
    if epochs is not None and src.num_samples is not None:
        plan = dataclasses.replace(plan, target=_target_batches(plan))
    if state is not None:
        _check_state(state, plan)
    return InputIterator(plan, state)


def _target_batches(plan: Plan) -> int:
    """Batches every stream makes in a finite input, so that all hosts take the same number of steps."""
    counts = list(plan.source.counts)
    sizes = [0] * (plan.process_count * plan.streams_per_host)
    for epoch in range(plan.epochs or 1):
        per = order.stream_sizes(counts, seed=plan.seed, epoch=epoch, shuffle=plan.training, num_streams=len(sizes))
        sizes = [a + b for a, b in zip(sizes, per)]
    if len(counts) < len(sizes):  # by-sample split numbers samples across epochs
        total = sum(counts) * (plan.epochs or 1)
        sizes = [len(range(s, total, len(sizes))) for s in range(len(sizes))]
    windows = 1 if plan.training else plan.cfg.test_windows
    return max(math.ceil(n * windows / plan.batch_size) for n in sizes)


def mel_statistics(cfg: InputConfig, index: dict, spec: str) -> tuple[Any, Any]:
    """(mean, std) the spectrogram is normalised with: the config's, else `index`'s (a split's index,
    or a run's data.json), global or per bin; `spec` names the data in the error. The config's mean and
    std each replace the index's on their own (command-line overrides set one field at a time)."""
    if not cfg.normalize_spectrogram:
        return 0.0, 1.0
    if cfg.mel_mean is not None and cfg.mel_std is not None:
        return cfg.mel_mean, cfg.mel_std
    if cfg.mel_per_bin and index.get("mel_mean_per_bin"):
        mean, std = (np.asarray(index["mel_mean_per_bin"], np.float32),
                     np.maximum(np.asarray(index["mel_std_per_bin"], np.float32), 1e-5))
    elif index.get("mel_mean") is not None and index.get("mel_std"):
        mean, std = float(index["mel_mean"]), float(index["mel_std"])
    else:
        mean = std = None
    if mean is not None:
        return (mean if cfg.mel_mean is None else cfg.mel_mean), (std if cfg.mel_std is None else cfg.mel_std)
    raise ShardError(f"no mel statistics for {spec}: it has no index with mel_mean/mel_std; set "
                     f"InputConfig.mel_mean and mel_std, or normalize_spectrogram=False")


def _check_state(state: dict, plan: Plan) -> None:
    expect = {"version": STATE_VERSION, "seed": plan.seed, "training": plan.training,
              "process_index": plan.process_index, "process_count": plan.process_count,
              "streams_per_host": plan.streams_per_host, "batch_size": plan.batch_size,
              "source": plan.source.fingerprint()}
    wrong = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in expect.items() if state.get(k) != v]
    if wrong or len(state.get("streams", [])) != plan.streams_per_host:
        raise ValueError("cannot restore this input state: it was saved with a different setup ("
                         + "; ".join(wrong or ["number of streams"]) + "); restore with the same seed, "
                         "shards, hosts, num_workers and batch size")


def _jax_process() -> tuple[int, int]:
    """jax's (process_index, process_count) when jax is in use; (0, 1) without importing it."""
    if "jax" in sys.modules:
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1
