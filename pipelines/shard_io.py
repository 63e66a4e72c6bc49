"""Writing a dataset through Beam's FileSystems: shards (temp name + rename), failures, the index.

Paths go through `FileSystems`, so the same code writes to a local folder, gs:// or s3://. A shard is
streamed from its staged samples (pipelines.staging) under a hidden temporary name and renamed when
whole (as TFDS's BeamWriter does), so a killed or retried job never leaves a half shard under a real
name; the index is written last, and the staging area removed after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import uuid
from typing import Any, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.staging import copy_staged, remove_staging, shard_size
from shards.format.naming import EXTENSIONS, shard_name
from shards.format.storage import is_url

INDEX_VERSION = 1
TMP_PREFIX = ".tmp-"


def join(folder: str, name: str) -> str:
    return FileSystems.join(folder, name)


def _ensure_dir(folder: str) -> None:
    if not is_url(folder) and not FileSystems.exists(folder):
        try:
            FileSystems.mkdirs(folder)
        except OSError:  # another worker made it first
            pass


def _write_bytes_atomic(path: str, write) -> int:
    """Call write(fileobj) on a temporary file beside `path`, then rename it to `path`; return bytes."""
    folder, name = posixpath.split(path)
    _ensure_dir(folder)
    tmp = join(folder, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        write(f)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return _size(path)


def job_generation(cfg, manifest_sha256: str) -> str:
    """The 8 hex digits in the names of a job's shards: the same manifest, settings, tool and ffmpeg
    give the same generation (a rerun rewrites the same names with the same bytes); anything else
    gives a new one, whose shards sit beside the published ones until its index replaces theirs."""
    from pipelines import __version__
    from pipelines.ffmpeg_run import ffmpeg_version

    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "output"}
    text = json.dumps([manifest_sha256, fields, __version__, ffmpeg_version()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def write_shard(output: str, split: str, shard_id: int, num_shards: int, fmt: str, position: int,
                records: Sequence[dict[str, Any]], generation: str | None = None) -> dict[str, Any]:
    """Write one shard file from staged samples (`records` already in key order; `position` is the
    format's place in the staged files); return its index entry."""
    path = join(output, shard_name(split, shard_id, num_shards, fmt, generation))
    expected = shard_size(records, fmt, position)
    if records and not FileSystems.exists(records[0]["staged"]) and _size(path) == expected:
        size = expected  # a retry of a WriteShard that finished: its staged files are gone, its shard is there
    else:
        size = _write_bytes_atomic(path, lambda f: copy_staged(records, fmt, position, f))
    return {"format": fmt, "path": posixpath.basename(path), "shard": shard_id, "samples": len(records),
            "bytes": size}


def _size(path: str) -> int | None:
    found = FileSystems.match([path])[0].metadata_list
    return found[0].size_in_bytes if found else None


def index_path(output: str, split: str) -> str:
    return join(output, f"{split}.index.json")


def failures_path(output: str, split: str) -> str:
    return join(output, f"{split}.failures.jsonl")


def _remove_stale(output: str, split: str, keep: set[str]) -> None:
    """Delete temp files and shards of this split that the index does not list (older generations)."""
    patterns = [join(output, f"{TMP_PREFIX}{split}-*")]
    patterns += [join(output, f"{split}-*-of-*{ext}") for ext in EXTENSIONS.values()]
    stale = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list
             if posixpath.basename(m.path) not in keep]
    if stale:
        FileSystems.delete(stale)


def finalize_dataset(cfg, manifest_info: dict[str, Any], vocabulary: list[str],
                     shard_infos: list[dict[str, Any]], stats: dict[str, Any],
                     failures: list[dict[str, Any]], generation: str | None = None) -> dict[str, Any]:
    """Write SPLIT.failures.jsonl and then SPLIT.index.json, which publishes the split; then remove
    what the index does not list (older generations' shards, temp files, the staging area). Return
    the index."""
    failures = sorted(failures, key=lambda f: (f["row"], f["key"]))
    lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures).encode("utf-8")
    _write_bytes_atomic(failures_path(cfg.output, cfg.split), lambda f: f.write(lines))

    by_reason: dict[str, int] = {}
    for f in failures:
        by_reason[f["reason"]] = by_reason.get(f["reason"], 0) + 1
    shards = {fmt: sorted((dict(s) for s in shard_infos if s["format"] == fmt), key=lambda s: s["shard"])
              for fmt in cfg.formats}
    for entries in shards.values():
        for s in entries:
            del s["format"]
    # What the shards hold is the truth; the decode step's count can only be larger if the runner lost
    # samples between DecodeClip and WriteShard (seen once with the in-process runner). Then say so.
    in_shards = min(sum(s["samples"] for s in entries) for entries in shards.values())
    lost = stats["samples"] - in_shards
    from pipelines import __version__

    index = {
        "index_version": INDEX_VERSION,
        "tool": {"name": "mbt-toolkit", "version": __version__},
        "split": cfg.split,
        "generation": generation,
        "formats": list(cfg.formats),
        "num_shards": len(next(iter(shards.values()))),
        "shards": shards,
        "counts": {"rows": manifest_info["rows"], "written": in_shards, "failed": len(failures),
                   "failed_by_reason": dict(sorted(by_reason.items())), **({"lost": lost} if lost else {})},
        "num_samples": in_shards,
        "media_seconds": stats["seconds"],
        "frames": stats["frames"],
        "no_audio_samples": stats["no_audio"],
        "fetched_bytes": stats.get("fetched_bytes", 0),  # of remote sources, each fetched once per task
        "classes": list(vocabulary),
        "label_counts": stats["label_counts"],
        "features": cfg.feature_params(),
        "mel_mean": stats["mel_mean"], "mel_std": stats["mel_std"],
        "mel_mean_per_bin": stats["mel_mean_per_bin"], "mel_std_per_bin": stats["mel_std_per_bin"],
        "manifest": manifest_info,
        "failures_file": posixpath.basename(failures_path(cfg.output, cfg.split)),
    }
    text = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode("utf-8")
    _write_bytes_atomic(index_path(cfg.output, cfg.split), lambda f: f.write(text))
    # only now, with the new index in place: a kill before this leaves the old dataset whole
    _remove_stale(cfg.output, cfg.split, {s["path"] for entries in shards.values() for s in entries})
    remove_staging(cfg.output, cfg.split)
    return index
