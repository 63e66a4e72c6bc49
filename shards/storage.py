"""Paths for every reader outside a Beam job: local files, and URLs through fsspec (gs:// via gcsfs,
s3://, memory://, http://), with TensorFlow's file system only for schemes fsspec has no backend for.

One `is_url`, one way to open, list, glob and stat. gcsfs (like google-cloud-storage and Beam's
FileSystems) honours STORAGE_EMULATOR_HOST, so the same calls run against a GCS API server on this
machine in the tests; tf.io.gfile would not, which is why it is never the path for gs:// when gcsfs is
installed. Imports of fsspec and TensorFlow happen on first use of a URL.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from typing import IO


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """`scheme://...` (gs://, s3://, http://, file://); anything else is a local path."""
    return bool(_URL_RE.match(os.fspath(path)))


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else os.path.join(folder, name)


def split(path: str) -> tuple[str, str]:
    """(folder, name) of a path or URL."""
    return posixpath.split(path) if is_url(path) else os.path.split(path)


def filesystem(url: str):
    """The fsspec file system of a URL, or None where TensorFlow's is to serve it."""
    return _fsspec_for(url.split("://", 1)[0])


@functools.lru_cache(maxsize=None)
def _fsspec_for(protocol: str):
    try:
        import fsspec

        return fsspec.filesystem(protocol)
    except (ImportError, ValueError):
        return None


def open_path(path: str, mode: str = "rb") -> IO:
    """Open a local path or a URL."""
    if not is_url(path):
        return open(path, mode)
    fs = filesystem(path)
    if fs is not None:
        return fs.open(path, mode)
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


def size(path: str) -> int | None:
    """Bytes of a file; None when it does not exist."""
    try:
        if not is_url(path):
            return os.stat(path).st_size
        fs = filesystem(path)
        if fs is not None:
            return fs.size(path)
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - TensorFlow's NotFoundError is no FileNotFoundError
        if type(e).__name__ == "NotFoundError":
            return None
        raise


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs = filesystem(path)
    if fs is not None:
        return fs.isdir(path)
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def listdir(folder: str) -> list[str]:
    """File names in a folder ([] when there is none)."""
    if not is_url(folder):
        return os.listdir(folder) if os.path.isdir(folder) else []
    fs = filesystem(folder)
    if fs is not None:
        try:
            return [posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []
    import tensorflow as tf

    return [n.rstrip("/") for n in tf.io.gfile.listdir(folder)] if tf.io.gfile.isdir(folder) else []


def glob(pattern: str) -> list[str]:
    """Paths matching a glob pattern, sorted; URLs come back with their scheme."""
    if not is_url(pattern):
        import glob as globlib

        return sorted(globlib.glob(pattern))
    fs = filesystem(pattern)
    if fs is not None:
        protocol = pattern.split("://", 1)[0]
        return sorted(p if is_url(p) else f"{protocol}://{p.lstrip('/')}" for p in fs.glob(pattern))
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))
