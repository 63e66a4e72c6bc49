"""Read a shard of either encoding: `read_shard` for whole samples, `read_shard_lazy` for a loader.

Both take a path (local or a URL, through shards.format.storage) or an open binary file object (anything with `.read`, e.g. an fsspec
stream) and read it front to back once, so they work on non-seekable streams (but for the frames
`read_shard_lazy(..., defer_frames=True)` passes over: the training input's reads). The format
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


def read_shard_lazy(source: Source, fmt: str | None = None, strict: bool = True,
                    defer_frames: bool = False) -> Iterator[LazySample]:
    """The samples of one shard, in order, each decoded only as far as it is used.

    A LazySample carries `.key`, `.labels`, `.meta`, ... (parsed on first access), `.num_frames`,
    `.frame(i)` / `.frames(indices)` (JPEG bytes, undecoded), `.melspec` and `.to_sample()`; skipping one
    costs only the read. Corrupt or truncated data raises ShardError naming the shard. strict=False:
    a damaged sample whose container still frames the next one (a tar sample missing a member, a
    TFRecord failing its data CRC) is yielded, and raises ShardError naming it when read, so the
    samples after it can be read (what `mbt validate` and the training input do).

    defer_frames=True (the training input's choice; a tar shard given by path): a sample's frames are
    read only when asked for, while the shard is iterated (use each sample before taking the next):
    a local file seeks past the rest, a shard in a store is read by byte ranges (per sample its
    headers and JSON, its spectrogram, and the asked frames in one concurrent fetch). The same
    LazySamples come from shards.format.offsets.read_sample, which reads one sample by its number.
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
    path = os.fspath(source)
    url = storage.is_url(path)
    # a local tar seeks past the frames not asked for; from a store, byte ranges where it has them
    # (else it is read front to back, every byte once)
    defer = defer_frames and fmt == "webdataset"
    try:
        f = storage.open_ranged(path) if defer and url else None
        defer = defer and (f is not None or not url)
        f = f or (storage.open_path(path, "rb") if url else open(path, "rb"))
    except Exception as e:  # the backends raise their own types
        raise ShardError(f"cannot open shard {name}: {getattr(e, 'strerror', None) or e}; check the "
                         f"{'URL and credentials' if url else 'path'}") from None
    with f:
        if defer:
            yield from iter_webdataset(f, name, strict=strict, defer_frames=True)
        else:
            yield from iterate(f, name, strict=strict)


def read_shard(source: Source, fmt: str | None = None) -> Iterator[Sample]:
    """The samples of one shard, in order, fully decoded and validated."""
    for lazy in read_shard_lazy(source, fmt):
        yield lazy.to_sample()
