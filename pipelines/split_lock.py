"""One writer per split: `OUT/SPLIT.lock`, taken before a job stages anything and dropped when it ends.

Two jobs writing one split would remove each other's files and publish a mix; the second one fails at
once instead, naming the first (host, pid, start time) and how to clear a lock it left. Exactly one
job holds the lock at any instant, also when several race to take over a stale one:

- On a local disk the lock is a file held with flock(2) for the job's lifetime. The kernel drops a
  flock when its process dies, so a lock whose job was killed is free by itself, and taking it over
  is the same atomic flock as taking a fresh one: no unlink-then-create window for a second job.
- In a gs:// bucket the lock is an object, created with ifGenerationMatch=0. A stale one (its
  holder ran on this host and its process is gone) is taken over by overwriting it with
  ifGenerationMatch=<the generation read>: GCS's compare-and-swap, which one racer wins.

Before it publishes, the holder checks the lock is still its own (`SplitLock.check`), so a job whose
lock was taken from it (removed by hand) never replaces the split.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import uuid
from typing import Iterator

from pipelines.config import IngestError
from shards.format import storage


def lock_path(output: str, split: str) -> str:
    return storage.join(output, f"{split}.lock")


def _holder(token: str) -> bytes:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started,
                       "token": token}).encode("utf-8")


def _parse(data: bytes) -> dict | None:
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


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


def _busy(output: str, split: str, path: str, holder: dict | None) -> IngestError:
    holder = holder or {}
    return IngestError(
        f"{output}: split {split!r} is being written by another job (host {holder.get('host')}, "
        f"pid {holder.get('pid')}, started {holder.get('started')}); wait for it to finish, or, "
        f"if that job is gone, remove {path}")


def _taking_over(path: str, holder: dict | None) -> None:
    print(f"ingest: taking over the stale lock {path} (its job, pid {holder and holder.get('pid')}, "
          f"is gone)", file=sys.stderr)


def _no_space(path: str, e: OSError) -> IngestError:
    import shutil

    free = shutil.disk_usage(os.path.dirname(path) or ".").free
    return IngestError(f"{path}: cannot write the split's lock ({e.strerror}; {free / 1e6:.1f} MB free); "
                       f"free some space and run the job again")


class SplitLock:
    """The lock of one split, held by this process until `release`."""

    def __init__(self, output: str, split: str):
        self.output, self.split = output, split
        self.path = lock_path(output, split)
        self.token = uuid.uuid4().hex
        self._fd: int | None = None  # a local lock's open, flock-ed file
        self._generation = 0  # a bucket lock's object generation

    # -------------------------------------------------------------------------------- local disk
    def _take_local(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse(os.pread(fd, 4096, 0))
                os.close(fd)
                raise _busy(self.output, self.split, self.path, holder) from None
            # Its holder may have removed the file between our open and our flock (it unlinks, then
            # unlocks): then we hold a lock on a file nobody else can see, so open the path again.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        else:
            raise IngestError(f"{self.path}: could not take the split's lock; remove it if no job is running")
        previous = os.pread(fd, 4096, 0)
        if previous.strip():
            _taking_over(self.path, _parse(previous))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder(self.token), 0)
        except OSError as e:
            os.unlink(self.path)
            os.close(fd)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(self.path, e) from None
            raise
        self._fd = fd

    def _held_local(self) -> bool:
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False
        return same and (_parse(os.pread(self._fd, 4096, 0)) or {}).get("token") == self.token

    # ------------------------------------------------------------------------------ object store
    def _take_object(self) -> None:
        text = _holder(self.token)
        for _ in range(10):
            if storage.create_exclusive(self.path, text):
                break
            found = storage.read_generation(self.path)
            if found is None:
                continue  # released meanwhile: try to create it again
            holder = _parse(found[0])
            if holder is not None and _alive(holder):
                raise _busy(self.output, self.split, self.path, holder)
            _taking_over(self.path, holder)
            if storage.write_if_generation(self.path, text, found[1]):
                break
            # another job took it over first: the next round sees it alive
        else:
            raise IngestError(f"{self.path}: could not take the split's lock; remove it if no job is running")
        found = storage.read_generation(self.path)
        if found is None or (_parse(found[0]) or {}).get("token") != self.token:
            raise IngestError(f"{self.path}: the split's lock was taken by another job at once; run again")
        self._generation = found[1]

    def _held_object(self) -> bool:
        found = storage.read_generation(self.path)
        return found is not None and found[1] == self._generation

    # --------------------------------------------------------------------------------- the lock
    def take(self) -> "SplitLock":
        if storage.is_gcs(self.path):
            self._take_object()
        elif storage.is_url(self.path):
            if not storage.create_exclusive(self.path, _holder(self.token)):
                raise _busy(self.output, self.split, self.path,
                            _parse(storage.read_bytes(self.path)))  # (no compare-and-swap: no takeover)
        else:
            self._take_local()
        return self

    def held(self) -> bool:
        """Whether the lock is still this job's (nobody removed or replaced it)."""
        if self._fd is not None:
            return self._held_local()
        if storage.is_gcs(self.path):
            return self._held_object()
        return (_parse(storage.read_bytes(self.path)) or {}).get("token") == self.token

    def check(self) -> None:
        """IngestError unless the lock is still this job's: then it must not publish."""
        if not self.held():
            raise IngestError(f"{self.path}: this job's lock on split {self.split!r} was removed or taken "
                              f"by another job while it ran, so it does not publish; the split is as that "
                              f"job leaves it. Run one job per split at a time")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self._fd is not None:
                if self._held_local():
                    os.unlink(self.path)  # unlink while holding the flock: a waiter then sees a new file
                os.close(self._fd)
                self._fd = None
            elif self.held():
                storage.delete([self.path])


@contextlib.contextmanager
def split_lock(output: str, split: str) -> Iterator[SplitLock]:
    """Hold the lock of `split` under `output` for the `with` block; IngestError if another job holds it."""
    lock = SplitLock(output, split).take()
    try:
        yield lock
    finally:
        lock.release()
