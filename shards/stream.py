"""The training input: shards -> shuffled, split, sampled, augmented, fixed-shape numpy batches.

    it = make_input("data/", InputConfig(batch_size=64, num_workers=8), split="train", seed=0)
    batch = next(it)     # rgb [B,F,224,224,3] f32, spectrogram [B,100t,128] f32, labels, key, mask, ...
    saved = it.state()   # small dict: save it with the checkpoint
    it = make_input("data/", cfg, split="train", seed=0, state=saved)   # continues exactly

One loader stream per worker and host (see shards.order): each stream is the pipeline
read shards -> sample windows (frames still JPEG) -> shuffle buffer -> check labels -> decode the
sampled frames' crop boxes straight into the batch (+ resize, flip, colour) -> normalise +
SpecAugment audio -> batch, made of the stages in shards.order / sampling / augment / batching, each
a plain generator over dicts. Streams run in torch DataLoader worker processes (`num_workers`), or
in this process; the host takes their batches round-robin, in the order torch's DataLoader gives
them, so both ways give the same batches. Both encodings go through the same Python pipeline (one
JPEG decoder, one resize), which is why a `.tar` and a `.tfrecord` dataset give the same batch for
the same seed; tf.data would decode differently.

Worker processes (shards.workers) start from a fork server, which imports the script that created
them, as spawn does: guard a training script with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import warnings
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shards import augment, order, sampling, source
from shards.batching import Allocate, Batcher, check_labels
from shards.errors import ShardError

STATE_VERSION = 1
LABEL_KINDS = ("multi_hot", "class_index", "verb_noun")


class BadInputWarning(UserWarning):
    """A shard or sample was skipped (on_error="skip"); the message names the shard, key and reason."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Everything about the input but where it reads from. Defaults: MBT-B on AudioSet (see presets)."""

    batch_size: int = 64  # global batch size; each host makes batch_size / process_count of it
    format: str | None = None  # "webdataset" | "tfrecord"; None: the spec's (a folder: webdataset first)
    # temporal sampling (shards.sampling)
    num_frames: int = 8  # F frames per example
    clip_seconds: float = 8.0  # t: the frames spread over t s (stride 25t/F); spectrogram of 100t rows
    frame_stride: int | None = None  # F consecutive frames at this stride instead (EPIC: 32 at 1)
    async_spectrogram: bool = False  # draw the spectrogram window's start independently (MBT Fig. 2)
    test_windows: int = 1  # evaluation: N evenly spaced windows per clip (multi-clip test)
    # video augmentation (shards.augment); training only, except the centred eval crop
    crop_size: int = 224  # output frames are crop_size x crop_size
    crop: str = "scale_jitter"  # "scale_jitter" (square, as scenic's video configs) or "random_resized"
    crop_area: tuple[float, float] = (0.3, 1.0)  # random_resized: fraction of the frame's area
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)  # random_resized: width / height
    jitter_side: tuple[float, float] = (0.65, 1.0)  # scale_jitter: box side / short side (~ scale 0.9-1.33)
    eval_crop_fraction: float = 0.875  # eval: centred square of this fraction of the short side
    antialias: bool = False  # antialiased resize (slower); False is tf.image.resize's, as DMVR's
    flip: bool = True  # horizontal flip with probability 1/2
    colour_jitter: bool = False  # brightness, contrast, saturation, hue (one colour matrix per clip)
    brightness: float = 0.2  # factor in [1 - b, 1 + b]
    contrast: float = 0.2  # factor in [1 - c, 1 + c]
    saturation: float = 0.2  # factor in [1 - s, 1 + s]
    hue: float = 0.05  # rotation in [-h, h] turns
    colour_prob: float = 0.8  # probability a clip is colour-jittered at all
    grayscale_prob: float = 0.0  # probability a clip is turned grey
    # audio augmentation
    spec_augment: bool = True  # SpecAugment time and frequency masks
    time_masks: int = 1
    time_mask_max: int = 192  # rows (10 ms each)
    freq_masks: int = 1
    freq_mask_max: int = 48  # mel bins
    # normalisation
    normalize_rgb: bool = True  # (x/255 - ImageNet mean) / std; else x/255
    rgb_uint8: bool = False  # ship raw uint8 pixels (4x less memory, transport, CPU); mbt.input normalises
    #                          them on the device (the training presets do: mbt.train_config)
    normalize_spectrogram: bool = True  # (x - mel_mean) / mel_std
    mel_mean: float | None = None  # None: the split's, from the index
    mel_std: float | None = None
    mel_per_bin: bool = False  # use the index's per-bin mean/std instead of the global ones
    # labels
    labels: str = "multi_hot"  # "multi_hot" [B,C] f32 | "class_index" [B] i32 | "verb_noun" (EPIC)
    num_classes: int | None = None  # None: the index's vocabulary size
    # order and workers
    shuffle_buffer: int = 256  # examples per stream's shuffle buffer (training; ~0.7 MB each at defaults)
    epochs: int | None = None  # None: endless when training, 1 for evaluation
    num_workers: int = 0  # loader streams per host; 0: one stream in this process
    worker_processes: bool = True  # False: run the num_workers streams in this process (same batches)
    prefetch: int = 2  # batches each worker prepares ahead
    start_method: str | None = None  # workers' multiprocessing start method (None: forkserver; shards.workers)
    on_error: str | None = None  # "skip" (count + warn) or "raise"; None: skip training, raise eval

    def __post_init__(self):
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.format in (None, "webdataset", "tfrecord"), "format must be webdataset or tfrecord"),
            (self.num_frames >= 1 and self.clip_seconds > 0, "num_frames >= 1 and clip_seconds > 0"),
            (self.frame_stride is None or self.frame_stride >= 1, "frame_stride must be >= 1"),
            (self.test_windows >= 1, "test_windows must be >= 1"),
            (self.crop_size >= 1, "crop_size must be >= 1"),
            (self.crop in ("random_resized", "scale_jitter"), "crop must be random_resized or scale_jitter"),
            (0 < self.crop_area[0] <= self.crop_area[1] <= 1, "crop_area must be 0 < lo <= hi <= 1"),
            (0 < self.crop_aspect[0] <= self.crop_aspect[1], "crop_aspect must be 0 < lo <= hi"),
            (0 < self.jitter_side[0] <= self.jitter_side[1] <= 1, "jitter_side must be 0 < lo <= hi <= 1"),
            (0 < self.eval_crop_fraction <= 1, "eval_crop_fraction must be in (0, 1]"),
            (min(self.time_masks, self.freq_masks, self.time_mask_max, self.freq_mask_max) >= 0,
             "SpecAugment counts and widths must be >= 0"),
            ((self.mel_mean is None) == (self.mel_std is None), "give both mel_mean and mel_std, or neither"),
            (self.mel_std is None or self.mel_std > 0, "mel_std must be > 0"),
            (self.labels in LABEL_KINDS, f"labels must be one of {', '.join(LABEL_KINDS)}"),
            (self.epochs is None or self.epochs >= 1, "epochs must be >= 1 or None"),
            (self.num_workers >= 0 and self.prefetch >= 1, "num_workers >= 0 and prefetch >= 1"),
            (self.on_error in (None, "skip", "raise"), "on_error must be skip or raise"),
            (self.normalize_rgb or not self.rgb_uint8,
             "rgb_uint8 ships raw pixels that mbt.input normalises with ImageNet mean/std: keep normalize_rgb"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError(f"InputConfig: {'; '.join(bad)}")

    @property
    def spectrogram_rows(self) -> int:
        return round(100 * self.clip_seconds)


# ------------------------------------------------------------------------------------------ presets

def audioset_input() -> InputConfig:
    """AudioSet (multi-label, 527 classes): 8 frames over 8 s, 800 x 128 spectrogram, 224 crops with
    scale jitter and flips, SpecAugment; no colour augmentation (as scenic's video configs)."""
    return InputConfig()


def vggsound_input() -> InputConfig:
    """VGGSound (one label per clip, 309 classes): as AudioSet, labels as class indices."""
    return InputConfig(labels="class_index")


def epic_input() -> InputConfig:
    """EPIC-Kitchens-100 (verb + noun): 32 consecutive frames (stride 1, 1.28 s), 2 s of spectrogram."""
    return InputConfig(num_frames=32, frame_stride=1, clip_seconds=2.0, labels="verb_noun")


def tiny_input() -> InputConfig:
    """CPU tests: 4 frames over 1 s, 32 px crops, 100 x 128 spectrogram, batches of 4."""
    return InputConfig(batch_size=4, num_frames=4, clip_seconds=1.0, crop_size=32, shuffle_buffer=8,
                       time_mask_max=20, freq_mask_max=16)


# --------------------------------------------------------------------------------------- bad input

class BadInput:
    """One stream's bad-input policy: count each skip by reason and warn naming shard and key, or raise."""

    def __init__(self, policy: str, counts: dict[str, int], check_progress: Callable[[], None]):
        self.policy, self.counts, self.check_progress = policy, counts, check_progress

    def __call__(self, reason: str, example: dict, error: Exception) -> None:
        if self.policy == "raise":
            raise error
        self.counts[reason] = self.counts.get(reason, 0) + 1
        warnings.warn(f"skipped sample {example.get('__key__')} of shard {example.get('__shard__')} "
                      f"({reason}): {error}", BadInputWarning, stacklevel=2)
        self.check_progress()

    def bad_shard(self, path: str, error: ShardError) -> None:
        if self.policy == "raise":
            raise error
        self.counts["bad_shard"] = self.counts.get("bad_shard", 0) + 1
        warnings.warn(f"skipped the rest of shard {path} (bad_shard): {error}", BadInputWarning, stacklevel=2)


# ------------------------------------------------------------------------------------------ streams

@dataclasses.dataclass(frozen=True)
class _Plan:
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


class _Stream:
    """One loader stream: its share of the shards, as (batch, state after it) pairs."""

    def __init__(self, plan: _Plan, local: int, state: dict | None = None, allocate: Allocate | None = None):
        self.plan, self.local, self.allocate = plan, local, allocate
        self.stream, self.num_streams = order.stream_of(plan.process_index, plan.process_count, local,
                                                        plan.streams_per_host)
        state = state or {}
        self.pos = order.Position(**state.get("position", {}))
        self.counts: dict[str, int] = dict(state.get("counts", {}))
        self.batches = state.get("batches", 0)
        self.bad = BadInput(plan.on_error, self.counts, self._check_progress)
        self.last_good_epoch = self.pos.epoch
        self.buffer = self._restore_buffer(state.get("buffer", []))

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
                                         slot=functools.partial(batcher.slot, "rgb"))
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
            yield {"lazy": lazy, "__ref__": ref, "epoch": ref[0]}

    def _bad_shard(self, shard: int, error: ShardError) -> None:
        self.bad.bad_shard(self.plan.source.paths[shard], error)

    def _good(self, examples: Iterable[dict]) -> Iterator[dict]:
        for ex in examples:
            self.last_good_epoch = ex["epoch"]
            for name, what in (("frames_padded", "padded_video"), ("spec_padded", "padded_audio")):
                if ex[name]:
                    self.counts[what] = self.counts.get(what, 0) + 1
            self.counts["examples"] = self.counts.get("examples", 0) + 1
            yield ex

    def _check_progress(self) -> None:
        if self.plan.epochs is None and self.pos.epoch > self.last_good_epoch + 1:
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


# ------------------------------------------------------------------------------------ the iterator

class InputIterator:
    """Fixed-shape numpy batches from one host's loader streams, with `state()` and `counts()`."""

    def __init__(self, plan: _Plan, state: dict | None):
        self.plan = plan
        w = plan.streams_per_host
        self._states: list[dict | None] = list(state["streams"]) if state else [None] * w
        self._next = state["next"] if state else 0
        self._batches = state["batches"] if state else 0
        self._first = self._next
        self._loader: Any = None
        self._local: list[tuple[int, Iterator]] = []
        if plan.cfg.num_workers and plan.cfg.worker_processes:
            from shards import workers

            self._ring = workers.Ring(plan)
            self._loader = iter(workers.make_loader(plan, self._states, self._first, self._ring))
        else:
            order_ = [(self._first + i) % w for i in range(w)]  # round-robin from the saved next stream
            self._local = [(s, iter(_Stream(plan, s, self._states[s]))) for s in order_]
            self._turn = 0

    def __iter__(self) -> "InputIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._loader is not None:
            try:
                item = next(self._loader)
            except ShardError as e:  # torch wraps a worker's error in its whole traceback: keep the error
                from shards.workers import worker_error_message

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


def _skipped(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("bad_"))


def _fresh_state() -> dict[str, Any]:
    return {"position": order.Position().to_dict(), "buffer": [], "batches": 0, "counts": {}}


def make_input(spec: Any, cfg: InputConfig | None = None, *, split: str = "train", training: bool = True,
               seed: int = 0, process_index: int | None = None, process_count: int | None = None,
               state: dict | None = None) -> InputIterator:
    """The training (or evaluation) input of a shard spec (see shards.source) as batches of this host.

    training=True: shards and samples shuffled per epoch, random windows, augmentation, endless
    unless cfg.epochs is set, bad input skipped. training=False: in order, centred (or
    cfg.test_windows) windows, no augmentation, one epoch, last batch padded (mask 0), bad input
    raised. process_index/count default to jax's when jax is imported, else 0/1. `state` is a
    dict from InputIterator.state(): the iterator continues exactly after it.
    """
    cfg = cfg or InputConfig()
    src = source.resolve(spec, split=split, fmt=cfg.format)
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
    plan = _Plan(source=src, cfg=cfg, training=training, seed=seed, process_index=process_index,
                 process_count=process_count, streams_per_host=streams,
                 batch_size=cfg.batch_size // process_count, num_classes=num_classes,
                 mel_mean=mel_mean, mel_std=mel_std, epochs=epochs, target=None,
                 on_error=cfg.on_error or ("skip" if training else "raise"))
    if epochs is not None and src.num_samples is not None:
        plan = dataclasses.replace(plan, target=_target_batches(plan))
    if state is not None:
        _check_state(state, plan)
    return InputIterator(plan, state)


def _target_batches(plan: _Plan) -> int:
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
    or a run's data.json), global or per bin; `spec` names the data in the error."""
    if not cfg.normalize_spectrogram:
        return 0.0, 1.0
    if cfg.mel_mean is not None:
        return cfg.mel_mean, cfg.mel_std
    if cfg.mel_per_bin and index.get("mel_mean_per_bin"):
        return (np.asarray(index["mel_mean_per_bin"], np.float32),
                np.maximum(np.asarray(index["mel_std_per_bin"], np.float32), 1e-5))
    if index.get("mel_mean") is not None and index.get("mel_std"):
        return float(index["mel_mean"]), float(index["mel_std"])
    raise ShardError(f"no mel statistics for {spec}: it has no index with mel_mean/mel_std; set "
                     f"InputConfig.mel_mean and mel_std, or normalize_spectrogram=False")


def _check_state(state: dict, plan: _Plan) -> None:
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
