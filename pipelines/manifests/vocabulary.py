"""The class vocabulary: which names a dataset's labels may use, and the index of each."""

from __future__ import annotations

import csv
import io
from typing import Mapping, Sequence

from pipelines.manifests.spec import ClipSpec, ManifestError, read_text

CLASS_INDICES_HEADER = ["index", "mid", "display_name"]  # AudioSet's class_labels_indices.csv


def read_classes(path: str) -> list[str]:
    """The class names in `path`, in index order: one name per line, or a CSV with the header
    `index,mid,display_name` (AudioSet's class_labels_indices.csv)."""
    text, _ = read_text(path, "classes file")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.replace(" ", "").lower().startswith(",".join(CLASS_INDICES_HEADER)):
        return [name for _, name in read_class_indices(path)]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ManifestError(f"classes file {path!r} is empty; write one class name per line")
    return check_vocabulary(names, path)


def read_class_indices(path: str) -> list[tuple[str, str]]:
    """[(mid, display_name)] from an AudioSet class_labels_indices.csv, ordered by index 0..N-1."""
    text, _ = read_text(path, "class indices file")
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True) if r]
    expected = ",".join(CLASS_INDICES_HEADER)
    if not rows or [f.strip().lower() for f in rows[0]] != CLASS_INDICES_HEADER:
        got = ",".join(rows[0]) if rows else "(empty file)"
        raise ManifestError(f"class indices file {path!r}: header must be {expected!r}, got {got!r}")
    by_index: dict[int, tuple[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            index, mid, name = int(row[0]), row[1].strip(), row[2].strip()
        except (ValueError, IndexError):
            raise ManifestError(f"class indices file {path!r}, row {line}: expected "
                                f"{expected} (e.g. 0,/m/09x0r,Speech), got {','.join(row)!r}") from None
        if index in by_index:
            raise ManifestError(f"class indices file {path!r}: index {index} is listed twice")
        by_index[index] = (mid, name)
    if sorted(by_index) != list(range(len(by_index))):
        raise ManifestError(f"class indices file {path!r}: indices must run 0..{len(by_index) - 1} "
                            f"without gaps")
    pairs = [by_index[i] for i in range(len(by_index))]
    check_vocabulary([mid for mid, _ in pairs], path)
    check_vocabulary([name for _, name in pairs], path)
    return pairs


def check_vocabulary(names: list[str], source: str) -> list[str]:
    """`names` if none is empty or repeated, else ManifestError naming the culprit."""
    seen: set[str] = set()
    for name in names:
        if not name:
            raise ManifestError(f"classes file {source!r}: a class name is empty")
        if name in seen:
            raise ManifestError(f"classes file {source!r}: {name!r} is listed twice")
        seen.add(name)
    return names


def label_indices(spec: ClipSpec, vocabulary: Sequence[str] | Mapping[str, int]) -> list[int]:
    """The class index of each of `spec.labels` (same order, same length): a Sample's `labels`.

    Pass a {name: index} dict when calling it per clip on a large vocabulary."""
    index = vocabulary if isinstance(vocabulary, Mapping) else {n: i for i, n in enumerate(vocabulary)}
    try:
        return [index[name] for name in spec.labels]
    except KeyError as e:
        raise ManifestError(f"clip {spec.key}: label {e.args[0]!r} is not in the vocabulary") from None
