"""Whole-dataset views: `stats` (from the index, once its shards are checked to be there, whole) and
`validate` (reads every sample, and checks every file's checksum where the index records one)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, BinaryIO

import numpy as np

from shards.format.checksum import CHUNK, Crc32c, stream_crc32c
from shards.format.dataset_index import INDEX_SUFFIX, list_splits, load_index, read_failures, shard_paths
from shards.format.errors import ShardError
from shards.format.jpeg import FrameBounds, FrameSizeError
from shards.format.limits import bytes_left
from shards.format.storage import join, open_path


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
    samples: int = 0  # samples read (each either decoded or reported)
    shards: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_dataset(folder: str, splits: list[str] | None = None) -> ValidationReport:
    """Read every sample of every shard of every format, decode every frame with the training
    input's decoder and check labels against the vocabulary, going on past bad samples to report each;
    check counts against the index, and each file's CRC32C where the index records one (in the same
    pass that reads the samples), and that each sample starts where its shard's offsets sidecar says. FileNotFoundError for a folder without a dataset; a split whose
    listed shards are missing or changed in size is a ShardError (as for every reader)."""
    names = splits or list_splits(folder)
    if not names:
        raise FileNotFoundError(f"{folder}: no SPLIT.index.json here, so this is not a dataset; pass the "
                                f"--output folder of `mbt ingest`")
    report = ValidationReport()
    for split in names:
        try:
            index = load_index(folder, split)
        except IsADirectoryError:
            raise ShardError(f"{join(folder, split + INDEX_SUFFIX)} is a folder, not an index file; move it "
                             f"away, or pass --split with the splits to validate") from None
        if not index["num_samples"]:
            report.problems.append(f"{index['index_path']}: split {split!r} has no samples (every manifest "
                                   f"row failed: see {index['failures_file']})")
        if not any("crc32c" in e for fmt in index["formats"] for e in index["shards"][fmt]):
            report.notes.append(f"{index['index_path']}: no checksums recorded (made by an older version): "
                                f"the shards were checked by reading every sample only")
        if not all("offsets" in e for fmt in index["formats"] for e in index["shards"][fmt]):
            report.notes.append(f"{index['index_path']}: no sample offsets recorded (made by an older "
                                f"version): its samples are read in order only; `mbt validate DIR "
                                f"--add-offsets` records them")
        bounds = FrameBounds.of_index(index)
        for fmt in index["formats"]:
            for entry, path in zip(index["shards"][fmt], shard_paths(index, fmt)):
                report.shards += 1
                n, problems = validate_shard(path, fmt, entry, index, bounds)
                report.samples += n
                report.problems += problems
        report.problems += _failures_problems(index)
    return report


def validate_shard(path: str, fmt: str, entry: dict[str, Any], index: dict[str, Any],
                   bounds: FrameBounds) -> tuple[int, list[str]]:
    """(samples read, problems) of one shard that `index` lists as `entry`: every sample decoded and
    checked (a bad one reported, and reading goes on where the container still frames the next),
    the file's CRC32C computed from the very bytes the samples were read from, in one pass."""
    from shards.format.offsets import load_offsets
    from shards.format.reader import read_shard_lazy

    problems, n, broken, offsets = [], 0, False, None
    if "offsets" in entry:
        try:
            offsets = load_offsets(index, entry)
        except (ShardError, OSError) as e:
            problems.append(str(e))
    try:
        f = open_path(path, "rb")
    except OSError as e:
        return 0, [f"{path}: cannot open it ({e.strerror or e})"]
    with f:
        stream = _Checksummed(f, path, bytes_left(f))
        try:
            for lazy in read_shard_lazy(stream, fmt, strict=False):
                n += 1
                # a sample is yielded as its last byte is read: where it ends is where the next starts
                if offsets is not None and (n >= len(offsets) or stream.pos != offsets[n]):
                    problems.append(f"{path}: sample #{n - 1} ends at byte {stream.pos}, but "
                                    f"its offsets sidecar {entry['offsets']} says "
                                    f"{offsets[n] if n < len(offsets) else 'nothing'}; remove it and run "
                                    f"`mbt validate DIR --add-offsets` to record it again")
                    offsets = None  # (one line per shard)
                try:
                    sample = lazy.to_sample()
                except ShardError as e:  # this sample only: the next one is framed
                    problems.append(_naming(path, e))
                    continue
                problems += sample_problems(sample, index["classes"], path, bounds)
        except (ShardError, OSError) as e:  # the container's framing is lost: the rest is unreadable
            problems.append(_naming(path, e))
            broken = True
        found = stream.finish()
    expected = entry.get("crc32c")
    if expected and found != expected:
        problems.append(f"{path}: crc32c {found}, but {index['index_path']} records {expected}: its bytes "
                        f"changed after it was written (a damaged disk or copy); run the `mbt ingest` that "
                        f"made it again")
    if n != entry["samples"] and not broken:
        problems.append(f"{path}: {n} samples read, the index says {entry['samples']}")
    return n, problems


class _Checksummed:
    """A shard file read front to back through a running CRC32C, so that validate checks the file's
    checksum in the pass that reads its samples (it is not seekable: every byte goes through `read`)."""

    def __init__(self, f: BinaryIO, name: str, size: int | None):
        self.f, self.name, self.size = f, name, size  # (size and tell: shards.format.limits.bytes_left)
        self.crc, self.pos = Crc32c(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.crc.update(data)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def finish(self) -> str:
        """The checksum of the whole file: what the readers left unread (a tar's end padding, the rest
        after a break) is read now."""
        while self.read(CHUNK):
            pass
        return self.crc.hexdigest()


def _failures_problems(index: dict[str, Any]) -> list[str]:
    """The failures file against the index: its checksum, where one is recorded, and its line count."""
    problems = []
    expected = index.get("failures_crc32c")
    if expected:
        path = join(index["folder"], index["failures_file"])
        with open_path(path, "rb") as f:
            found, _ = stream_crc32c(f)
        if found != expected:
            problems.append(f"{path}: crc32c {found}, but {index['index_path']} records {expected}: it changed "
                            f"after it was written; run the `mbt ingest` that made it again")
    failures = read_failures(index)
    c = index["counts"]
    if c["rows"] != c["written"] + c["failed"] or len(failures) != c["failed"]:
        problems.append(f"{index['index_path']}: rows {c['rows']} != written {c['written']} "
                        f"+ failed {c['failed']} (failures file has {len(failures)} lines)")
    return problems


def _naming(path: str, e: Exception) -> str:
    """The error's message, led by the shard's path unless it names it already."""
    return str(e) if path in str(e) else f"{path}: {e}"


def sample_problems(sample, classes: list[str], path: str, bounds: FrameBounds = FrameBounds()) -> list[str]:
    """What would make the training input skip `sample`: a frame its decoder can't decode, of another
    size than the clip's others, or whose header claims a size beyond `bounds` (reported by frame,
    each on its own, before any pixel buffer is made for it); an inf or NaN in the spectrogram; a
    label outside the vocabulary."""
    problems = []
    bad = frame_problems(sample.frames, bounds)
    n = len(sample.frames)
    if len(bad) == 1:
        (i, why), = bad.items()
        problems.append(f"{path}: sample {sample.key}: frame {i} of {n}: {why}")
    elif bad:
        shown = ", ".join(map(str, list(bad)[:10])) + (", ..." if len(bad) > 10 else "")
        first = next(iter(bad))
        what = "are too large" if bad[first].startswith(FrameSizeError.LEAD) else "are not decodable JPEGs"
        problems.append(f"{path}: sample {sample.key}: frames {shown} ({len(bad)} of {n}) {what} "
                        f"(frame {first}: {bad[first]})")
    finite = np.isfinite(sample.melspec)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        problems.append(f"{path}: sample {sample.key}: non-finite values in melspec ({int((~finite).sum())} "
                        f"inf/NaN, in {len(rows)} rows from row {rows[0]}); the shard is damaged - re-create "
                        f"it (mbt ingest)")
    outside = [i for i in sample.labels if not 0 <= i < len(classes)]
    if outside:
        problems.append(f"{path}: sample {sample.key}: label {outside[0]} is outside the {len(classes)} "
                        f"classes of the index")
    return problems


def frame_problems(frames: list[bytes], bounds: FrameBounds) -> dict[int, str]:
    """{frame number: what is wrong} of a clip's JPEG frames, decoded as the training input decodes
    them. The clip's size is the one most of its frames' headers give, so one bad header is one bad
    frame, not a clip of frames "of another size"; a header beyond `bounds` is never decoded."""
    from shards.format.jpeg import decode_jpeg, jpeg_size

    bad: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for i, frame in enumerate(frames):
        try:
            sizes[i] = bounds.check(jpeg_size(frame))
        except Exception as e:  # noqa: BLE001 - the decoders' errors (ValueError, OSError, ...): report, go on
            bad[i] = f"{type(e).__name__}: {e}" if type(e) is not FrameSizeError else str(e)
    if not sizes:
        return bad
    size = collections.Counter(sizes.values()).most_common(1)[0][0]
    out = np.empty(size[0] * size[1] * 3, np.uint8)  # one buffer for every frame of the clip
    for i, frame in enumerate(frames):
        if i in sizes and sizes[i] != size:
            bad[i] = f"it is {sizes[i][0]}x{sizes[i][1]}, the clip's other frames {size[0]}x{size[1]}"
        elif i in sizes:
            try:
                decode_jpeg(frame, out=out, frame_size=size)
            except Exception as e:  # noqa: BLE001 - as above
                bad[i] = f"{type(e).__name__}: {e}"
    return dict(sorted(bad.items()))
