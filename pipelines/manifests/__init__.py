"""Manifests: one pure reader per corpus, from files to a `Manifest` of clip specs.

    read_generic(path, video_root)                        path,start,end,labels  (CSV or JSONL)
    read_audioset(segments_csv, class_labels_indices_csv, video_root, pattern)
    read_vggsound(csv, video_root, pattern, split=...)    YTID,start,label,split
    read_epic(annotations_csv, video_root, pattern)       EPIC-Kitchens-100 annotations
    read_folder(root, clip_seconds, duration_fn)          ROOT/<label>/<video>

`read_manifest` is what the command line calls: it picks the reader (`kind='auto'` looks at the
extension and the first line), loads `--classes`, and hands over. Every reader returns one ClipSpec or
one RowFailure per row (`rows == len(specs) + len(failures)`) and raises ManifestError for a manifest
that can't be used at all (missing, wrong header, duplicate keys). Video files are not opened here:
the decode stage reports missing ones.
"""

from __future__ import annotations

import csv
import os
from typing import Callable

from pipelines.manifests import audioset, epic, vggsound
from pipelines.manifests.audioset import read_audioset
from pipelines.manifests.epic import read_epic
from pipelines.manifests.folder import read_folder
from pipelines.manifests.generic import read_generic
from pipelines.manifests.spec import (FAILURE_REASONS, MALFORMED_ROW, MAX_LINE_BYTES, PROBE_FAILED,
                                      UNKNOWN_LABEL, ClipSpec, Manifest, ManifestError, RowFailure,
                                      read_bounded)
from pipelines.manifests.vggsound import read_vggsound
from pipelines.manifests.vocabulary import label_indices, read_class_indices, read_classes

__all__ = [
    "ClipSpec", "RowFailure", "Manifest", "ManifestError", "FAILURE_REASONS", "MALFORMED_ROW",
    "UNKNOWN_LABEL", "PROBE_FAILED", "KINDS", "read_manifest", "detect_kind", "read_generic",
    "read_audioset", "read_vggsound", "read_epic", "read_folder", "read_classes", "read_class_indices",
    "label_indices",
]

KINDS = ("generic", "audioset", "vggsound", "epic", "folder")


def read_manifest(path: str, kind: str = "auto", video_root: str | None = None,
                  classes: str | None = None, pattern: str | None = None,
                  clip_seconds: float | None = None,
                  duration_fn: Callable[[str], float | None] | None = None, *,
                  split: str | None = None, trimmed: bool = True) -> Manifest:
    """Read any manifest the toolkit knows. `classes` is a class file (one name per line, or
    class_labels_indices.csv; required for AudioSet); `pattern` names the video files of
    AudioSet/VGGSound/EPIC rows; `clip_seconds` + `duration_fn` cut folder videos into clips;
    `split` keeps one VGGSound split; `trimmed=False` says AudioSet/VGGSound files are full videos."""
    if kind == "auto":
        kind = detect_kind(path)
    if kind not in KINDS:
        raise ManifestError(f"unknown manifest kind {kind!r}; use one of auto, {', '.join(KINDS)}")
    _check_options(kind, pattern, clip_seconds, split)
    if kind == "audioset":
        if not classes:
            raise ManifestError(f"AudioSet manifest {path!r} needs --classes class_labels_indices.csv "
                                f"(the 527-class vocabulary)")
        return read_audioset(path, classes, video_root, pattern or audioset.DEFAULT_PATTERN,
                             trimmed=trimmed)
    vocabulary = read_classes(classes) if classes else None
    if kind == "generic":
        return read_generic(path, video_root, vocabulary=vocabulary)
    if kind == "vggsound":
        return read_vggsound(path, video_root, pattern or vggsound.DEFAULT_PATTERN, split=split,
                             vocabulary=vocabulary, trimmed=trimmed)
    if kind == "epic":
        return read_epic(path, video_root, pattern or epic.DEFAULT_PATTERN, vocabulary=vocabulary)
    if video_root:
        raise ManifestError("--video-root does not apply to a folder manifest (the folder is the root)")
    return read_folder(path, clip_seconds, duration_fn, vocabulary=vocabulary)


def _check_options(kind: str, pattern: str | None, clip_seconds: float | None, split: str | None) -> None:
    """Options that mean nothing for `kind` are mistakes: say so rather than ignore them."""
    if pattern and kind in ("generic", "folder"):
        raise ManifestError(f"--pattern applies to audioset, vggsound and epic manifests, not {kind} "
                            f"(a {kind} manifest names its files itself)")
    if clip_seconds is not None and kind != "folder":
        raise ManifestError(f"--clip-seconds applies to folder manifests, not {kind} "
                            f"(write the clips' start/end into the manifest)")
    if split is not None and kind != "vggsound":
        raise ManifestError(f"a split filter applies to vggsound manifests, not {kind}")


def detect_kind(path: str) -> str:
    """The manifest kind of `path`, from the extension and the first line; ManifestError when unsure."""
    if os.path.isdir(path):
        return "folder"
    if path.lower().endswith((".jsonl", ".ndjson")):
        return "generic"
    try:
        with open(path, "rb") as f:
            # the first line, and more: a device, a binary file, an endless line fail here
            head = read_bounded(f, path, limit=MAX_LINE_BYTES + 1, head=True)
    except IsADirectoryError:
        return "folder"
    except FileNotFoundError:
        raise ManifestError(f"manifest {path!r} not found") from None
    except OSError as e:
        raise ManifestError(f"manifest {path!r} cannot be read: {e.strerror or e}") from None
    lines = head.decode("utf-8-sig", errors="replace").splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    fields = [f.strip() for f in next(csv.reader([first], skipinitialspace=True), [])]
    lower = [f.lower() for f in fields]
    if first.startswith("#") and ("segments csv" in first.lower() or "ytid" in first.lower()):
        return "audioset"
    if lower == ["path", "start", "end", "labels"]:
        return "generic"
    if "narration_id" in lower and "start_timestamp" in lower:
        return "epic"
    if len(fields) == 4 and _is_number(fields[1]):
        if lower[3] in ("train", "test"):
            return "vggsound"
        if _is_number(fields[2]) and fields[3].startswith(("/m/", "/g/", "/t/")):
            return "audioset"
    if first.startswith("{"):
        raise ManifestError(f"manifest {path!r} looks like JSONL: name it .jsonl (or .ndjson)")
    raise ManifestError(
        f"can't tell what kind of manifest {path!r} is (first line: {first[:80]!r}); pass "
        f"--manifest-kind {'|'.join(KINDS)} (a generic CSV starts with the header path,start,end,labels)")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
