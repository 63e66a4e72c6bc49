"""Look at one stored sample: a text summary, and a PNG contact sheet (frames + spectrogram)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from shards.format.errors import ShardError
from shards.format.schema import FPS, MEL_ROWS_PER_SECOND, Sample


def find_sample(path: str, index: int | None = None, key: str | None = None) -> Sample:
    """Sample number `index` (default 0) or the one with `key`, from a .tar or .tfrecord shard. Only
    that sample is decoded: a damaged one before it is passed over (`mbt validate` lists those)."""
    from shards.format.reader import read_shard_lazy

    unreadable = 0
    for i, lazy in enumerate(read_shard_lazy(path, strict=False)):
        if key is None:
            if i == (index or 0):
                return lazy.to_sample()
            continue
        try:
            found = lazy.key == key
        except ShardError:
            unreadable += 1
            continue
        if found:
            return lazy.to_sample()
    what = f"key {key!r}" if key is not None else f"index {index or 0}"
    also = f" ({unreadable} damaged samples could not be searched: `mbt validate` lists them)" if unreadable else ""
    raise ShardError(f"{path}: no sample with {what}{also}; `mbt inspect {path} --list` shows what is there")


def list_keys(path: str) -> list[str]:
    from shards.format.reader import read_shard_lazy

    return [s.key for s in read_shard_lazy(path, strict=False)]


def check_frame_sizes(sample: Sample, path: str) -> None:
    """ShardError naming the frame if a frame's JPEG header claims a size beyond what its dataset's
    frames can be (the index beside the shard says; else the caps of shards.format.jpeg, within
    Pillow's MAX_IMAGE_PIXELS): such a header is damage, and drawing it would allocate what it claims."""
    from shards.format.jpeg import FrameBounds, FrameSizeError, jpeg_size
    from shards.input.source import index_beside

    bounds = FrameBounds.of_index(index_beside([path]))
    for i, frame in enumerate(sample.frames):
        try:
            bounds.check(jpeg_size(frame))
        except FrameSizeError as e:
            raise ShardError(f"shard {path}, sample {sample.key}: frame {i} of {len(sample.frames)}: {e}; the "
                             f"shard is damaged - re-create it (mbt ingest)") from None
        except ValueError:
            pass  # not a decodable JPEG: the contact sheet draws it as such


def describe(sample: Sample) -> str:
    """A few lines a person can read: key, labels, duration, frames, spectrogram, meta."""
    from shards.format.jpeg import jpeg_size  # reads the header; nothing is decoded

    try:
        h, w = jpeg_size(sample.frames[0]) if sample.frames else (0, 0)
    except ValueError:  # frame 0's header is damaged (`mbt validate` says how)
        h = w = "?"
    mel = sample.melspec
    labels = ", ".join(f"{i} {t!r}" for i, t in zip(sample.labels, sample.label_text)) or "(none)"
    extra = "".join(f"\n{name:<10} {v}" for name, v in (("verb", sample.verb), ("noun", sample.noun))
                    if v is not None)
    rng = f"[{mel.min():.2f}, {mel.max():.2f}] mean {mel.mean():.2f}" if mel.size else "(empty)"
    return (f"key        {sample.key}\n"
            f"labels     {labels}{extra}\n"
            f"duration   {sample.duration:.2f} s ({len(sample.frames)} frames at {FPS} fps, "
            f"{mel.shape[0] / MEL_ROWS_PER_SECOND:.2f} s of spectrogram)\n"
            f"frames     {len(sample.frames)} x {w}x{h} JPEG, "
            f"{sum(map(len, sample.frames)) / max(len(sample.frames), 1) / 1024:.1f} KiB each\n"
            f"melspec    {mel.dtype} {list(mel.shape)}, range {rng}\n"
            f"meta       {json.dumps(sample.meta, sort_keys=True)}")


def contact_sheet(sample: Sample, out_png: str, num_frames: int = 8) -> str:
    """Write a PNG: a row of evenly spaced frames above the spectrogram with a time axis; return path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = max(1, min(num_frames, len(sample.frames)))
    picks = np.linspace(0, len(sample.frames) - 1, n).round().astype(int) if sample.frames else []
    fig = plt.figure(figsize=(2.0 * n, 5.2), dpi=100)
    grid = fig.add_gridspec(2, n, height_ratios=[1, 1.3])
    for col, i in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        try:
            ax.imshow(Image.open(io.BytesIO(sample.frames[i])).convert("RGB"))
            ax.set_title(f"{i / FPS:.2f} s", fontsize=8)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # shown as such, the sheet goes on
            ax.text(0.5, 0.5, "not a decodable\nJPEG (mbt validate\nlists them)", ha="center",
                    va="center", fontsize=8, color="red", transform=ax.transAxes)
            ax.set_title(f"{i / FPS:.2f} s: corrupt", fontsize=8, color="red")
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    seconds = sample.melspec.shape[0] / MEL_ROWS_PER_SECOND
    im = ax.imshow(sample.melspec.T, origin="lower", aspect="auto", cmap="magma",
                   extent=[0, seconds, 0, sample.melspec.shape[1]])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    fig.colorbar(im, ax=ax, label="log mel power", pad=0.01)
    audio = "" if sample.meta.get("has_audio", True) else "  [no audio track: silence]"
    fig.suptitle(f"{sample.key}  -  {', '.join(sample.label_text) or 'unlabelled'}{audio}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def sample_summary(sample: Sample) -> dict[str, Any]:
    """The same facts as `describe`, as a dict (for --json)."""
    return {"key": sample.key, "labels": sample.labels, "label_text": sample.label_text,
            "verb": sample.verb, "noun": sample.noun, "num_frames": len(sample.frames),
            "melspec_shape": list(sample.melspec.shape), "meta": sample.meta}
