"""VGGSound: vggsound.csv, no header, one 10 s clip per row, labels with commas quoted.

    ---g-f_I2yQ,1,people marching,test
    -0BIyqJj9ZU,30,"playing steel guitar, slide guitar",train

The key is `<YTID>_<start_ms>` (`---g-f_I2yQ_1000`). `split` keeps only the rows of one split (the
others are counted in `Manifest.skipped`); the vocabulary is built from the labels of every row, of
both splits, so train and test index classes the same way.

Local files are found with `pattern` under `video_root`; the default is the name VGGSound downloaders
write, `---g-f_I2yQ_000001.mp4`. Placeholders: {ytid} (= {video_id}), {start}, {end} (seconds in
the source video; ints when whole), {start_ms}, {end_ms}, {label}, {split}. `trimmed` as for AudioSet:
True when each file holds just the 10 s clip.
"""

from __future__ import annotations

import csv
import io

from shards.format.schema import make_key

from pipelines.manifests.spec import (BadRow, ClipSpec, Manifest, build_manifest, check_pattern, csv_records,
                                      default_root, fill_pattern, parse_seconds, read_rows, read_text,
                                      resolve_path, seconds_field)

CLIP_SECONDS = 10.0
DEFAULT_PATTERN = "{ytid}_{start:06d}.mp4"
PLACEHOLDERS = ("ytid", "video_id", "start", "end", "start_ms", "end_ms", "label", "split")


def read_vggsound(csv_path: str, video_root: str | None = None, pattern: str = DEFAULT_PATTERN, *,
                  split: str | None = None, vocabulary: list[str] | None = None,
                  trimmed: bool = True) -> Manifest:
    """Read vggsound.csv (`YTID,start,label,split`), optionally only the rows of one `split`."""
    check_pattern(pattern, PLACEHOLDERS, "vggsound")
    text, sha = read_text(csv_path)
    root = default_root(csv_path, video_root)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    records = [(row, fields) for row, fields in csv_records(reader, csv_path, comments=True)
               if not _is_header(row, fields)]
    kept = [(row, fields) for row, fields in records
            if split is None or len(fields) != 4 or fields[3].strip() == split]
    items = read_rows(kept, lambda row, fields: _spec(row, fields, root, pattern, trimmed))
    if vocabulary is None:  # every row's label, of both splits
        vocabulary = sorted({fields[2].strip() for _, fields in records if len(fields) == 4} - {""})
    return build_manifest(csv_path, "vggsound", sha, items, vocabulary, skipped=len(records) - len(kept))


def _is_header(row: int, fields: list[str]) -> bool:
    """A first line like `YTID,start,label,split` (the official file has none; some copies do)."""
    return row == 1 and len(fields) > 1 and fields[1].strip().lower() in ("start", "start_seconds")


def _spec(row: int, fields: list[str], root: str, pattern: str, trimmed: bool) -> ClipSpec:
    if len(fields) != 4:
        raise BadRow(f"expected 4 fields (YTID,start,label,split), got {len(fields)}")
    ytid, start, label, split = (f.strip() for f in fields)
    if not ytid:
        raise BadRow("YTID is empty")
    if not label:
        raise BadRow("label is empty")
    start_s = parse_seconds(start, "start")
    end_s = start_s + CLIP_SECONDS
    path = resolve_path(fill_pattern(pattern, {
        "ytid": ytid, "video_id": ytid, "start": seconds_field(start_s), "end": seconds_field(end_s),
        "start_ms": int(round(start_s * 1000)), "end_ms": int(round(end_s * 1000)),
        "label": label, "split": split}), root)
    clip_start, clip_end = (0.0, CLIP_SECONDS) if trimmed else (start_s, end_s)
    return ClipSpec(row=row, key=make_key(ytid, start_s), path=path, start=clip_start, end=clip_end,
                    labels=(label,), video_id=ytid)
