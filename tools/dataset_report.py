"""Whole-dataset views: `stats` (from the index, once its shards are checked to be there, whole) and
`validate` (reads every sample)."""

from __future__ import annotations

import dataclasses
from typing import Any

from shards.format.dataset_index import list_splits, load_index, read_failures, shard_paths
from shards.format.errors import ShardError


def dataset_stats(folder: str, splits: list[str] | None = None) -> list[dict[str, Any]]:
    """Per split: samples, hours, bytes, shards, label histogram (by name), failures by reason."""
    out = []
    for split in splits or list_splits(folder):
        index = load_index(folder, split)
        for fmt in index["shards"]:
            shard_paths(index, fmt)  # the counts below are true only if the listed shards are all there
        classes = index["classes"]
        hist = {classes[int(i)] if int(i) < len(classes) else i: n
                for i, n in index["label_counts"].items()}
        out.append({
            "split": split, "samples": index["num_samples"], "hours": index["media_seconds"] / 3600,
            "bytes": {fmt: sum(s["bytes"] for s in v) for fmt, v in index["shards"].items()},
            "shards": index["num_shards"], "formats": index["formats"],
            "counts": index["counts"], "labels": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
            "no_audio_samples": index.get("no_audio_samples", 0),
            "mel_mean": index["mel_mean"], "mel_std": index["mel_std"],
        })
    if not out:
        raise FileNotFoundError(f"{folder}: no SPLIT.index.json here; pass the --output folder of `mbt ingest`")
    return out


def format_stats(stats: list[dict[str, Any]], top: int = 20) -> str:
    lines = []
    for s in stats:
        c = s["counts"]
        lines.append(f"split {s['split']}: {s['samples']} samples, {s['hours'] * 60:.1f} min of media, "
                     f"{s['shards']} shards x {'/'.join(s['formats'])}")
        lines.append("  bytes: " + ", ".join(f"{f} {b / 1e6:.1f} MB" for f, b in s["bytes"].items()))
        reasons = ", ".join(f"{k} {v}" for k, v in c["failed_by_reason"].items()) or "none"
        lines.append(f"  manifest rows {c['rows']} = {c['written']} written + {c['failed']} failed "
                     f"({reasons})")
        lines.append(f"  clips without audio: {s['no_audio_samples']}; mel mean {s['mel_mean']:.3f} "
                     f"std {s['mel_std']:.3f}")
        labels = list(s["labels"].items())
        lines.append(f"  labels ({len(labels)} used):")
        width = max((len(str(k)) for k, _ in labels[:top]), default=0)
        most = max((n for _, n in labels), default=1)
        for name, n in labels[:top]:
            lines.append(f"    {name:<{width}} {n:>6}  {'#' * max(1, round(30 * n / most))}")
        if len(labels) > top:
            lines.append(f"    ... {len(labels) - top} more")
    return "\n".join(lines)


@dataclasses.dataclass
class ValidationReport:
    samples: int = 0  # samples read and decoded
    shards: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_dataset(folder: str, splits: list[str] | None = None) -> ValidationReport:
    """Read every sample of every shard of every format, decode every frame with the training
    input's decoder and check labels against the vocabulary, going on past bad samples to report each;
    check counts against the index. FileNotFoundError for a folder without a dataset; a split whose
    listed shards are missing or changed is a ShardError (as for every reader)."""
    from shards.format.reader import read_shard

    names = splits or list_splits(folder)
    if not names:
        raise FileNotFoundError(f"{folder}: no SPLIT.index.json here, so this is not a dataset; pass the "
                                f"--output folder of `mbt ingest`")
    report = ValidationReport()
    for split in names:
        index = load_index(folder, split)
        if not index["num_samples"]:
            report.problems.append(f"{index['index_path']}: split {split!r} has no samples (every manifest "
                                   f"row failed: see {index['failures_file']})")
        for fmt in index["formats"]:
            for entry, path in zip(index["shards"][fmt], shard_paths(index, fmt)):
                report.shards += 1
                n = 0
                try:
                    for sample in read_shard(path):
                        report.problems += sample_problems(sample, index["classes"], path)
                        n += 1
                except (ShardError, OSError) as e:
                    report.problems.append(f"{path}: {e}")
                report.samples += n
                if n != entry["samples"]:
                    report.problems.append(f"{path}: {n} samples read, the index says {entry['samples']}")
        failures = read_failures(index)
        c = index["counts"]
        if c["rows"] != c["written"] + c["failed"] or len(failures) != c["failed"]:
            report.problems.append(f"{index['index_path']}: rows {c['rows']} != written {c['written']} "
                                   f"+ failed {c['failed']} (failures file has {len(failures)} lines)")
    return report


def sample_problems(sample, classes: list[str], path: str) -> list[str]:
    """What would make the training input skip `sample`: a frame its decoder can't decode (or of
    another size than the first), a label outside the vocabulary."""
    from shards.format.jpeg import decode_jpeg, jpeg_size

    problems, bad, first_error = [], [], None
    size = None
    for i, frame in enumerate(sample.frames):
        try:
            size = size or jpeg_size(frame)
            decode_jpeg(frame, frame_size=size)
        except Exception as e:  # noqa: BLE001 - the decoder's errors (ValueError, OSError, ...): report, go on
            bad.append(i)
            first_error = first_error or f"{type(e).__name__}: {e}"
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        problems.append(f"{path}: sample {sample.key}: frames {shown} ({len(bad)} of {len(sample.frames)}) "
                        f"are not decodable JPEGs ({first_error})")
    outside = [i for i in sample.labels if not 0 <= i < len(classes)]
    if outside:
        problems.append(f"{path}: sample {sample.key}: label {outside[0]} is outside the {len(classes)} "
                        f"classes of the index")
    return problems
