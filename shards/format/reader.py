"""Read a shard of either encoding: `read_shard` for whole samples, `read_shard_lazy` for a loader.

Both take a path (local or a URL, through shards.format.storage) or an open binary file object (anything with `.read`, e.g. an fsspec
stream) and read it front to back once, so they work on non-seekable streams. The format
comes from the file name (`.tar` -> webdataset, `.tfrecord` -> tfrecord) unless `fmt` is given. The two
encodings of the same samples read back as equal `Sample`s.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator, Union

from shards.format import storage
from shards.format.errors import ShardError, shard_label
from shards.format.lazy import LazySample
from shards.format.naming import check_format, format_for_path
from shards.format.schema import Sample
from shards.format.tfrecord_codec import iter_tfrecord
from shards.format.webdataset_codec import iter_webdataset

Source = Union[str, os.PathLike, BinaryIO]


def read_shard_lazy(source: Source, fmt: str | None = None, strict: bool = True) -> Iterator[LazySample]:
    """The samples of one shard, in order, each decoded only as far as it is used.

    A LazySample carries `.key`, `.labels`, `.meta`, ... (parsed on first access), `.num_frames`,
    `.frame(i)` / `.frames(indices)` (JPEG bytes, undecoded), `.melspec` and `.to_sample()`; skipping one
    costs only the read. Corrupt or truncated data raises ShardError naming the shard. strict=False:
    a damaged sample whose container still frames the next one (a tar sample missing a member, a
    TFRecord failing its data CRC) is yielded, and raises ShardError naming it when read, so the
    samples after it can be read (what `mbt validate` and the training input do).
    """
    name = shard_label(source)
    if fmt is None:
        try:
            fmt = format_for_path(name)
        except ValueError as e:
            raise ShardError(str(e)) from None
    check_format(fmt)
    iterate = iter_webdataset if fmt == "webdataset" else iter_tfrecord
    if hasattr(source, "read"):
        yield from iterate(source, name, strict=strict)
        return
    try:
        f = storage.open_path(os.fspath(source), "rb")
    except OSError as e:
        raise ShardError(f"cannot open shard {name}: {e.strerror or e}; check the path") from None
    with f:
        yield from iterate(f, name, strict=strict)


def read_shard(source: Source, fmt: str | None = None) -> Iterator[Sample]:
    """The samples of one shard, in order, fully decoded and validated."""
    for lazy in read_shard_lazy(source, fmt):
        yield lazy.to_sample()
