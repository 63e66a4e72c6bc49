"""How far a reader trusts a size read from a shard's headers: never past what the file holds.

A tar member's size, a TFRecord's length field, a .npy header's shape and a JPEG's dimensions are
all numbers a damaged or hostile file can make up. Each is checked against these limits and the
bytes left in the file before anything of that size is allocated; where the file's size can't be
known (a pipe), data is read a chunk at a time, so a lie costs at most what the stream really holds.
"""

from __future__ import annotations

import io
import os
import stat
from typing import BinaryIO

from shards.format.dataset_index import read_exact

MAX_MEMBER_BYTES = 1 << 30  # a tar member or TFRecord record: larger than any clip
MAX_JSON_BYTES = 64 << 20  # a sample's KEY.json (labels, meta, frame table): megabytes at most
MAX_HEADER_BYTES = 1 << 20  # a tar pax or GNU long-name header (a member's name)
CHUNK = 16 << 20  # reads past this size go a chunk at a time


def bytes_left(f: BinaryIO) -> int | None:
    """Bytes from the position of `f` to its end: of a local file, a range-read object (`.raw.length`),
    an fsspec file (`.size`) or any seekable stream; None where that can't be known (a pipe)."""
    try:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size - f.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    size = getattr(getattr(f, "raw", None), "length", None)
    if size is None:
        size = getattr(f, "size", None)
    try:
        if isinstance(size, int):
            return size - f.tell()
        if getattr(f, "seekable", lambda: False)():
            here = f.tell()
            end = f.seek(0, io.SEEK_END)
            f.seek(here)
            return end - here
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


def read_bounded(f: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes of `f` (fewer only at its end), never asking for more than CHUNK at once: a
    buffered read allocates what it is asked for before it knows how much the file holds."""
    if n <= CHUNK:
        return read_exact(f, n)
    chunks, left = [], n
    while left > 0:
        chunk = read_exact(f, min(left, CHUNK))
        chunks.append(chunk)
        left -= len(chunk)
        if len(chunk) < min(left + len(chunk), CHUNK):
            break  # the end of the file
    return b"".join(chunks)


def skip_bytes(f: BinaryIO, n: int) -> int:
    """Move `n` bytes on (a seek where the file can, else reads a chunk at a time); the bytes passed."""
    if getattr(f, "seekable", lambda: False)():
        f.seek(n, io.SEEK_CUR)
        return n
    passed = 0
    while passed < n:
        chunk = read_exact(f, min(n - passed, CHUNK))
        if not chunk:
            break
        passed += len(chunk)
    return passed
