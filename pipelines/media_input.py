"""Name an input on ffmpeg's command line, fetch the ones ffmpeg can't open, refuse the ones it
can't read.

Local paths are passed as `file:/absolute/path` so that a name beginning with '-' (or containing ':')
can't be read as an option or a protocol. URLs ffmpeg opens itself (http, https) are passed as they
are; any other scheme (gs://, s3://) is first copied to a local file through shards.format.storage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from pipelines.ffmpeg_run import DecodeError
from shards.format.storage import is_url


def input_arg(path: str | os.PathLike) -> str:
    """How to name `path` on ffmpeg's command line: `file:` + absolute path for local files (so '-x.mp4'
    is never an option and 'a:b.mp4' never a protocol), URLs unchanged."""
    path = os.fspath(path)
    if is_url(path):
        return path
    return "file:" + os.path.abspath(path)


# URL schemes ffmpeg opens itself (and seeks in, over HTTP range requests); any other (gs://, s3://,
# hdfs://) is read through shards.format.storage into a local copy first
FFMPEG_SCHEMES = ("http", "https", "file")


def needs_local_copy(path: str | os.PathLike) -> bool:
    """True for a URL ffmpeg can't open itself, e.g. a video in a bucket that a Dataflow worker reads."""
    path = os.fspath(path)
    return is_url(path) and path.split("://", 1)[0].lower() not in FFMPEG_SCHEMES


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Copy `path` (gs://, s3://, any scheme shards.format.storage reads) to a temporary local file for
    the duration of the `with`; DecodeError missing_file / unreadable when it can't be read.

    One copy per clip: right for clip-sized sources (AudioSet, VGGSound); many clips of one long
    video (EPIC) each fetch it whole, so stage such corpora on the workers' disk or an HTTP(S) URL."""
    from shards.format import storage

    try:
        exists = storage.size(path) is not None
    except Exception as e:  # noqa: BLE001 - no file system for the scheme, or the store refuses us
        raise DecodeError("unreadable", f"{path}: {type(e).__name__}: {e}".splitlines()[0][:500]) from None
    if not exists:
        raise DecodeError("missing_file", f"{path}: no such object")
    fd, tmp = tempfile.mkstemp(prefix="mbt-src-", suffix=os.path.splitext(path)[1][:16])
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with storage.open_path(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            except Exception as e:  # noqa: BLE001 - any storage error is this clip's failure
                raise DecodeError("unreadable", f"{path}: {type(e).__name__}: {e}".splitlines()[0][:500]) \
                    from None
        yield tmp
    finally:
        os.unlink(tmp)


def check_input(path: str | os.PathLike) -> None:
    """Raise DecodeError (missing_file, empty_file, unreadable, not_media) for a local path that ffmpeg
    can't possibly read, before starting a process."""
    path = os.fspath(path)
    if is_url(path):
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError("missing_file", f"{path}: no such file") from None
    except OSError as e:
        raise DecodeError("unreadable", f"{path}: {e}") from None
    if os.path.isdir(path):
        raise DecodeError("not_media", f"{path}: is a directory")
    if st.st_size == 0 and os.path.isfile(path):
        raise DecodeError("empty_file", f"{path}: zero bytes")
    if not os.access(path, os.R_OK):
        raise DecodeError("unreadable", f"{path}: permission denied")


def starts_like_mp4(path: str) -> bool:
    """An ISO-BMFF 'ftyp' box at the start: a real MP4/MOV (so a missing moov means it was cut)."""
    if is_url(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(12)[4:8] == b"ftyp"
    except OSError:
        return False
