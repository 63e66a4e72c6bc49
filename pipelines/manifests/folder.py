"""A folder per class, the layout most people's own data has:

    ROOT/dog/park.mp4
    ROOT/dog/2023/beach.mkv      <- subfolders of a class folder are searched too
    ROOT/cat/park.mp4

The label is the first folder under ROOT; files whose extension is not in VIDEO_EXTENSIONS and hidden
files are not videos and are ignored; a video directly in ROOT (no class folder) is a
`malformed_row` failure. The video id is the path under ROOT without extension, so the same file name
in two classes gives two keys (`dog-park_0`, `cat-park_0`).

Whole videos by default. With `clip_seconds`, each video is cut into back-to-back clips of exactly
that length from 0 s; a tail shorter than one clip is left out, and a video shorter than one clip
becomes a single whole-video clip. Cutting needs durations: `duration_fn(path) -> seconds` (the
caller passes an ffmpeg probe, so this module stays pure); when it raises or returns None or a
non-positive number, the video is one `probe_failed` failure. `rows` counts clips plus failed videos,
and `row` numbers them in order.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Callable

from shards.format.schema import make_key

from pipelines.manifests.spec import (MALFORMED_ROW, PROBE_FAILED, ClipSpec, Manifest, ManifestError,
                                      RowFailure, build_manifest)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                    ".m2ts", ".flv", ".wmv", ".3gp", ".ogv")


def read_folder(root: str, clip_seconds: float | None = None,
                duration_fn: Callable[[str], float | None] | None = None, *,
                vocabulary: list[str] | None = None,
                extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> Manifest:
    """Read `ROOT/<label>/<video>` into whole-video clips, or fixed-length clips with `clip_seconds`."""
    if not os.path.isdir(root):
        raise ManifestError(f"video folder {root!r} not found (expected ROOT/<label>/<video> files)")
    if clip_seconds is not None:
        if not (clip_seconds > 0 and math.isfinite(clip_seconds)):
            raise ManifestError(f"--clip-seconds must be a positive number of seconds, got {clip_seconds}")
        if duration_fn is None:
            raise ManifestError("cutting videos into clips (--clip-seconds) needs each video's duration: "
                                "pass duration_fn")
    root = os.path.abspath(root)
    videos = list_videos(root, extensions)
    items: list[ClipSpec | RowFailure] = []
    for rel in videos:
        path = os.path.join(root, rel)
        video_id = os.path.splitext(rel)[0]
        row = len(items) + 1
        if os.sep not in rel:
            items.append(RowFailure(row, make_key(video_id, 0), path, MALFORMED_ROW,
                                    "video is not inside a class folder (expected ROOT/<label>/<video>)"))
            continue
        label = rel.split(os.sep, 1)[0]
        if clip_seconds is None:
            items.append(ClipSpec(row=row, key=make_key(video_id, 0), path=path, start=0.0, end=None,
                                  labels=(label,), video_id=video_id))
            continue
        duration, problem = _duration(duration_fn, path)
        if problem:
            items.append(RowFailure(row, make_key(video_id, 0), path, PROBE_FAILED, problem))
            continue
        for start, end in clip_spans(duration, clip_seconds):
            items.append(ClipSpec(row=len(items) + 1, key=make_key(video_id, start), path=path,
                                  start=start, end=end, labels=(label,), video_id=video_id))
    listing = "".join(rel + "\n" for rel in videos).encode()
    return build_manifest(root, "folder", hashlib.sha256(listing).hexdigest(), items, vocabulary)


def list_videos(root: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Paths (relative to root, sorted) of the video files under root, hidden ones left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def clip_spans(duration: float, clip_seconds: float) -> list[tuple[float, float | None]]:
    """Back-to-back [start, end) spans of `clip_seconds` from 0; one whole-file span when the video
    is shorter than one clip."""
    count = math.floor(duration / clip_seconds + 1e-6)  # 29.9999999 s holds 3 clips of 10 s
    if count == 0:
        return [(0.0, None)]
    return [(round(k * clip_seconds, 6), round((k + 1) * clip_seconds, 6)) for k in range(count)]


def _duration(duration_fn: Callable[[str], float | None], path: str) -> tuple[float, str]:
    """(seconds, '') or (0, why the duration could not be had)."""
    try:
        duration = duration_fn(path)
    except Exception as e:  # noqa: BLE001 - a video the probe can't read becomes a failure row
        return 0.0, f"could not read the duration: {type(e).__name__}: {e}".splitlines()[0][:500]
    if duration is None or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= 0:
        return 0.0, f"could not read the duration (probe gave {duration!r})"
    return float(duration), ""
