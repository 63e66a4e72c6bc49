"""EPIC-Kitchens-100 action annotations (EPIC_100_train.csv, EPIC_100_validation.csv, and the
label-less EPIC_100_test_timestamps.csv).

    narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,
    stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes
    P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]

One clip per narration: [start_timestamp, stop_timestamp) of the long video, timestamps HH:MM:SS.ff.
`verb`/`noun` of the ClipSpec are verb_class/noun_class (what the two-head model trains on); its
labels are (verb, noun) as written in the row ("open", "door") - parsed names, not class keys, so they
are for people and for stats; several names can share a class. The key is
`<narration_id>_<start_ms>` (`P01_01_0_140`): narrations of one video may start at the same instant,
narration ids never repeat. Rows without verb/noun columns (the test timestamps) get no labels.

Videos are found with `pattern` under `video_root`; placeholders {participant}, {video_id},
{narration_id}, {start}, {end} (seconds), {start_ms}, {end_ms}. Default: `P01/videos/P01_01.MP4`.
"""

from __future__ import annotations

import csv
import io
import re

from shards.format.schema import make_key

from pipelines.manifests.spec import (BadRow, ClipSpec, Manifest, ManifestError, build_manifest, check_pattern,
                                      check_span, csv_records, default_root, fill_pattern, read_rows, read_text,
                                      resolve_path, seconds_field)

DEFAULT_PATTERN = "{participant}/videos/{video_id}.MP4"
PLACEHOLDERS = ("participant", "video_id", "narration_id", "start", "end", "start_ms", "end_ms")
REQUIRED = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp")
LABEL_COLUMNS = ("verb", "verb_class", "noun", "noun_class")
_TIMESTAMP = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d*)?)$")


def read_epic(annotations_csv: str, video_root: str | None = None, pattern: str = DEFAULT_PATTERN, *,
              vocabulary: list[str] | None = None) -> Manifest:
    """Read an EPIC-Kitchens-100 annotation CSV: one clip per narration."""
    check_pattern(pattern, PLACEHOLDERS, "epic")
    text, sha = read_text(annotations_csv)
    root = default_root(annotations_csv, video_root)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ManifestError(
            f"EPIC annotations {annotations_csv!r}: header lacks {', '.join(missing)}; expected "
            f"{','.join(REQUIRED[:3])},narration_timestamp,{','.join(REQUIRED[3:])},start_frame,stop_frame,"
            f"narration,{','.join(LABEL_COLUMNS)},all_nouns,all_noun_classes")
    has_labels = all(c in header for c in LABEL_COLUMNS)
    items = read_rows(csv_records(reader, annotations_csv),
                      lambda row, fields: _spec(row, fields, header, root, pattern, has_labels))
    return build_manifest(annotations_csv, "epic", sha, items, vocabulary)


def parse_timestamp(text: str, field: str) -> float:
    """Seconds from an EPIC timestamp `HH:MM:SS.ff` (00:01:02.37 -> 62.37)."""
    m = _TIMESTAMP.match(text)
    if not m:
        raise BadRow(f"{field} {text!r} is not a timestamp like 00:01:02.37")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _spec(row: int, fields: list[str], header: list[str], root: str, pattern: str,
          has_labels: bool) -> ClipSpec:
    if len(fields) != len(header):
        raise BadRow(f"expected {len(header)} fields like the header, got {len(fields)}")
    r = dict(zip(header, (f.strip() for f in fields)))
    narration_id, participant, video_id = r["narration_id"], r["participant_id"], r["video_id"]
    for name, value in (("narration_id", narration_id), ("participant_id", participant),
                        ("video_id", video_id)):
        if not value:
            raise BadRow(f"{name} is empty")
    start = parse_timestamp(r["start_timestamp"], "start_timestamp")
    end = parse_timestamp(r["stop_timestamp"], "stop_timestamp")
    key = make_key(narration_id, start)
    path = resolve_path(fill_pattern(pattern, {
        "participant": participant, "video_id": video_id, "narration_id": narration_id,
        "start": seconds_field(start), "end": seconds_field(end),
        "start_ms": int(round(start * 1000)), "end_ms": int(round(end * 1000))}), root)
    try:
        check_span(start, end)
        labels, verb, noun = (), None, None
        if has_labels:
            labels = tuple(dict.fromkeys((r["verb"], r["noun"])))
            verb, noun = _class(r["verb_class"], "verb_class"), _class(r["noun_class"], "noun_class")
            if not r["verb"] or not r["noun"]:
                raise BadRow("verb or noun is empty")
    except BadRow as e:
        raise BadRow(e.detail, key=key, path=path) from None
    return ClipSpec(row=row, key=key, path=path, start=start, end=end, labels=labels, video_id=video_id,
                    verb=verb, noun=noun)


def _class(text: str, field: str) -> int:
    if not text.isdigit():
        raise BadRow(f"{field} {text!r} is not a class number")
    return int(text)
