"""One loader stream: its share of the shards through the input's stages, as (batch, state) pairs.

read shards (shards.input.order) -> sample windows, frames still JPEG (sampling) -> shuffle buffer
-> check labels -> decode the sampled frames' crop boxes straight into the batch, resize, flip,
colour (augment) -> normalise + SpecAugment audio -> batch (batching); each stage a plain generator
over dicts. A stream runs in this process or in a worker process (shards.input.workers); `BadInput`
is its bad-input policy.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Iterable, Iterator

from shards.format import jpeg
from shards.format.errors import ShardError
from shards.input import augment, order, sampling, source
from shards.input.batching import Allocate, Batcher, check_labels
from shards.input.config import InputConfig


class BadInputWarning(UserWarning):
    """A shard or sample was skipped (on_error="skip"); the message names the shard, key and reason."""


class BadInput:
    """One stream's bad-input policy: count each skip by reason and warn naming shard and key, or raise."""

    def __init__(self, policy: str, counts: dict[str, int], skipped: Callable[[dict], None]):
        self.policy, self.counts, self.skipped = policy, counts, skipped

    def __call__(self, reason: str, example: dict, error: Exception) -> None:
        if self.policy == "raise":
            raise error
        self.counts[reason] = self.counts.get(reason, 0) + 1
        warnings.warn(f"skipped sample {example.get('__key__')} of shard {example.get('__shard__')} "
                      f"({reason}): {error}", BadInputWarning, stacklevel=2)
        self.skipped(example)

    def bad_shard(self, path: str, error: ShardError) -> None:
        if self.policy == "raise":
            raise error
        self.counts["bad_shard"] = self.counts.get("bad_shard", 0) + 1
        warnings.warn(f"skipped the rest of shard {path} (bad_shard): {error}", BadInputWarning, stacklevel=2)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every stream of a host needs (pickled once per worker process)."""

    source: source.ShardSource
    cfg: InputConfig
    training: bool
    seed: int
    process_index: int
    process_count: int
    streams_per_host: int
    batch_size: int  # per host
    num_classes: int | None
    mel_mean: Any
    mel_std: Any
    epochs: int | None
    target: int | None  # batches per stream of a finite input, when the shard sizes are known
    on_error: str


class Stream:
    """One loader stream: its share of the shards, as (batch, state after it) pairs."""

    def __init__(self, plan: Plan, local: int, state: dict | None = None, allocate: Allocate | None = None):
        self.plan, self.local, self.allocate = plan, local, allocate
        self.stream, self.num_streams = order.stream_of(plan.process_index, plan.process_count, local,
                                                        plan.streams_per_host)
        state = state or {}
        self.pos = order.Position(**state.get("position", {}))
        self.counts: dict[str, int] = dict(state.get("counts", {}))
        self.batches = state.get("batches", 0)
        self.bad = BadInput(plan.on_error, self.counts, self._on_skip)
        self.buffer = self._restore_buffer(state.get("buffer", []))
        # epoch -> [samples read, skipped, used] of the epochs whose fate is open (see _check_progress)
        self.tally: dict[int, list[int]] = {}
        for ex in self.buffer:
            self._tally(ex["epoch"])[0] += 1

    def state(self) -> dict[str, Any]:
        return {"position": self.pos.to_dict(), "buffer": [[*ex["__ref__"], ex["window"]] for ex in self.buffer],
                "batches": self.batches, "counts": dict(self.counts)}

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        p, cfg = self.plan, self.plan.cfg
        read = order.read_stream(self._open, len(p.source.paths), stream=self.stream,
                                 num_streams=self.num_streams, seed=p.seed, shuffle=p.training,
                                 epochs=p.epochs, pos=self.pos, on_bad_shard=self._bad_shard)
        examples = sampling.sample_windows(self._lazy(read), cfg=cfg, training=p.training, seed=p.seed,
                                           on_error=self.bad)
        examples = order.shuffle_buffer(examples, size=cfg.shuffle_buffer if p.training else 0, seed=p.seed,
                                        stream=self.stream, pos=self.pos, buffer=self.buffer,
                                        complete=lambda ex: ex["window"] + 1 == ex["num_windows"])
        batcher = Batcher(batch_size=p.batch_size, cfg=cfg, num_classes=p.num_classes, allocate=self.allocate)
        examples = check_labels(examples, kind=cfg.labels, num_classes=p.num_classes, on_error=self.bad)
        examples = augment.augment_video(examples, cfg=cfg, training=p.training, seed=p.seed, on_error=self.bad,
                                         slot=functools.partial(batcher.slot, "rgb"),
                                         bounds=jpeg.FrameBounds.of_index(p.source.index))
        examples = augment.augment_audio(examples, cfg=cfg, training=p.training, seed=p.seed,
                                         mel_mean=p.mel_mean, mel_std=p.mel_std,
                                         slot=functools.partial(batcher.slot, "spectrogram"))
        batches = batcher.batches(self._good(examples), pad=p.epochs is not None, target=p.target,
                                  done=self.batches)
        for batch in batches:
            self.batches += 1
            self.counts["batches"] = self.counts.get("batches", 0) + 1
            yield batch, self.state()

    # --- pieces of the pipeline that need the stream's own state
    def _open(self, shard: int) -> Iterator:
        return source.iter_shard(self.plan.source.paths[shard], self.plan.source.fmt)

    def _lazy(self, read: Iterable[tuple[order.Ref, Any]]) -> Iterator[dict]:
        for ref, lazy in read:
            self._tally(ref[0])[0] += 1
            yield {"lazy": lazy, "__ref__": ref, "epoch": ref[0]}

    def _bad_shard(self, shard: int, error: ShardError) -> None:
        self.bad.bad_shard(self.plan.source.paths[shard], error)

    def _good(self, examples: Iterable[dict]) -> Iterator[dict]:
        for ex in examples:
            self._tally(ex["epoch"])[2] += 1
            for name, what in (("frames_padded", "padded_video"), ("spec_padded", "padded_audio")):
                if ex[name]:
                    self.counts[what] = self.counts.get(what, 0) + 1
            self.counts["examples"] = self.counts.get("examples", 0) + 1
            yield ex

    def _tally(self, epoch: int) -> list[int]:
        tally = self.tally.get(epoch)
        if tally is None:  # a new epoch: forget the finished ones that had a usable sample
            for e in [e for e, (_, _, used) in self.tally.items() if used and e < self.pos.epoch]:
                del self.tally[e]
            tally = self.tally[epoch] = [0, 0, 0]
        return tally

    def _on_skip(self, example: dict) -> None:
        self._tally(example.get("epoch", 0))[1] += 1
        self._check_progress()

    def _check_progress(self) -> None:
        """An endless input over samples that are all bad would never yield: raise once a whole epoch
        that this stream has finished reading was skipped, every sample it read of it.

        Counted per epoch of the samples themselves, not by where the reader is: the shuffle buffer
        holds samples of several epochs of a split smaller than it, so the reader runs epochs ahead
        of the samples that come out as good (comparing the two made one bad sample in a 32-sample
        split look like an epoch without a usable sample)."""
        if self.plan.epochs is not None:
            return
        for epoch, (read, skipped, used) in self.tally.items():
            if epoch < self.pos.epoch and not used and skipped >= read > 0:  # (finished, all skipped)
                raise ShardError(f"loader stream {self.stream}: no usable sample in a whole epoch of "
                                 f"{self.plan.source.spec} ({_skipped(self.counts)} skipped; see the "
                                 f"warnings): the shards are corrupt or the config does not fit them")

    def _restore_buffer(self, refs: list[list[int]]) -> list[dict]:
        """Re-read the samples a saved shuffle buffer held (only their shards) and re-cut their windows."""
        if not refs:
            return []
        p = self.plan
        wanted: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for epoch, shard, index, window in refs:
            wanted.setdefault(shard, {}).setdefault(index, []).append((epoch, window))
        found: dict[tuple, dict] = {}
        for shard, indices in wanted.items():
            for i, lazy in enumerate(self._open(shard)):
                for epoch in {e for e, _ in indices.get(i, [])}:
                    item = {"lazy": lazy, "__ref__": (epoch, shard, i), "epoch": epoch}
                    for ex in sampling.sample_windows([item], cfg=p.cfg, training=p.training, seed=p.seed):
                        found[(epoch, shard, i, ex["window"])] = ex
                if i >= max(indices):
                    break
        missing = [r for r in refs if tuple(r) not in found]
        if missing:
            raise ShardError(f"cannot restore the input state: samples {missing[:3]} of the saved shuffle "
                             f"buffer are gone from {p.source.spec}; were the shards rewritten?")
        return [found[tuple(r)] for r in refs]


def _skipped(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("bad_"))
