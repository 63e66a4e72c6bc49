"""A dataset on disk: SPLIT.index.json (written last by the ingestion job) and the files it lists.

Paths go through shards.format.storage (local files; URLs through fsspec, gs:// via gcsfs).
"""

from __future__ import annotations

import json
import os
from typing import IO, Any, Callable

from shards.format import storage
from shards.format.errors import ShardError
from shards.format.storage import is_url, join, open_path

INDEX_SUFFIX = ".index.json"


def read_exact(f: IO, n: int) -> bytes:
    """Up to `n` bytes from `f`, looping over short reads (pipes, sockets, object stores); fewer only at EOF."""
    return read_all(f.read, n)


def read_all(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to `n` bytes from `read(k)` calls for the k bytes still missing; fewer only at EOF (b"")."""
    chunks, left = [], n
    while left > 0:
        chunk = read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def list_splits(folder: str) -> list[str]:
    """The splits that have an index in `folder`, sorted."""
    if not is_url(folder) and not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such dataset folder; pass the --output folder of `mbt ingest`")
    return sorted(n[: -len(INDEX_SUFFIX)] for n in storage.listdir(folder) if n.endswith(INDEX_SUFFIX))


def load_index(folder: str, split: str) -> dict[str, Any]:
    """SPLIT.index.json of `folder` as a dict, with `index_path` and `folder` added (not stored)."""
    path = join(folder, split + INDEX_SUFFIX)
    try:
        with open_path(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        have = ", ".join(list_splits(folder)) if os.path.isdir(folder) or is_url(folder) else ""
        raise FileNotFoundError(
            f"{path}: no index for split {split!r}" + (f" (splits here: {have})" if have else "")
            + "; run `mbt ingest` (the index is written last, so a missing index means an unfinished job)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: not a valid index ({e}); re-run `mbt ingest`") from None
    index["index_path"], index["folder"] = path, folder
    return index


def shard_paths(index: dict[str, Any], fmt: str) -> list[str]:
    """Full paths of the shards of format `fmt` listed in a loaded index; ShardError when one is
    missing or not of the size the index lists (the split is not whole: an ingest was interrupted or
    another wrote over it), so no reader ever takes a mixed dataset for a whole one."""
    if fmt not in index.get("shards", {}):
        raise ShardError(f"{index['index_path']}: no {fmt} shards (formats: {', '.join(index['shards'])}); "
                         f"ingest with --format {fmt}")
    entries = index["shards"][fmt]
    paths = [join(index["folder"], s["path"]) for s in entries]
    for path, entry in zip(paths, entries):
        if "bytes" not in entry:
            continue
        size = storage.size(path)
        if size != entry["bytes"]:
            found = "is missing" if size is None else f"has {size} bytes"
            raise ShardError(f"{path} {found}, but {index['index_path']} lists it with {entry['bytes']} "
                             f"bytes: the split is not whole (an ingest was interrupted or another job "
                             f"wrote over it); run the `mbt ingest` that made it again")
    return paths


def read_failures(index: dict[str, Any]) -> list[dict[str, Any]]:
    """The failure records beside an index (one per manifest row that did not become a sample)."""
    path = join(index["folder"], index["failures_file"])
    with open_path(path, "rb") as f:
        return [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
