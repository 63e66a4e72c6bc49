"""Writing a dataset: shards (streamed from staged samples, checksummed), the failures file, and the
job's index, which pipelines.publish then puts in place.

Every path goes through shards.format.storage, the one storage layer of the toolkit's readers and
writers, so the same code writes to a local folder or a bucket. A shard is written with
`storage.open_atomic` (a temporary name renamed when whole locally, one upload on a store), so a killed
or retried job never leaves a half shard under a real name. Every file a job writes carries its
generation in its name, and a job's generation is never the published one's, so nothing a reader of
the published split can see is ever written over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import posixpath
from typing import Any, Sequence

from pipelines.staging import copy_staged, shard_size
from shards.format import storage
from shards.format.checksum import ChecksumWriter, crc32c_hex, stream_crc32c
from shards.format.naming import shard_name
from shards.format.offsets import encode_offsets, offsets_name

# 2: shards' crc32c, the failures file named by generation, with its crc32c
# 3: each shard's offsets sidecar (SHARD.offsets: where each sample starts), with its crc32c
INDEX_VERSION = 3
PENDING_INDEX = "index.json"  # the job's index in its staging folder, until pipelines.publish places it


def job_generation(cfg, manifest_sha256: str, published: str | None) -> str:
    """The 8 hex digits in the names of a job's files: a function of the manifest, the settings, the
    tool, ffmpeg and the generation now published, so a rerun of a killed job writes the same names,
    and no job ever writes a name of the published split (`published`), whose readers would see it
    change under them."""
    from pipelines import __version__
    from pipelines.ffmpeg_run import ffmpeg_version

    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("output", "max_failed_fraction")}
    text = json.dumps([manifest_sha256, fields, __version__, ffmpeg_version(), published], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def failures_name(split: str, generation: str) -> str:
    return f"{split}-g{generation}.failures.jsonl"


def write_shard(output: str, split: str, shard_id: int, num_shards: int, fmt: str, position: int,
                records: Sequence[dict[str, Any]], generation: str | None = None) -> dict[str, Any]:
    """Write one shard file from staged samples (`records` already in key order; `position` is the
    format's place in the staged files) and its offsets sidecar; return its index entry, with both
    files' CRC32C. The offsets need no reading back: the staged pieces are the samples' bytes."""
    path = storage.join(output, shard_name(split, shard_id, num_shards, fmt, generation))
    expected = shard_size(records, fmt, position)
    if records and storage.size(records[0]["staged"]) is None and storage.size(path) == expected:
        # a retry of a WriteShard that finished: its staged files are gone, its shard is there
        with storage.open_path(path) as f:
            crc, size = stream_crc32c(f)
    else:
        with storage.open_atomic(path) as f:
            out = ChecksumWriter(f)
            copy_staged(records, fmt, position, out)
        crc, size = out.crc.hexdigest(), out.bytes
    offsets = encode_offsets(list(itertools.accumulate((r["sizes"][position] for r in records), initial=0)))
    storage.write_atomic(storage.join(output, offsets_name(path)), offsets)
    return {"format": fmt, "path": posixpath.basename(path), "shard": shard_id, "samples": len(records),
            "bytes": size, "crc32c": crc, "offsets": offsets_name(path), "offsets_crc32c": crc32c_hex(offsets)}


def build_index(cfg, manifest_info: dict[str, Any], vocabulary: list[str],
                shard_infos: list[dict[str, Any]], stats: dict[str, Any],
                failures: list[dict[str, Any]], generation: str) -> dict[str, Any]:
    """Write the job's failures file (SPLIT-gGEN.failures.jsonl) and return the job's index, which
    names it and every shard, with their sizes and checksums. Nothing is published here."""
    failures = sorted(failures, key=lambda f: (f["row"], f["key"]))
    lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures).encode("utf-8")
    name = failures_name(cfg.split, generation)
    storage.write_atomic(storage.join(cfg.output, name), lines)
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
        "failures_file": name, "failures_crc32c": crc32c_hex(lines),
    }
    return index
