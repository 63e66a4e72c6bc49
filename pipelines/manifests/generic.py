"""The generic manifest: CSV with header `path,start,end,labels`, or the same fields as JSONL.

    path,start,end,labels
    videos/dog_park.mp4,0,10,dog;bark
    /data/cat.mkv,,,cat                    <- empty start/end: the whole file
    gs://bucket/v/x.mp4,12.5,,music        <- from 12.5 s to the end

JSONL (chosen by the .jsonl / .ndjson extension), one object per line; `start`/`end` may be numbers,
null or absent; `labels` a list of names or a `;`-separated string; other fields are ignored:

    {"path": "videos/dog_park.mp4", "start": 0, "end": 10, "labels": ["dog", "bark"]}

Relative paths resolve against `video_root`, else the manifest's folder; URLs are kept as given.
A clip's key is `<video_id>_<start_ms>` where video_id is the path as written without its extension
(a URL or absolute path: just the file name without extension); characters outside [A-Za-z0-9_-]
become '-' (`clips/a b.mp4` at 2.5 s -> `clips-a-b_2500`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterator

from shards.format.schema import make_key

from pipelines.manifests.spec import (BadRow, ClipSpec, Manifest, ManifestError, RowFailure, build_manifest,
                                      check_span, csv_records, default_root, is_url, parse_seconds, read_rows,
                                      read_text, resolve_path)

HEADER = ["path", "start", "end", "labels"]
JSONL_EXTENSIONS = (".jsonl", ".ndjson")


def read_generic(path: str, video_root: str | None = None, *,
                 vocabulary: list[str] | None = None) -> Manifest:
    """Read a generic CSV or JSONL manifest (by extension). With `vocabulary`, a label outside it
    makes its row an `unknown_label` failure; without, the vocabulary is every label, sorted."""
    text, sha = read_text(path)
    root = default_root(path, video_root)
    is_jsonl = path.lower().endswith(JSONL_EXTENSIONS)
    items = _jsonl_rows(text, root) if is_jsonl else _csv_rows(text, root, path)
    return build_manifest(path, "generic", sha, items, vocabulary)


def _csv_rows(text: str, root: str, path: str) -> list[ClipSpec | RowFailure]:
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    header = next(reader, [])
    if [h.strip().lower() for h in header] != HEADER:
        hint = " (a JSONL manifest needs the .jsonl extension)" if text.lstrip().startswith("{") else ""
        raise ManifestError(f"manifest {path!r}: the first line must be the header {','.join(HEADER)!r}, "
                            f"got {','.join(header)!r}{hint}")
    return read_rows(csv_records(reader, path), lambda row, fields: _csv_spec(row, fields, root),
                     path_of=lambda fields: fields[0].strip())


def _csv_spec(row: int, fields: list[str], root: str) -> ClipSpec:
    """One clip from a CSV record; BadRow when it does not have the header's fields."""
    if len(fields) != len(HEADER):
        raise BadRow(f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(fields)}",
                     path=fields[0].strip())
    raw_path, start, end, labels = (f.strip() for f in fields)
    return _spec(row, raw_path, start, end, labels.split(";"), root)


def _jsonl_rows(text: str, root: str) -> list[ClipSpec | RowFailure]:
    return read_rows(_jsonl_records(text), lambda row, obj: _jsonl_spec(row, obj, root), path_of=_jsonl_path)


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, the line's JSON value) per non-blank line; a line that is not JSON gives its
    JSONDecodeError, which _jsonl_spec reports as the row's failure."""
    for row, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                obj = e
            yield row, obj


def _jsonl_spec(row: int, obj: Any, root: str) -> ClipSpec:
    """One clip from a JSONL line's value; BadRow when it is not an object with path and labels."""
    if isinstance(obj, json.JSONDecodeError):
        raise BadRow(f"not valid JSON: {obj.msg} at column {obj.colno}")
    if not isinstance(obj, dict):
        raise BadRow(f"expected a JSON object, got {type(obj).__name__}")
    raw_path = obj.get("path")
    if not isinstance(raw_path, str):
        raise BadRow("field 'path' is missing or not a string")
    if "labels" not in obj:
        raise BadRow("field 'labels' is missing (use [] for a clip without labels)")
    labels = obj["labels"]
    if isinstance(labels, str):
        labels = labels.split(";")
    elif not isinstance(labels, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                  for x in labels):
        raise BadRow(f"field 'labels' must be a list of names or an 'a;b' string, got {labels!r}")
    return _spec(row, raw_path.strip(), obj.get("start"), obj.get("end"), [str(x) for x in labels], root)


def _jsonl_path(obj: Any) -> str:
    """A failed JSONL row's path: its 'path' field when that is a string, else ''."""
    raw_path = obj.get("path") if isinstance(obj, dict) else None
    return raw_path if isinstance(raw_path, str) else ""


def _spec(row: int, raw_path: str, start: object, end: object, labels: list[str], root: str) -> ClipSpec:
    """One clip from a row's fields; BadRow when a field is wrong."""
    if not raw_path:
        raise BadRow("path is empty")
    start_s = parse_seconds(start, "start", allow_empty=True) or 0.0
    end_s = parse_seconds(end, "end", allow_empty=True)
    resolved = resolve_path(raw_path, root)
    video_id = video_id_of(raw_path)
    key = make_key(video_id, start_s)
    try:
        check_span(start_s, end_s)
    except BadRow as e:
        raise BadRow(e.detail, key=key, path=resolved) from None
    names = tuple(dict.fromkeys(n.strip() for n in labels if n.strip()))  # drop blanks and repeats
    return ClipSpec(row=row, key=key, path=resolved, start=start_s, end=end_s, labels=names,
                    video_id=video_id)


def video_id_of(raw_path: str) -> str:
    """The id a generic row's key is built from: the path as written, without extension (just the
    file name for URLs and absolute paths)."""
    if is_url(raw_path) or os.path.isabs(raw_path):
        raw_path = raw_path.rstrip("/").rsplit("/", 1)[-1]
    while raw_path.startswith("./"):
        raw_path = raw_path[2:]
    return os.path.splitext(raw_path)[0]
