"""Where the training input reads from: a shard spec resolved to an ordered list of shard paths.

A spec is one of
- a brace pattern: `data/train-{00000..00063}-of-00064.tar` (webdataset's notation),
- a dataset folder (with `split`), or the path of a `SPLIT.index.json`: the shards the index lists,
- a glob: `data/train-*.tfrecord`,
- a single shard path, or a list of any of the above.
Paths may be local or URLs, through shards.format.storage (fsspec: `gs://` with gcsfs, `s3://`, `http://`,
`memory://`). The shards are sorted by name, so the
`.tar` and `.tfrecord` encodings of a dataset resolve to the same order. When an index lies beside the
shards (always for `mbt ingest` output), its sample counts, classes and mel statistics come along.
A spec that matches nothing, or matches only in part, is a ShardError naming the spec.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
from typing import Any, Iterator, Sequence

from shards.format import dataset_index, storage
from shards.format.errors import ShardError
from shards.format.lazy import LazySample
from shards.format.naming import EXTENSIONS, check_format, format_for_path, parse_shard_name
from shards.format.reader import read_shard_lazy
from shards.format.storage import is_url

_GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class ShardSource:
    """The resolved shard list of one spec: what every host and worker splits between themselves."""

    spec: str  # as given, for messages
    paths: tuple[str, ...]  # sorted by file name: the canonical order shard ids index into
    fmt: str  # "webdataset" or "tfrecord"
    counts: tuple[int | None, ...]  # samples per shard, from the index (None: unknown)
    index: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_samples(self) -> int | None:
        """Samples in all shards, when the index says."""
        return None if None in self.counts else sum(self.counts)  # type: ignore[arg-type]

    def fingerprint(self) -> list[Any]:
        """What a saved input state must agree on: the shard names (not the format or folder)."""
        return [len(self.paths), _stem(self.paths[0]), _stem(self.paths[-1])]


def resolve(spec: str | os.PathLike | Sequence[str | os.PathLike], *, split: str = "train",
            fmt: str | None = None) -> ShardSource:
    """Resolve a spec (see the module docstring) to a ShardSource; ShardError if it matches nothing."""
    label = _label(spec)
    parts = [os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [os.fspath(p) for p in spec]
    if not parts:
        raise ShardError("empty shard list: pass a brace pattern, a dataset folder or shard paths")
    if fmt is not None:
        check_format(fmt)
    paths: list[str] = []
    index = None
    for part in parts:
        if part.endswith(dataset_index.INDEX_SUFFIX) or _is_dir(part):
            if len(parts) > 1:
                raise ShardError(f"shard spec {label}: a dataset folder or index can't be mixed with paths")
            index = _load_index(part, split)
            if index.get("num_samples") == 0:
                raise ShardError(f"{index['index_path']}: split {index.get('split', split)!r} has no samples "
                                 f"(every manifest row failed: see {index.get('failures_file')}); fix the "
                                 f"inputs and run `mbt ingest` again")
            fmt = fmt or ("webdataset" if "webdataset" in index["shards"] else next(iter(index["shards"])))
            paths = dataset_index.shard_paths(index, fmt)
            if not paths:
                raise ShardError(f"shard spec {label}: {index['index_path']} lists no {fmt} shards")
        else:
            paths += _expand(part, label)
    if not paths:
        raise ShardError(f"shard spec {label} matches no shard: check the path, pattern or split")
    paths = sorted(dict.fromkeys(paths), key=lambda p: (posixpath.basename(p), p))
    fmt = _one_format(paths, fmt, label)
    if index is None:  # (an index's shards were checked, with their sizes, by shard_paths)
        _check_exist(paths, label)
        index = index_beside(paths)
    counts = _counts(paths, index, fmt)
    return ShardSource(spec=label, paths=tuple(paths), fmt=fmt, counts=counts, index=index)


def iter_shard(path: str, fmt: str) -> Iterator[LazySample]:
    """The samples of one shard, lazily decoded (shards.format.reader.read_shard_lazy, the one shard
    reader). A damaged sample that the container still frames (a tar sample missing a member, a
    TFRecord failing its data CRC) is yielded, and fails when read, rather than ending the shard: one
    bad sample costs one sample. A tar's frames are read only when asked for (by byte range from a
    store), so use each sample before taking the next."""
    return read_shard_lazy(path, fmt, strict=False, defer_frames=True)


# ------------------------------------------------------------------------------------------ helpers

def _label(spec: object) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return repr(os.fspath(spec))
    items = [os.fspath(p) for p in spec]  # type: ignore[union-attr]
    return repr(items) if len(items) <= 3 else f"[{items[0]!r}, ... {len(items)} paths]"


def _stem(path: str) -> str:
    name = posixpath.basename(path)
    for ext in EXTENSIONS.values():
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _is_dir(path: str) -> bool:
    if any(c in path for c in _GLOB_CHARS + "{"):
        return False
    if path.endswith(tuple(EXTENSIONS.values())):
        return False
    return storage.isdir(path)


def _load_index(part: str, split: str) -> dict[str, Any]:
    if part.endswith(dataset_index.INDEX_SUFFIX):
        folder, name = storage.split(part)
        if storage.isdir(part):
            raise ShardError(f"{part} is a folder, but a path ending in {dataset_index.INDEX_SUFFIX} is read as a "
                             f"split's index file: pass the dataset folder that holds SPLIT"
                             f"{dataset_index.INDEX_SUFFIX} (the --output of `mbt ingest`) or that index file")
        split = name[: -len(dataset_index.INDEX_SUFFIX)]
        part = folder or "."
    try:
        return dataset_index.load_index(part, split)
    except FileNotFoundError as e:
        raise ShardError(str(e)) from None
    except (IsADirectoryError, PermissionError) as e:
        raise ShardError(f"cannot read the index of split {split!r} in {part}: {e.strerror or e}; pass the "
                         f"dataset folder that holds SPLIT{dataset_index.INDEX_SUFFIX}") from None


def _expand(part: str, label: str) -> list[str]:
    if "{" in part:
        import braceexpand  # webdataset's own dependency: its brace notation, exactly

        try:
            return list(braceexpand.braceexpand(part))
        except Exception as e:
            raise ShardError(f"shard spec {label}: bad brace pattern {part!r} ({e})") from None
    if any(c in part for c in _GLOB_CHARS):
        return storage.glob(part)
    return [part]


def _one_format(paths: list[str], fmt: str | None, label: str) -> str:
    found = set()
    for p in paths:
        try:
            found.add(format_for_path(p))
        except ValueError:
            raise ShardError(f"shard spec {label}: {p!r} is neither *.tar nor *.tfrecord") from None
    if len(found) > 1:
        raise ShardError(f"shard spec {label} mixes .tar and .tfrecord shards: pick one encoding")
    got = found.pop()
    if fmt is not None and fmt != got:
        raise ShardError(f"shard spec {label} names {got} shards, but format={fmt!r} was asked for")
    return got


def _check_exist(paths: list[str], label: str) -> None:
    missing = [p for p in paths if not _exists(p)]
    if len(missing) == len(paths):
        raise ShardError(f"shard spec {label} matches no shard (no such file: {missing[0]}); "
                         f"check the path, pattern or split")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ShardError(f"shard spec {label}: {len(missing)} of {len(paths)} shards are missing: "
                         f"{', '.join(missing[:3])}{more}")


def _exists(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    return os.path.basename(path) in _listing(posixpath.dirname(path))


@functools.lru_cache(maxsize=64)
def _listing(folder: str) -> frozenset[str]:
    """File names in a URL folder: one listing per folder instead of one request per shard."""
    return frozenset(storage.listdir(folder))


def index_beside(paths: Sequence[str]) -> dict[str, Any] | None:
    """SPLIT.index.json of the folder holding the shards, when they are one split of one folder."""
    try:
        splits = {parse_shard_name(p)[0] for p in paths}
    except ValueError:
        return None
    folders = {posixpath.dirname(p) if is_url(p) else os.path.dirname(p) for p in paths}
    if len(splits) != 1 or len(folders) != 1:
        return None
    folder, split = folders.pop() or ".", splits.pop()
    name = split + dataset_index.INDEX_SUFFIX
    if not (os.path.isfile(os.path.join(folder, name)) if not is_url(folder) else name in _listing(folder)):
        return None
    try:
        return dataset_index.load_index(folder, split)
    except (FileNotFoundError, ShardError):
        return None


def _counts(paths: list[str], index: dict[str, Any] | None, fmt: str) -> tuple[int | None, ...]:
    if index is None:
        return tuple(None for _ in paths)
    by_name = {posixpath.basename(s["path"]): s.get("samples") for s in index.get("shards", {}).get(fmt, [])}
    return tuple(by_name.get(posixpath.basename(p)) for p in paths)
