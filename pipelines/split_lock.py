"""One writer per split: `OUT/SPLIT.lock`, taken before a job stages anything and dropped when it ends.

Two jobs writing one split would remove each other's staged samples and publish a mix; the second one
fails at once instead, naming the first (host, pid, start time) and how to clear a lock it left. A
lock whose job is gone (same host, no such process: it was killed) is stale and taken over with a
notice. The lock is created atomically, on a local disk and in a gs:// bucket alike
(shards.format.storage.create_exclusive: O_EXCL, or GCS's ifGenerationMatch=0), so of two jobs started
at once exactly one gets it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from typing import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.config import IngestError
from shards.format import storage


def lock_path(output: str, split: str) -> str:
    return FileSystems.join(output, f"{split}.lock")


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _read(path: str) -> dict | None:
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return json.loads(f.read().decode("utf-8"))
    except Exception:  # noqa: BLE001 - gone meanwhile, or unreadable: treated as no holder
        return None


def _alive(holder: dict) -> bool:
    """False only when the holder ran on this host and its process is gone."""
    if holder.get("host") != socket.gethostname():
        return True  # can't tell from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


@contextlib.contextmanager
def split_lock(output: str, split: str) -> Iterator[str]:
    """Hold the lock of `split` under `output` for the `with` block; IngestError if another job holds it."""
    path = lock_path(output, split)
    text = json.dumps(_holder()).encode("utf-8")
    for _ in range(2):
        if storage.create_exclusive(path, text):
            break
        holder = _read(path)
        if holder is not None and _alive(holder):
            raise IngestError(
                f"{output}: split {split!r} is being written by another job (host {holder.get('host')}, "
                f"pid {holder.get('pid')}, started {holder.get('started')}); wait for it to finish, or, "
                f"if that job is gone, remove {path}")
        print(f"ingest: taking over the stale lock {path} (its job, pid {holder and holder.get('pid')}, "
              f"is gone)", file=sys.stderr)
        with contextlib.suppress(Exception):  # another job may have cleared it first
            FileSystems.delete([path])
    else:
        raise IngestError(f"{path}: could not take the split's lock; remove it if no job is running")
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            FileSystems.delete([path])
