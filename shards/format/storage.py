"""The toolkit's one storage layer, for every reader and writer (the ingestion job's workers and its
launcher, the training input, the run directory): local files, and URLs through fsspec (gs:// via
gcsfs, s3://, memory://, http://), with TensorFlow's file system only for schemes fsspec has no
backend for.

One `is_url`, one way to open, list, glob and stat, and the writes a dataset's safety rests on:
`open_atomic` / `write_atomic` (a temporary name renamed over the old file, never an unlink first;
one upload on a store), `create_exclusive`, `read_generation` / `write_if_generation` (GCS's
compare-and-swap), `delete`. gcsfs (like google-cloud-storage and Beam's
FileSystems) honours STORAGE_EMULATOR_HOST, so the same calls run against a GCS API server on this
machine in the tests; tf.io.gfile would not, which is why it is never the path for gs:// when gcsfs is
installed. Imports of fsspec and TensorFlow happen on first use of a URL.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import posixpath
import re
import uuid
from typing import IO, BinaryIO, Iterator, Sequence

from shards.format.errors import UserError
from shards.format.failpoints import failpoint


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """`scheme://...` (gs://, s3://, http://, file://); anything else is a local path."""
    return bool(_URL_RE.match(os.fspath(path)))


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else os.path.join(folder, name)


def split(path: str) -> tuple[str, str]:
    """(folder, name) of a path or URL."""
    return posixpath.split(path) if is_url(path) else os.path.split(path)


# What says where a store is and who we are there; loader workers take the values their parent had
# when it started them (a fork server started earlier would otherwise give them its own).
ENVIRONMENT = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


def environment() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ENVIRONMENT}


def use_environment(env: dict[str, str | None]) -> None:
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class StorageError(UserError, OSError):
    """A URL's storage service can't be reached or refuses us; the message names the URL and the fix."""


REACH_TIMEOUT = 5.0  # seconds a storage endpoint has to accept a connection


def filesystem(url: str):
    """The fsspec file system of a URL, or None where TensorFlow's is to serve it. For gs://, the
    endpoint (STORAGE_EMULATOR_HOST, else Google's) must accept a connection within REACH_TIMEOUT s:
    a dead endpoint is one line at once, not half a minute of the client's retries."""
    protocol = url.split("://", 1)[0]
    if protocol in ("gs", "gcs"):
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            # gcsfs's zonal-bucket probe speaks gRPC to a control API that an emulator lacks: it would
            # warn on every call. Off unless asked for.
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
        _check_gcs_endpoint(endpoint or "https://storage.googleapis.com")
        return _fsspec_for(protocol, endpoint)  # (one client per endpoint: the variable may change)
    return _fsspec_for(protocol)


@functools.lru_cache(maxsize=None)
def _check_gcs_endpoint(endpoint: str) -> None:
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT).close()
    except OSError as e:
        raise StorageError(f"the GCS endpoint {endpoint} does not answer ({e.strerror or e}); check the "
                           f"network, or STORAGE_EMULATOR_HOST for an emulator") from None


def _url_errors(fn):
    """Turn a storage client's own exceptions (aiohttp, google.auth, HTTP errors) into one-line
    StorageErrors naming the URL; FileNotFoundError stays what it is."""
    @functools.wraps(fn)
    def wrapped(path: str, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except (FileNotFoundError, StorageError):
            raise
        except PermissionError as e:
            path = next((a for a in (path, *args) if isinstance(a, str) and is_url(a)), path)
            raise StorageError(f"{path}: permission denied ({e}); check the credentials "
                               f"(GOOGLE_APPLICATION_CREDENTIALS) and the bucket's access") from None
        except Exception as e:  # noqa: BLE001 - each backend has its own exception types
            path = next((a for a in (path, *args) if isinstance(a, str) and is_url(a)), path)
            if not is_url(path) or type(e).__name__ == "NotFoundError":
                raise
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise StorageError(f"{path}: {type(e).__name__}: {first}; check the URL, the network and "
                               f"the credentials") from None
    return wrapped


@functools.lru_cache(maxsize=None)
def _fsspec_for(protocol: str, endpoint: str | None = None):
    try:
        import fsspec

        return fsspec.filesystem(protocol, **({"endpoint_url": endpoint} if endpoint else {}))
    except (ImportError, ValueError):
        return None


@_url_errors
def open_path(path: str, mode: str = "rb") -> IO:
    """Open a local path or a URL."""
    if not is_url(path):
        return open(path, mode)
    fs = filesystem(path)
    if fs is not None:
        return fs.open(path, mode)
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


@_url_errors
def size(path: str) -> int | None:
    """Bytes of a file; None when it does not exist."""
    try:
        if not is_url(path):
            return os.stat(path).st_size
        fs = filesystem(path)
        if fs is not None:
            fs.invalidate_cache(path)  # (another process may have written it since we last looked)
            return fs.size(path)
        import tensorflow as tf

        return tf.io.gfile.stat(path).length
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - TensorFlow's NotFoundError is no FileNotFoundError
        if type(e).__name__ == "NotFoundError":
            return None
        raise


@_url_errors
def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs = filesystem(path)
    if fs is not None:
        return fs.isdir(path)
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


@_url_errors
def listdir(folder: str) -> list[str]:
    """File names in a folder ([] when there is none)."""
    if not is_url(folder):
        return os.listdir(folder) if os.path.isdir(folder) else []
    fs = filesystem(folder)
    if fs is not None:
        fs.invalidate_cache(folder)
        try:
            return [posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False)]
        except FileNotFoundError:
            bucket = folder.split("://", 1)[0] + "://" + folder.split("://", 1)[1].split("/", 1)[0]
            if bucket != folder.rstrip("/") and not fs.exists(bucket):
                raise StorageError(f"{folder}: {bucket} does not exist (or these credentials can't see "
                                   f"it); check the URL") from None
            return []
    import tensorflow as tf

    return [n.rstrip("/") for n in tf.io.gfile.listdir(folder)] if tf.io.gfile.isdir(folder) else []


@_url_errors
def glob(pattern: str) -> list[str]:
    """Paths matching a glob pattern, sorted; URLs come back with their scheme."""
    if not is_url(pattern):
        import glob as globlib

        return sorted(globlib.glob(pattern))
    fs = filesystem(pattern)
    if fs is not None:
        fs.invalidate_cache()
        protocol = pattern.split("://", 1)[0]
        return sorted(p if is_url(p) else f"{protocol}://{p.lstrip('/')}" for p in fs.glob(pattern))
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))


@_url_errors
def read_bytes(path: str) -> bytes:
    with open_path(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------------------------------ writes
TMP_PREFIX = ".tmp-"  # a file being written: hidden, never listed by a reader, removed by cleanup


@contextlib.contextmanager
def open_atomic(path: str) -> Iterator[BinaryIO]:
    """A file to write that readers see at `path` whole or not at all. Locally: a hidden temporary
    file beside it, flushed to disk, then renamed over `path` (POSIX rename replaces the old file in
    one step; nothing is ever unlinked first). On an object store: one upload, which becomes visible
    only when complete. If the block raises, nothing appears and the temporary file is gone."""
    if not is_url(path):
        folder, name = os.path.split(path)
        os.makedirs(folder or ".", exist_ok=True)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            failpoint("atomic:before_rename")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(folder)
        return
    f = _url_errors(_open_for_upload)(path)
    try:
        yield f
    except BaseException:
        discard = getattr(f, "discard", None)
        if discard is not None:  # (fsspec: cancel the upload instead of committing it on close)
            with contextlib.suppress(Exception):
                discard()
        raise
    f.close()


def _open_for_upload(path: str):
    fs = filesystem(path)
    if fs is not None:
        return fs.open(path, "wb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "wb")


def _fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable (a power cut after it must not bring the old name back)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write a whole file that readers see entirely or not at all (see open_atomic)."""
    with open_atomic(path) as f:
        f.write(data)


@_url_errors
def upload(local: str, path: str) -> None:
    """Copy a local file to `path` (a URL or another local path), whole (see open_atomic)."""
    import shutil

    with open(local, "rb") as src, open_atomic(path) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


@_url_errors
def create_exclusive(path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; True if this call created it. Atomic on a local
    disk (O_CREAT | O_EXCL) and on gs:// (an upload with ifGenerationMatch=0, which GCS carries out
    only while no such object exists); on other stores a check, then a write."""
    if not is_url(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            with contextlib.suppress(OSError):  # (a full disk: leave no empty file behind)
                os.remove(path)
            raise
        return True
    if is_gcs(path):
        return write_if_generation(path, data, 0)
    if size(path) is not None:
        return False
    write_atomic(path, data)
    return True


def is_gcs(path: str) -> bool:
    return path.startswith(("gs://", "gcs://"))


def _blob(path: str):
    filesystem(path)  # (the endpoint check)
    bucket, _, name = path.split("://", 1)[1].partition("/")
    return _gcs_client().bucket(bucket).blob(name)


@_url_errors
def read_generation(path: str) -> tuple[bytes, int] | None:
    """(content, generation) of a gs:// object, or None when there is none. The generation is what
    `write_if_generation` compares against: it changes with every write of the object."""
    from google.api_core.exceptions import NotFound

    blob = _blob(path)
    try:
        data = blob.download_as_bytes()
    except NotFound:
        return None
    return data, int(blob.generation or 0)


@_url_errors
def write_if_generation(path: str, data: bytes, generation: int) -> bool:
    """Write a gs:// object only while its generation is `generation` (0: only while it does not
    exist): GCS's compare-and-swap. True if written; False if another writer came first."""
    from google.api_core.exceptions import PreconditionFailed

    try:
        _blob(path).upload_from_string(data, if_generation_match=generation)
    except PreconditionFailed:
        return False
    return True


@_url_errors
def delete(paths: Sequence[str]) -> None:
    """Remove files (and, locally, folders with what is in them); a path already gone is no error."""
    import shutil

    urls = [p for p in paths if is_url(p)]
    for p in paths:
        if is_url(p):
            continue
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
    if urls:
        fs = filesystem(urls[0])
        for p in urls:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(p, recursive=True)
        fs.invalidate_cache()


@functools.lru_cache(maxsize=None)
def _gcs_client():
    from google.cloud import storage as gcs  # (google-cloud-storage: with apache-beam[gcp])

    return gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))


def makedirs(path: str) -> None:
    """A local folder and its parents; nothing for a URL (object stores have no folders)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


# ------------------------------------------------------------------------------------- range reads

class RangeReader(io.RawIOBase):
    """A file of an object store read by byte ranges: seeking costs nothing, and each read fetches
    just the bytes asked for (one ranged GET). Wrapped in an io.BufferedReader by `open_ranged`, small
    sequential reads (tar headers, JSON) share one buffer fill, while a seek past a member fetches
    nothing. `fetched` counts the bytes that came over the network."""

    def __init__(self, fs, path: str, length: int):
        self.fs, self.path, self.length = fs, path, length
        self.pos = 0
        self.fetched = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.length - self.pos)
        if n <= 0:
            return 0
        data = self.fetch(self.pos, self.pos + n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def fetch(self, start: int, end: int) -> bytes:
        data = self.fs.cat_file(self.path, start=start, end=end)
        self._count(len(data))
        return data

    def _count(self, nbytes: int) -> None:
        self.fetched += nbytes
        self.requests += 1
        RANGE_READS["bytes"] += nbytes
        RANGE_READS["requests"] += 1

    def fetch_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Several byte ranges at once, concurrently where the file system can (fsspec's cat_ranges)."""
        if not ranges:
            return []
        data = self.fs.cat_ranges([self.path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])
        for d in data:
            if isinstance(d, Exception):
                raise d
        self._count(sum(map(len, data)))
        return data


RANGE_READS = {"bytes": 0, "requests": 0}  # this process's range reads so far (`mbt bench gcs`)
RANGE_BUFFER = 32 * 1024  # a sample's tar headers and JSON arrive in one fill; frames are fetched alone


@_url_errors
def open_ranged(path: str, buffer_size: int = RANGE_BUFFER) -> IO[bytes] | None:
    """A URL opened for range reads (an io.BufferedReader over a RangeReader, at `.raw`), or None
    where its file system has none (then read it front to back with open_path)."""
    fs = filesystem(path) if is_url(path) else None
    if fs is None:
        return None
    length = fs.size(path)
    return io.BufferedReader(RangeReader(fs, path, length), buffer_size=buffer_size)
