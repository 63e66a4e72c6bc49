"""A progress line (clips done / total, rate, ETA) for jobs that run in this process.

DecodeClip calls `tick()` for every clip it finishes. On the in-process runner that updates the
counter that the launcher's Reporter thread prints; on a remote runner there is no reporter in the
worker's process and `tick()` only counts. It never affects what the job writes.
"""

from __future__ import annotations

import sys
import threading
import time

_lock = threading.Lock()
_done = 0
_failed = 0
_media_seconds = 0.0


def tick(media_seconds: float, failed: bool = False) -> None:
    """Record one finished clip."""
    global _done, _failed, _media_seconds
    with _lock:
        _done += 1
        _failed += int(failed)
        _media_seconds += media_seconds


def snapshot() -> tuple[int, int, float]:
    with _lock:
        return _done, _failed, _media_seconds


class Reporter:
    """Prints a progress line every `every` seconds while the `with` block runs."""

    def __init__(self, total: int, enabled: bool = True, every: float = 2.0, stream=None):
        self.total, self.enabled, self.every = total, enabled, every
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = (0, 0, 0.0)
        self._start = 0.0

    def __enter__(self) -> "Reporter":
        self._base, self._start = snapshot(), time.time()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self.stream.write(self.line() + "\n")

    def line(self) -> str:
        done, failed, media = (a - b for a, b in zip(snapshot(), self._base))
        elapsed = max(time.time() - self._start, 1e-9)
        rate = done / elapsed
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else "-"
        return (f"clips {done}/{self.total} ({failed} failed), {rate:.2f} clips/s, "
                f"{media / elapsed:.1f} media-s/s, ETA {eta}")

    def _loop(self) -> None:
        tty = self.stream.isatty()
        while not self._stop.wait(self.every if tty else max(self.every, 10.0)):
            self.stream.write(("\r" + self.line()) if tty else self.line() + "\n")
            self.stream.flush()
        if tty:
            self.stream.write("\r")
