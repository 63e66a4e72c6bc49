"""CRC32C of the files a dataset's index lists: computed by the writer while it streams a file out,
recorded in the index as 8 hex digits, verified by `mbt validate` (google-crc32c: C speed, and the
checksum GCS itself keeps for every object)."""

from __future__ import annotations

from typing import BinaryIO

import google_crc32c

CHUNK = 1 << 20


class Crc32c:
    """A running CRC32C."""

    def __init__(self, data: bytes = b""):
        self._sum = google_crc32c.Checksum(data)

    def update(self, data: bytes) -> None:
        self._sum.update(data)

    def hexdigest(self) -> str:
        return self._sum.hexdigest().decode("ascii")


def crc32c_hex(data: bytes) -> str:
    return Crc32c(data).hexdigest()


class ChecksumWriter:
    """A binary file wrapper that counts and checksums what goes through `write`."""

    def __init__(self, f: BinaryIO):
        self.f, self.crc, self.bytes = f, Crc32c(), 0

    def write(self, data: bytes) -> int:
        self.crc.update(data)
        self.bytes += len(data)
        return self.f.write(data)


def stream_crc32c(f: BinaryIO) -> tuple[str, int]:
    """(CRC32C as 8 hex digits, bytes) of what remains of an open binary file, a megabyte at a time."""
    crc, n = Crc32c(), 0
    while chunk := f.read(CHUNK):
        crc.update(chunk)
        n += len(chunk)
    return crc.hexdigest(), n
