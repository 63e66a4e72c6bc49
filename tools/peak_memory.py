"""Peak resident memory of a process and all its descendants, summed, sampled from /proc (Linux).

getrusage's ru_maxrss gives one process's peak (for children: the largest one's), not the sum of a
job and the ffmpeg processes it runs at once; this samples the whole tree every `every` seconds.
"""

from __future__ import annotations

import os
import threading


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:  # gone already
        pass
    return kids


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and every descendant, now."""
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(p)
    return total


class PeakMemory:
    """`with PeakMemory(pid) as m: ...` then `m.peak` (bytes): the largest tree_rss seen."""

    def __init__(self, pid: int | None = None, every: float = 0.1):
        self.pid, self.every, self.peak = pid or os.getpid(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
