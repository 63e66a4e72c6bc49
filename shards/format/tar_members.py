"""Reading a tar stream member by member, strictly: the part of the webdataset codec that walks the
archive's headers itself (never tarfile's reader, never an extraction).

A truncated archive, a bad header checksum, a member that is not a plain file, or a member name
outside `KEY.{json,mjpeg,mel.npy}` (no '/', no '..', no leading '-') raises ShardError naming the
shard and the member. So does a size field claiming more bytes than the file has left, checked
before anything is read (shards.format.limits). A KEY.json larger than MAX_JSON_BYTES that the file
does hold is passed over and yielded as `Damaged`: the headers still frame the next member.
`defer=` leaves the members with that suffix in a seekable file (`DeferredMember`), so a loader
reads only the frames it samples.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Iterator

from shards.format.dataset_index import read_all, read_exact
from shards.format.errors import REWRITE_FIX as _FIX
from shards.format.errors import ShardError
from shards.format.lazy import Damaged
from shards.format.limits import (MAX_HEADER_BYTES, MAX_JSON_BYTES, MAX_MEMBER_BYTES, bytes_left, read_bounded,
                                  skip_bytes)
from shards.format.schema import SchemaError, check_key

SUFFIXES = ("json", "mjpeg", "mel.npy")  # every member of a sample is KEY.<one of these>
BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)


def check_member_name(name: str, shard: str) -> tuple[str, str]:
    """(key, suffix) of a member name, or ShardError if it is not `KEY.json|KEY.mjpeg|KEY.mel.npy`."""
    bad = None
    if not name or "/" in name or "\\" in name or "\x00" in name:
        bad = "member names must be plain file names (no '/', no '\\')"
    elif ".." in name:
        bad = "member names must not contain '..'"
    elif name.startswith("-"):
        bad = "member names must not start with '-'"
    else:
        key, _, suffix = name.partition(".")
        if suffix not in SUFFIXES:
            known = ", ".join("KEY." + s for s in SUFFIXES)
            bad = f"unknown member type {suffix!r}; a sample has only {known}"
        else:
            try:
                return check_key(key), suffix
            except SchemaError as e:
                bad = str(e)
    raise ShardError(f"shard {shard}: refusing member {name!r}: {bad}; this is not a shard written by "
                     f"this toolkit (or it was tampered with) - {_FIX}")


def _number(field: bytes, what: str, shard: str, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (bad {what} field "
                         f"{field!r}); {_FIX}") from None


def _pax_records(data: bytes, shard: str, offset: int) -> dict[str, str]:
    records, pos = {}, 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            record = data[space + 1:pos + length]
            if length <= 0 or not record.endswith(b"\n"):
                raise ValueError("bad record length")
            k, _, v = record[:-1].partition(b"=")
            records[k.decode("utf-8")] = v.decode("utf-8")
            pos += length
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"shard {shard}: corrupt pax header at byte {offset} ({e}); {_FIX}") from None
    return records


class DeferredMember:
    """A member's bytes left in a seekable file: len() and slices read only the bytes asked for.

    Made by iter_tar_members(defer=...); valid while the archive is being iterated (file open)."""

    def __init__(self, fileobj: BinaryIO, start: int, size: int, shard: str, name: str):
        self.fileobj, self.start, self.size, self.shard, self.name = fileobj, start, size, shard, name
        # a file of an object store (shards.format.storage.open_ranged): one ranged GET per slice
        self.fetch = getattr(getattr(fileobj, "raw", None), "fetch", None)
        self.fetch_ranges = getattr(getattr(fileobj, "raw", None), "fetch_ranges", None)
        try:  # a local file: one pread per slice, the file's position untouched
            self.fd: int | None = (fileobj.fileno() if isinstance(fileobj, io.BufferedReader)
                                   and self.fetch is None else None)
        except (OSError, ValueError):
            self.fd = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: slice) -> bytes:
        start, stop, step = item.indices(self.size)
        if step != 1:
            raise ValueError("a deferred member is read in contiguous slices only")
        if getattr(self.fileobj, "closed", False):
            raise ShardError(f"shard {self.shard}: {self.name} read after the shard's iteration ended; "
                             f"with defer_frames, read a sample's frames while iterating")
        if self.fetch is not None:
            data = self.fetch(self.start + start, self.start + stop) if stop > start else b""
        elif self.fd is not None:
            end = self.start + stop
            data = read_all(lambda left: os.pread(self.fd, left, end - left), max(0, stop - start))
        else:
            here = self.fileobj.tell()
            try:
                self.fileobj.seek(self.start + start)
                data = read_exact(self.fileobj, max(0, stop - start))
            finally:
                self.fileobj.seek(here)
        if len(data) < stop - start:
            raise ShardError(f"shard {self.shard}: truncated inside member {self.name!r}; the file is "
                             f"incomplete - {_FIX}")
        return data

    def slices(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of several (start, stop) ranges; from an object store, fetched concurrently."""
        if self.fetch_ranges is None or len(ranges) < 2:
            return [self[a:b] for a, b in ranges]
        if getattr(self.fileobj, "closed", False):
            return [self[a:b] for a, b in ranges]  # (raises the error naming the member)
        bad = [(a, b) for a, b in ranges if not 0 <= a <= b <= self.size]
        if bad:
            raise ValueError(f"ranges {bad} lie outside {self.name} ({self.size} bytes)")
        data = self.fetch_ranges([(self.start + a, self.start + b) for a, b in ranges])
        if any(len(d) != b - a for d, (a, b) in zip(data, ranges)):
            raise ShardError(f"shard {self.shard}: truncated inside member {self.name!r}; the file is "
                             f"incomplete - {_FIX}")
        return data


def iter_tar_members(fileobj: BinaryIO, shard: str,
                     defer: bytes | None = None) -> Iterator[tuple[str, bytes | DeferredMember | Damaged]]:
    """(name, data) of each plain-file member of a tar stream, strictly checked; reads sequentially.

    defer=b".mjpeg" (seekable files only): members whose name ends so are not read but yielded as a
    DeferredMember, so a loader reads just the slices (frames) it uses. A KEY.json over MAX_JSON_BYTES
    is yielded as `Damaged` (its bytes passed over, never read)."""
    offset, long_name, pax = 0, None, {}
    left = bytes_left(fileobj)  # None: a stream of unknown length (then reads go a chunk at a time)
    while True:
        header = read_exact(fileobj, BLOCK)
        if len(header) < BLOCK:
            where = "before its end-of-archive marker" if not header else "inside a member header"
            raise ShardError(f"shard {shard}: truncated at byte {offset + len(header)} ({where}); "
                             f"the file is incomplete - {_FIX}")
        if header == _ZERO_BLOCK:
            return  # end of archive; what follows is padding
        stored = _number(header[148:156], "checksum", shard, offset)
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:]):
            # (old tar writers summed the bytes as signed; that sum is only worked out when it is needed)
            raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (checksum mismatch); "
                             f"the file is damaged - {_FIX}")
        name = header[:100].split(b"\x00", 1)[0]
        if header[257:263] == b"ustar\x00" and header[345:500].strip(b"\x00"):
            name = header[345:500].split(b"\x00", 1)[0] + b"/" + name
        size = _number(header[124:136], "size", shard, offset)
        typeflag = header[156:157]
        if typeflag not in (b"x", b"g") and "size" in pax:
            size = int(pax["size"]) if pax["size"].isdigit() else -1
        final = pax["path"].encode("utf-8") if "path" in pax else long_name if long_name is not None else name
        shown = final.decode("utf-8", "replace")
        limit = MAX_HEADER_BYTES if typeflag in (b"x", b"g", b"L") else MAX_MEMBER_BYTES
        if not 0 <= size <= limit:
            raise ShardError(f"shard {shard}: corrupt tar header at byte {offset} (member {shown!r} of size "
                             f"{size}, more than the {limit} bytes a member can have); {_FIX}")
        if left is not None and size > left - offset - BLOCK:
            raise ShardError(f"shard {shard}: truncated or corrupt at byte {offset}: member {shown!r} claims "
                             f"{size} bytes, the file has {max(0, left - offset - BLOCK)} left; {_FIX}")
        pad = -size % BLOCK
        if typeflag in (b"0", b"\x00") and final.endswith(b".json") and size > MAX_JSON_BYTES:
            # framed, but no sample's JSON is that large: passed over, never read into memory
            data = Damaged(f"{shown} has {size} bytes, more than a sample's JSON can have ({MAX_JSON_BYTES})")
            if skip_bytes(fileobj, size + pad) < size + pad:
                raise ShardError(f"shard {shard}: truncated inside member {shown!r} (header at byte {offset}); "
                                 f"the file is incomplete - {_FIX}")
        elif defer is not None and typeflag in (b"0", b"\x00") and final.endswith(defer):
            # (a cut inside it shows as a truncated header next: the sample's .mel.npy follows it)
            data = DeferredMember(fileobj, fileobj.tell(), size, shard, shown)
            fileobj.seek(size + pad, 1)
        else:
            data = read_bounded(fileobj, size)
            padding = read_exact(fileobj, pad)
            if len(data) < size or len(padding) < pad:
                raise ShardError(f"shard {shard}: truncated inside member {name.decode('utf-8', 'replace')!r} "
                                 f"(header at byte {offset}); the file is incomplete - {_FIX}")
        offset += BLOCK + size + pad
        if typeflag == b"x":  # pax extended header for the next member (long names)
            pax = _pax_records(data, shard, offset)
            continue
        if typeflag == b"g":  # pax global header: nothing we use
            continue
        if typeflag == b"L":  # GNU long name for the next member
            long_name = data.split(b"\x00", 1)[0]
            continue
        if "path" in pax:
            name = pax["path"].encode("utf-8")
        elif long_name is not None:
            name = long_name
        pax, long_name = {}, None
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ShardError(f"shard {shard}: member name {name!r} is not UTF-8; {_FIX}") from None
        if typeflag not in (b"0", b"\x00"):
            raise ShardError(f"shard {shard}: refusing member {text!r}: not a plain file (tar type "
                             f"{typeflag!r}); shards hold only files - {_FIX}")
        yield text, data
