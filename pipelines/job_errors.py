"""How the ingestion job fails: in one line where the cause is the user's to fix (a full disk), with
Beam's own report of a failing DoFn held back until it is known which it is (pipelines.ingest.run:
the pipeline runs inside `beam_errors_held()`; a failure is `disk_full(...)`'s one line if it is one,
else Beam's report is replayed and the error raised as it came).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys

from pipelines.config import IngestError
from shards.format.storage import is_url


class beam_errors_held(contextlib.AbstractContextManager):
    """Hold back the traceback of a failing DoFn that Beam reports while the pipeline runs (it logs it,
    and its SDK worker also prints it to stderr) until the job knows what failed: a failure the job
    turns into one line (a full disk) drops it, any other is replayed as Beam gave it."""

    def __init__(self):
        self.records: list[logging.LogRecord] = []
        self.printed: list[str] = []
        self.logger = logging.getLogger("apache_beam")

    def __enter__(self):
        self.handler = _ListHandler(self.records)
        self.propagate, self.stderr = self.logger.propagate, sys.stderr
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        sys.stderr = _TracebackHolder(sys.stderr, self.printed)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        sys.stderr = self.stderr

    def replay(self) -> None:
        for record in self.records:
            self.logger.handle(record)
        self.stderr.write("".join(self.printed))
        self.records.clear()
        self.printed.clear()


class _ListHandler(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _TracebackHolder:
    """sys.stderr, but a write that is a whole traceback (and the newline print adds) goes to `held`."""

    def __init__(self, stream, held: list[str]):
        self.stream, self.held, self.last = stream, held, False

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last):") or (self.last and text == "\n"):
            self.held.append(text)
            self.last = text != "\n"
            return len(text)
        self.last = False
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def disk_full(output: str, error: BaseException) -> IngestError | None:
    """A one-line IngestError for a job that ran out of space (also when the runner wrapped the
    OSError), naming the output and the space left; None for any other error."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left on device" in str(e):
            free = ""
            if not is_url(output):
                import shutil

                folder = output
                while folder and not os.path.isdir(folder):
                    folder = os.path.dirname(folder)
                free = f", {shutil.disk_usage(folder or '.').free / 1e6:.1f} MB free"
            return IngestError(f"{output}: the disk is full (no space left on device{free}); the job removed "
                               f"its staged and temporary files and published nothing; free some space and "
                               f"run it again")
        e = e.__cause__ or e.__context__
    return None
