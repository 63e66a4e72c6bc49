"""Temporal sampling: which frames and spectrogram rows of a clip a training example is made of.

From the stored 25 fps frames, a window is either `num_frames` F spread over `clip_seconds` t
(stride 25t/F: the paper's 8 frames over t seconds) or, with `frame_stride`, F frames at that stride
(EPIC: 32 frames, stride 1). The spectrogram window is 100t rows, starting at the same instant as the
frames (synchronous) or independently (asynchronous, MBT Fig. 2). Training draws a random window,
evaluation takes the centred one, multi-clip testing N evenly spaced ones. A clip shorter than the
window is padded — its last frame repeated, silence appended to the spectrogram (AST's 0 to a
kaldi_fbank one: shards.format.schema.padding_value) — and the padding is recorded in the example,
never a reason to drop it. Only the sampled frames are ever JPEG-decoded
(by shards.input.augment.augment_video, straight into their crops).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from shards.format.errors import ShardError
from shards.format.schema import FPS, MEL_ROWS_PER_SECOND, NUM_MEL_BINS, MelParams, padding_value
from shards.input import order

if TYPE_CHECKING:
    from shards.input.config import InputConfig

# log-mel of silence: log(0 + log_offset), what a missing stretch of audio looks like
SILENCE = float(np.log(MelParams().log_offset))
ROWS_PER_FRAME = MEL_ROWS_PER_SECOND // FPS  # 4 spectrogram rows per video frame

# on_error(reason, example, exception): count and warn, or raise (see shards.input.pipeline.BadInput)
OnError = Callable[[str, dict, Exception], None]


def raise_error(reason: str, example: dict, error: Exception) -> None:
    raise error


@dataclasses.dataclass(frozen=True)
class Window:
    """One training example's share of a clip."""

    frames: tuple[int, ...]  # frame indices, clamped to the clip's last frame
    frames_padded: int  # how many indices lay past the clip's end (its last frame repeated)
    spec_start: int  # first spectrogram row
    spec_rows: int  # rows in the window: 100 t
    spec_padded: int  # rows past the clip's end (silence)


def frame_offsets(num_frames: int, clip_seconds: float, frame_stride: int | None = None) -> list[int]:
    """Offsets of the sampled frames from the window's first frame."""
    if frame_stride:
        return [k * frame_stride for k in range(num_frames)]
    span = round(FPS * clip_seconds)
    return [k * span // num_frames for k in range(num_frames)]  # stride 25t/F, floored


def video_span(num_frames: int, clip_seconds: float, frame_stride: int | None = None) -> int:
    """Frames the video window covers."""
    if frame_stride:
        return (num_frames - 1) * frame_stride + 1
    return max(round(FPS * clip_seconds), frame_offsets(num_frames, clip_seconds)[-1] + 1)


def choose_windows(clip_frames: int, clip_rows: int, *, num_frames: int, clip_seconds: float,
                   frame_stride: int | None = None, mode: str = "centre", count: int = 1,
                   async_spectrogram: bool = False,
                   rng: np.random.Generator | None = None) -> list[Window]:
    """The windows of a clip of `clip_frames` frames and `clip_rows` spectrogram rows.

    mode "random" (one window, needs `rng`), "centre" (one), or "spaced" (`count` evenly spaced).
    """
    offsets = frame_offsets(num_frames, clip_seconds, frame_stride)
    span = video_span(num_frames, clip_seconds, frame_stride)
    rows = round(MEL_ROWS_PER_SECOND * clip_seconds)
    last_start, last_row = max(0, clip_frames - span), max(0, clip_rows - rows)
    if mode == "random":
        assert rng is not None, "random windows need an rng"
        starts = [order.below(rng, last_start + 1)]
        rows_at = [order.below(rng, last_row + 1)] if async_spectrogram else None
    elif mode == "centre" or (mode == "spaced" and count == 1):
        starts, rows_at = [last_start // 2], [last_row // 2] if async_spectrogram else None
    elif mode == "spaced":
        starts = [int(x) for x in np.round(np.linspace(0, last_start, count))]
        rows_at = [int(x) for x in np.round(np.linspace(0, last_row, count))] if async_spectrogram else None
    else:
        raise ValueError(f"window mode {mode!r}: use random, centre or spaced")
    windows = []
    for i, start in enumerate(starts):
        idx = [start + o for o in offsets]
        row = rows_at[i] if rows_at is not None else start * ROWS_PER_FRAME
        windows.append(Window(
            frames=tuple(min(j, clip_frames - 1) for j in idx),
            frames_padded=sum(j >= clip_frames for j in idx),
            spec_start=row, spec_rows=rows, spec_padded=max(0, row + rows - clip_rows)))
    return windows


def cut_spectrogram(mel: np.ndarray, window: Window, pad: float = SILENCE) -> np.ndarray:
    """The window's rows of `mel`, `pad` (silence) where the clip has none: float32 [100 t, 128]."""
    out = np.empty((window.spec_rows, NUM_MEL_BINS), np.float32)
    part = mel[window.spec_start:window.spec_start + window.spec_rows]
    out[:len(part)] = part
    out[len(part):] = pad
    return out


def sample_windows(samples: Iterable[dict], *, cfg: "InputConfig", training: bool, seed: int,
                   on_error: OnError = raise_error) -> Iterator[dict]:
    """Stage: {"lazy": LazySample, "__ref__", ...} -> one example per window, frames still JPEG.

    Out: `jpegs` (F JPEG byte strings), `frame_indices`, `frames_padded`, `spectrogram` (raw log-mel
    [100 t, 128]), `spec_padded`, `labels`, `verb`, `noun`, `window`, `num_windows`, `__key__`/`__shard__`/
    `__ref__`/`epoch`. Training draws the window from (seed, epoch, key) alone, so it does not depend
    on which worker reads the sample or in what order.
    """
    for sample in samples:
        lazy = sample["lazy"]
        example = {"__key__": sample.get("__key__") or _name(lazy), "__shard__": lazy.shard,
                   "__ref__": sample.get("__ref__"), "epoch": sample.get("epoch", 0)}
        try:
            n, mel = lazy.num_frames, lazy.melspec
            labels, verb, noun = lazy.labels, lazy.verb, lazy.noun
            example["__key__"] = lazy.key
            if n == 0:
                raise lazy.error(f"sample {lazy.key} has no frames")
            if len(mel) == 0:
                raise lazy.error(f"sample {lazy.key} has no spectrogram rows")
            rng = order.rng(seed, order.WINDOW, example["epoch"], order.key_hash(lazy.key)) if training else None
            windows = choose_windows(
                n, len(mel), num_frames=cfg.num_frames, clip_seconds=cfg.clip_seconds,
                frame_stride=cfg.frame_stride, async_spectrogram=cfg.async_spectrogram, rng=rng,
                mode="random" if training else "spaced", count=1 if training else cfg.test_windows)
            pad = _pad_value(lazy) if any(w.spec_padded for w in windows) else SILENCE
            cut = [(w, lazy.frames(sorted(set(w.frames))), finite_window(lazy, mel, w, pad)) for w in windows]
        except ShardError as e:  # the codecs raise ShardError for anything malformed
            on_error("bad_sample", example, e)
            continue
        for i, (w, jpegs, spec) in enumerate(cut):
            by_index = dict(zip(sorted(set(w.frames)), jpegs))
            yield {**example, "jpegs": [by_index[j] for j in w.frames], "frame_indices": w.frames,
                   "frames_padded": w.frames_padded, "spectrogram": spec,
                   "spec_padded": w.spec_padded, "labels": labels, "verb": verb, "noun": noun,
                   "window": i, "num_windows": len(cut)}


def finite_window(lazy, mel: np.ndarray, window: Window, pad: float = SILENCE) -> np.ndarray:
    """The window's spectrogram (cut_spectrogram), or ShardError if it holds an inf or NaN: a damaged
    shard, which would otherwise reach the loss as NaN and be blamed on the learning rate."""
    spec = cut_spectrogram(mel, window, pad)
    if not np.isfinite(spec).all():
        row = window.spec_start + int(np.argwhere(~np.isfinite(spec))[0, 0])
        raise lazy.error(f"sample {lazy.key} has non-finite values in melspec (row {row} is the first)")
    return spec


def _pad_value(lazy) -> float:
    """What pads `lazy`'s spectrogram windows: by the feature kind its meta records (log_mel if none)."""
    meta = lazy.meta
    return padding_value((meta.get("feature_kind") if isinstance(meta, dict) else None) or "log_mel")


def _name(lazy) -> str:
    try:
        return lazy.key
    except Exception:
        return f"#{lazy.index}"
