"""AudioSet: the segment CSVs (balanced_train / unbalanced_train / eval_segments.csv) and
class_labels_indices.csv, the 527-class vocabulary.

    # Segments csv created Sun Mar  5 10:54:31 2017
    # num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882
    # YTID, start_seconds, end_seconds, positive_labels
    --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"

Labels are display names ("Speech"), the vocabulary is class_labels_indices.csv in index order, and a
mid missing from it fails its row (`unknown_label`). The key is `<YTID>_<start_ms>` (`--PJHxphWEs_30000`).

Local files are found with `pattern` under `video_root`. Placeholders: {ytid} (= {video_id}), {start},
{end} (segment seconds in the source video; an int when whole, so `{start:06d}` works), {start_ms},
{end_ms}. Downloaded AudioSet files almost always hold just the 10 s segment (`trimmed=True`): the clip
is then [0, end - start) of the file; pass `trimmed=False` when the files are the full YouTube videos.
"""

from __future__ import annotations

import csv
import io

from shards.format.schema import make_key

from pipelines.manifests.spec import (BadRow, ClipSpec, Manifest, UNKNOWN_LABEL, build_manifest, check_pattern,
                                      check_span, csv_records, default_root, fill_pattern, parse_seconds,
                                      read_rows, read_text, resolve_path, seconds_field)
from pipelines.manifests.vocabulary import read_class_indices

DEFAULT_PATTERN = "{ytid}_{start_ms}.mp4"
PLACEHOLDERS = ("ytid", "video_id", "start", "end", "start_ms", "end_ms")


def read_audioset(segments_csv: str, class_labels_indices_csv: str, video_root: str | None = None,
                  pattern: str = DEFAULT_PATTERN, *, trimmed: bool = True) -> Manifest:
    """Read an AudioSet segment CSV; the vocabulary is class_labels_indices.csv (display names)."""
    check_pattern(pattern, PLACEHOLDERS, "audioset")
    mids = read_class_indices(class_labels_indices_csv)
    name_of = dict(mids)
    text, sha = read_text(segments_csv)
    root = default_root(segments_csv, video_root)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    items = read_rows(csv_records(reader, segments_csv, comments=True),
                      lambda row, fields: _spec(row, fields, name_of, root, pattern, trimmed))
    return build_manifest(segments_csv, "audioset", sha, items, [name for _, name in mids])


def _spec(row: int, fields: list[str], name_of: dict[str, str], root: str, pattern: str,
          trimmed: bool) -> ClipSpec:
    if len(fields) != 4:
        raise BadRow(f"expected 4 fields (YTID, start_seconds, end_seconds, \"mids\"), got {len(fields)}")
    ytid, start, end, mid_list = (f.strip() for f in fields)
    if not ytid:
        raise BadRow("YTID is empty")
    start_s = parse_seconds(start, "start_seconds")
    end_s = parse_seconds(end, "end_seconds")
    key = make_key(ytid, start_s)
    path = resolve_path(fill_pattern(pattern, {
        "ytid": ytid, "video_id": ytid, "start": seconds_field(start_s), "end": seconds_field(end_s),
        "start_ms": int(round(start_s * 1000)), "end_ms": int(round(end_s * 1000))}), root)
    try:
        check_span(start_s, end_s)
    except BadRow as e:
        raise BadRow(e.detail, key=key, path=path) from None
    mids = [m.strip() for m in mid_list.split(",") if m.strip()]
    unknown = [m for m in mids if m not in name_of]
    if unknown:
        raise BadRow(f"label mid {unknown[0]!r} is not in class_labels_indices.csv", UNKNOWN_LABEL,
                     key=key, path=path)
    clip_start, clip_end = (0.0, end_s - start_s) if trimmed else (start_s, end_s)
    return ClipSpec(row=row, key=key, path=path, start=clip_start, end=clip_end,
                    labels=tuple(dict.fromkeys(name_of[m] for m in mids)), video_id=ytid)
