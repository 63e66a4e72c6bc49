"""What a manifest reader returns, and the rules every corpus reader shares.

A reader turns one manifest (a CSV, a JSONL file, a folder) into a `Manifest`: one `ClipSpec` per
row that names a clip, one `RowFailure` per row that does not. Nothing is dropped: for every reader,
`manifest.rows == len(manifest.specs) + len(manifest.failures)`. Problems that make the whole manifest
unusable (missing file, wrong header, duplicate keys, a bad --pattern) raise `ManifestError` before
any work starts.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import math
import os
import re
import stat
import string
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from shards.format.errors import UserError
from shards.format.storage import is_url

# Why a row did not become a clip (the `reason` of a RowFailure, and a failures.jsonl counter name).
MALFORMED_ROW = "malformed_row"  # a field is missing, not a number, out of range, or won't fit --pattern
UNKNOWN_LABEL = "unknown_label"  # a label (or AudioSet mid) that is not in the class vocabulary
PROBE_FAILED = "probe_failed"  # folder + clip_seconds: the video's duration could not be read
FAILURE_REASONS = (MALFORMED_ROW, UNKNOWN_LABEL, PROBE_FAILED)

R = TypeVar("R")  # a reader's raw record: a CSV row's fields, a JSONL line's value


class ManifestError(UserError, ValueError):
    """The manifest cannot be used at all; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip to decode: [start, end) seconds of the video at `path`, with its labels."""

    row: int  # 1-based line number of the row in the manifest (folders: 1-based clip number)
    key: str  # `<video_id>_<start_ms>` (shards.format.schema.make_key); unique in the manifest
    path: str  # absolute local path, or a URL (gs://, s3://, http://) exactly as given
    start: float  # seconds into the file at `path`
    end: float | None = None  # seconds into the file; None = to the end of the file
    labels: tuple[str, ...] = ()  # class names, in manifest order (EPIC: (verb, noun))
    video_id: str = ""  # the source video's id (YouTube id, EPIC video_id, file stem)
    verb: int | None = None  # EPIC-Kitchens verb_class
    noun: int | None = None  # EPIC-Kitchens noun_class

    @property
    def duration(self) -> float | None:
        """Seconds of clip asked for, or None when it runs to the end of the file."""
        return None if self.end is None else self.end - self.start


@dataclasses.dataclass(frozen=True)
class RowFailure:
    """A manifest row that did not become a clip; becomes one line of failures.jsonl."""

    row: int  # 1-based line number in the manifest
    key: str  # the row's key when it could be worked out, else ''
    path: str  # the resolved video path when known, else the raw text of the row's path field
    reason: str  # one of FAILURE_REASONS
    detail: str  # one line for people: which field, what value, what was expected


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything a reader got out of one manifest."""

    source: str  # the manifest's path (a folder for folder layouts)
    kind: str  # generic | audioset | vggsound | epic | folder
    sha256: str  # hex digest of the manifest file's bytes (folders: of the sorted file listing)
    rows: int  # rows read (== len(specs) + len(failures))
    specs: list[ClipSpec]
    failures: list[RowFailure]
    vocabulary: list[str]  # class names; a label's index is its position here
    skipped: int = 0  # rows left out on purpose (VGGSound's split filter), not part of `rows`


class BadRow(Exception):
    """Raised inside a reader for one row; the reader turns it into a RowFailure."""

    def __init__(self, detail: str, reason: str = MALFORMED_ROW, key: str = "", path: str = ""):
        super().__init__(detail)
        self.detail, self.reason, self.key, self.path = detail, reason, key, path


def failure(row: int, err: Exception, key: str = "", path: str = "") -> RowFailure:
    """The RowFailure for an exception raised while reading one row."""
    if isinstance(err, BadRow):
        return RowFailure(row, err.key or key, err.path or path, err.reason, err.detail)
    detail = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    return RowFailure(row, key, path, MALFORMED_ROW, detail[:500])


# Safety net around each row's parse: anything a malformed row can make the parser raise. A
# ManifestError (a subclass of ValueError) is re-raised before it: it stops the whole read.
ROW_ERRORS = (BadRow, ValueError, TypeError, KeyError, IndexError)


def read_rows(records: Iterable[tuple[int, R]], spec_of: Callable[[int, R], ClipSpec],
              path_of: Callable[[R], str] = lambda record: "") -> list[ClipSpec | RowFailure]:
    """One ClipSpec or one RowFailure per (row, record): the row loop of every corpus reader.

    `spec_of(row, record)` makes the clip or raises; a row error (ROW_ERRORS) becomes that row's
    RowFailure, whose path is the one a BadRow names, else `path_of(record)`. A ManifestError stops
    the read."""
    items: list[ClipSpec | RowFailure] = []
    for row, record in records:
        try:
            items.append(spec_of(row, record))
        except ManifestError:
            raise
        except ROW_ERRORS as e:
            items.append(failure(row, e, path=path_of(record)))
    return items


def csv_records(reader: Iterator[list[str]], source: str, *,
                comments: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) for each record of a `csv.reader` that is not blank
    (with `comments`, nor a line starting with '#'); the rows read_rows numbers its failures by.
    ManifestError naming `source` (the file) where the csv module itself gives up."""
    row = reader.line_num + 1
    try:
        for fields in reader:
            blank = not (fields and any(f.strip() for f in fields))
            if not blank and not (comments and fields[0].lstrip().startswith("#")):
                yield row, fields
            row = reader.line_num + 1
    except csv.Error as e:  # what stops the csv module itself: a quote left open runs to its size limit
        raise ManifestError(f"{source}: the record from line {row} on: {e} (a quote left open?)") from None


# ---------------------------------------------------------------------------------------------------
# Reading files.
# ---------------------------------------------------------------------------------------------------
MAX_TEXT_BYTES = 1 << 30  # a manifest or class file larger is refused (AudioSet's 2M rows: ~100 MB)
# no manifest row is 64 KiB long: such a "line" is not text (a binary file, /dev/zero); and under
# this, no field of a row reaches the csv module's field limit (131072 characters)
MAX_LINE_BYTES = 64 << 10
_CHUNK = MAX_LINE_BYTES  # no longer, so that only a line across chunks can be too long


def read_text(path: str, what: str = "manifest") -> tuple[str, str]:
    """(text, sha256 of the bytes) of a local UTF-8 file; ManifestError when it can't be read, or is
    not a text file of bounded size and line length (a device, a binary file)."""
    try:
        with open(path, "rb") as f:
            data = read_bounded(f, path, what)
    except FileNotFoundError:
        raise ManifestError(f"{what} {path!r} not found") from None
    except IsADirectoryError:
        raise ManifestError(f"{what} {path!r} is a folder; pass a file (or --manifest-kind folder)") from None
    except OSError as e:
        raise ManifestError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as e:
        raise ManifestError(f"{what} {path!r} is not UTF-8 text (bad byte at offset {e.start})") from None
    return text, hashlib.sha256(data).hexdigest()


def read_bounded(f: BinaryIO, path: str, what: str = "manifest", limit: int = MAX_TEXT_BYTES, *,
                 head: bool = False) -> bytes:
    """The bytes of the open file `f`, read in chunks that are checked as they come, so that a
    device or a binary file fails at once with ManifestError instead of filling memory: a regular
    file or a pipe (`--manifest <(...)`) only, no NUL byte, lines under MAX_LINE_BYTES, at most
    `limit` bytes in all (with `head`, just the first `limit` bytes)."""
    mode = os.fstat(f.fileno()).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise ManifestError(f"{what} {path!r} is a device or socket, not a file; pass a CSV or JSONL file")
    chunks: list[bytes] = []
    size = line = 0  # bytes read; bytes since the last newline
    while chunk := f.read(_CHUNK):
        if (nul := chunk.find(b"\0")) >= 0:
            raise ManifestError(f"{what} {path!r} is not a text file (a NUL byte at offset {size + nul}); "
                                f"pass a CSV or JSONL file")
        size += len(chunk)
        # bytes since the last newline; a line within one chunk is no longer than the chunk
        first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
        longest = line + (len(chunk) if first < 0 else first)
        line = longest if first < 0 else len(chunk) - last - 1
        if longest > MAX_LINE_BYTES:
            raise ManifestError(f"{what} {path!r} has a line over {MAX_LINE_BYTES >> 10} KiB long, so it is "
                                f"not a manifest; pass a CSV or JSONL file with one row per line")
        if size >= limit and head:
            return b"".join(chunks + [chunk])[:limit]
        if size > limit:
            raise ManifestError(f"{what} {path!r} is over {limit >> 20} MiB; split it into smaller "
                                f"manifests and ingest each (or each split) on its own")
        chunks.append(chunk)
    return b"".join(chunks)


_SECONDS_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # 12, 12.5, .5, 1e-05
_NON_FINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)  # numbers, but no times


def parse_seconds(text: object, field: str, *, allow_empty: bool = False) -> float | None:
    """A non-negative, finite number of seconds from a manifest field; BadRow when it isn't one."""
    if text is None or (isinstance(text, str) and not text.strip()):
        if allow_empty:
            return None
        raise BadRow(f"{field} is empty")
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise BadRow(f"{field} {text!r} is not a number of seconds")
    # strictly a decimal number: Python's float() also takes '1_0' (10), '١' and padding of any kind
    if isinstance(text, str) and not any(r.fullmatch(text.strip()) for r in (_SECONDS_RE, _NON_FINITE_RE)):
        raise BadRow(f"{field} {text!r} is not a number of seconds (write it like 12.5)")
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise BadRow(f"{field} {text!r} must be a finite number of seconds >= 0")
    return value


def check_span(start: float, end: float | None) -> None:
    """BadRow unless end is after start."""
    if end is not None and end <= start:
        raise BadRow(f"end {end:g} s is not after start {start:g} s")


# ---------------------------------------------------------------------------------------------------
# Paths and filename patterns.
# ---------------------------------------------------------------------------------------------------
def resolve_path(path: str, base: str) -> str:
    """`path` made absolute against folder `base` (a local folder or a URL); URLs stay as given.

    A name like '-x.mp4' becomes '/base/-x.mp4', which can never be taken for a command-line option."""
    if is_url(path):
        return path
    if os.path.isabs(path):
        return os.path.normpath(path)
    if is_url(base):
        return base.rstrip("/") + "/" + (path[2:] if path.startswith("./") else path)
    return os.path.normpath(os.path.join(os.path.abspath(base), path))


def default_root(manifest_path: str, video_root: str | None) -> str:
    """Where relative video paths resolve: --video-root, else the manifest's own folder."""
    return video_root if video_root else os.path.dirname(os.path.abspath(manifest_path))


def check_pattern(pattern: str, placeholders: Sequence[str], kind: str) -> str:
    """Return `pattern` if it uses only `placeholders`, else ManifestError listing the allowed ones."""
    allowed = ", ".join("{" + p + "}" for p in placeholders)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as e:
        raise ManifestError(f"--pattern {pattern!r} is not a valid pattern ({e}); "
                            f"use placeholders like {allowed}") from None
    for name in names:
        if name not in placeholders:
            raise ManifestError(f"--pattern {pattern!r}: unknown placeholder {{{name}}} for {kind} "
                                f"manifests; use {allowed}")
    return pattern


def fill_pattern(pattern: str, fields: Mapping[str, object]) -> str:
    """The file name for one row; BadRow when a value does not fit a format spec (`{start:06d}`)."""
    try:
        return pattern.format(**fields)
    except (ValueError, TypeError) as e:
        raise BadRow(f"row values do not fit --pattern {pattern!r}: {e}") from None


def seconds_field(seconds: float) -> int | float:
    """A time as the {start}/{end} placeholders see it: an int when whole (so `{start:06d}` works)."""
    return int(seconds) if float(seconds).is_integer() else seconds


# ---------------------------------------------------------------------------------------------------
# The final checks every reader shares.
# ---------------------------------------------------------------------------------------------------
def unknown_label_failure(spec: ClipSpec, unknown: list[str], vocabulary: Sequence[str]) -> RowFailure:
    """The RowFailure for a clip whose labels are not all in the vocabulary, with a suggestion."""
    name = unknown[0]
    near = difflib.get_close_matches(name, vocabulary, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    return RowFailure(spec.row, spec.key, spec.path, UNKNOWN_LABEL,
                      f"label {name!r}{more} not in the class vocabulary ({len(vocabulary)} classes){hint}")


def build_manifest(source: str, kind: str, sha256: str, items: Iterable[ClipSpec | RowFailure],
                   vocabulary: list[str] | None, *, skipped: int = 0) -> Manifest:
    """Check labels against the vocabulary (built sorted from the labels when None), reject
    duplicate keys, and assemble the Manifest."""
    items = list(items)
    check_unique_keys(source, items)
    if vocabulary is None:
        vocabulary = sorted({name for it in items if isinstance(it, ClipSpec) for name in it.labels})
    known = set(vocabulary)
    specs: list[ClipSpec] = []
    failures: list[RowFailure] = []
    for it in items:
        if isinstance(it, ClipSpec):
            unknown = [name for name in it.labels if name not in known]
            if unknown:
                it = unknown_label_failure(it, unknown, vocabulary)
        (specs if isinstance(it, ClipSpec) else failures).append(it)
    return Manifest(source=source, kind=kind, sha256=sha256, rows=len(items), specs=specs,
                    failures=failures, vocabulary=list(vocabulary), skipped=skipped)


def check_unique_keys(source: str, items: Sequence[ClipSpec | RowFailure]) -> None:
    """ManifestError naming the key and both rows when two rows would make the same sample."""
    first: dict[str, ClipSpec | RowFailure] = {}
    for it in items:
        if not it.key:
            continue
        if it.key in first:
            other = first[it.key]
            if other.path != it.path and os.path.basename(other.path) == os.path.basename(it.path):
                raise ManifestError(
                    f"{source}: rows {other.row} ({other.path}) and {it.row} ({it.path}) are different videos "
                    f"with the same file name and start, so both get the sample key {it.key!r} (a key holds "
                    f"a path's folders only when the path is relative); write their paths relative to a "
                    f"common folder and pass it as --video-root, e.g. "
                    f"{_relative_hint(other.path, it.path)}")
            raise ManifestError(
                f"{source}: rows {other.row} ({other.path}) and {it.row} ({it.path}) both give the sample "
                f"key {it.key!r} (same video id and start time); remove one, or change its start time")
        first[it.key] = it


def _relative_hint(a: str, b: str) -> str:
    """'--video-root /data with d1/clip.mp4 and d2/clip.mp4' for /data/d1/clip.mp4 and /data/d2/clip.mp4."""
    try:
        root = os.path.commonpath([a, b])
    except ValueError:  # a URL and a local path
        return "--video-root FOLDER with each path written below it"
    return f"--video-root {root} with {os.path.relpath(a, root)} and {os.path.relpath(b, root)}"
