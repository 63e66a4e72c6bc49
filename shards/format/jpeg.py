"""JPEG frames: splitting ffmpeg's mjpeg stream into frames, a frame's size, and decoding a frame or
only its crop box.

Both sides of the project meet here: the ingestion job splits ffmpeg's output with `split_jpegs`
and records the frame size, the training input decodes the sampled frames' crop boxes with
`decode_jpeg`. Sizes are (height, width), numpy's order, everywhere.

A JPEG's header can claim any size up to 65535 x 65535; every reader checks it against
`FrameBounds` (the dataset's frame size, or a cap) before a pixel buffer is allocated.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import numpy as np

MAX_SIDE = 16384  # px a side of any frame, where no dataset says better
MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS: no frame accepted trips its bomb check
SHORT_SLACK = 2  # a dataset's frames: short side at most this many times the configured one,
MAX_ASPECT = 8  # long side at most this many times that


class FrameSizeError(ValueError):
    """A JPEG header claims a frame larger than its dataset's frames can be."""

    LEAD = "its JPEG header says"  # how its message starts


@dataclasses.dataclass(frozen=True)
class FrameBounds:
    """The largest frame a reader decodes: each side at most MAX_SIDE and MAX_PIXELS in all, and for
    a dataset whose index records its frames' short side S (`mbt ingest --short-side`), a short side
    of at most 2 S and a long side of at most 16 S (slack for any aspect ratio)."""

    short_side: int | None = None  # the dataset's configured short side, if known

    @classmethod
    def of_index(cls, index: dict[str, Any] | None) -> "FrameBounds":
        """The bounds of a dataset from its SPLIT.index.json (index["features"]["short_side"])."""
        side = ((index or {}).get("features") or {}).get("short_side")
        return cls(int(side)) if isinstance(side, int) and not isinstance(side, bool) and side > 0 else cls()

    def limits(self) -> tuple[int, int]:
        """(most pixels of the short side, of the long side)."""
        if self.short_side is None:
            return MAX_SIDE, MAX_SIDE
        short = min(MAX_SIDE, SHORT_SLACK * self.short_side)
        return short, min(MAX_SIDE, MAX_ASPECT * short)

    def check(self, size: tuple[int, int]) -> tuple[int, int]:
        """`size` (height, width) if a frame may have it, else FrameSizeError saying what is allowed."""
        short, long = self.limits()
        h, w = size
        if min(h, w) <= short and max(h, w) <= long and h * w <= MAX_PIXELS:
            return size
        if self.short_side is None:
            allowed = f"more than any frame is read at ({MAX_SIDE} px a side, {MAX_PIXELS} pixels)"
        else:
            allowed = (f"far larger than this dataset's frames (short side {self.short_side} px: at most "
                       f"{short} x {long})")
        raise FrameSizeError(f"{FrameSizeError.LEAD} {h}x{w} pixels, {allowed}")


def _jpeg_end(data: bytes, soi: int) -> int | None:
    """Index just past the EOI of the JPEG starting at `soi`, walking its marker segments (so bytes in
    headers or entropy-coded data that look like markers are never mistaken for one); None if cut."""
    n = len(data)
    i = soi + 2
    while True:
        if i >= n or data[i] != 0xFF:
            return None  # cut short (or not a JPEG from here on)
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI
            return i
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers carry no length
            continue
        if i + 2 > n:
            return None
        i += (data[i] << 8) | data[i + 1]  # segment length includes its own two bytes
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next marker other than RSTn
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return None
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed 0xFF, restart marker
                    i = j + 2
                elif nxt == 0xFF:  # fill byte; the marker follows
                    i = j + 1
                else:
                    i = j
                    break


def split_jpegs(data: bytes) -> list[bytes]:
    """Split ffmpeg's image2pipe mjpeg stream into one bytes object per JPEG (a cut-off last one is
    dropped)."""
    frames: list[bytes] = []
    pos = 0
    while True:
        soi = data.find(b"\xff\xd8", pos)
        if soi < 0:
            return frames
        end = _jpeg_end(data, soi)
        if end is None:
            return frames
        frames.append(data[soi:end])
        pos = end


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's header, without decoding it; ValueError if it is not a JPEG."""
    lib = _region_decoder()
    return lib.size(data) if lib is not None else _sof_size(data)


def decode_jpeg(data: bytes, out: np.ndarray | None = None, region: tuple[int, int, int, int] | None = None,
                frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """A JPEG, or the `region` (top, left, height, width) of it, as uint8 [h, w, 3] RGB.

    The decoder of the training input and of its benchmark's bound. libjpeg-turbo with Pillow's
    settings (accurate integer DCT, fancy upsampling: the same pixels), strict: corrupt or
    truncated data is a ValueError, never grey filler. With `out` (a uint8 array of at least the
    whole frame's H*W*3 elements, e.g. a reused scratch buffer) the pixels are written there and a
    view of it is returned (its rows may be strided); a frame that does not fit is a ValueError, never
    a new buffer. Without `out`, one is made of the size the header says, checked first against
    `FrameBounds()` (FrameSizeError). `frame_size` (H, W): the size the whole frame must have, else
    ValueError.

    With the extension shards.format._jpeg_region (built by `pip install` where the system has
    libjpeg-turbo's headers) a region costs only what it needs: rows below it are never decoded,
    rows above it only entropy-decoded, columns beside it not transformed. Without it, simplejpeg
    decodes the whole frame and the region is a view of it. JPEGs that libjpeg-turbo cannot turn
    into RGB (CMYK, YCCK) go through Pillow.
    """
    if out is None:
        height, width = FrameBounds().check(jpeg_size(data))
        out = np.empty(height * width * 3, np.uint8)
    lib = _region_decoder()
    if lib is not None:
        try:
            *size, rows, row_width, shift = lib.decode(data, *(region or (0, 0, 0, 0)), out.reshape(-1))
        except NotImplementedError:
            pass  # CMYK / YCCK: Pillow below
        else:
            _check_size(tuple(size), frame_size)
            frame = out.reshape(-1)[:rows * row_width * 3].reshape(rows, row_width, 3)
            return frame[:, shift:shift + region[3]] if region else frame
    frame = _decode_whole(data, out, frame_size)
    _check_size(frame.shape[:2], frame_size)
    if region:
        top, left, height, width = region
        if top < 0 or left < 0 or top + height > frame.shape[0] or left + width > frame.shape[1]:
            raise ValueError(f"region {height}x{width} at ({top}, {left}) lies outside the "
                             f"{frame.shape[0]}x{frame.shape[1]} frame")
        return frame[top:top + height, left:left + width]
    return frame


def _decode_whole(data: bytes, out: np.ndarray, frame_size: tuple[int, int] | None) -> np.ndarray:
    import simplejpeg

    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    _check_size((height, width), frame_size)  # (before decoding: the header may claim any size)
    if out.size < height * width * 3:
        raise ValueError(f"the frame is {height}x{width}, larger than the {out.size}-byte output buffer")
    if colorspace in ("CMYK", "YCCK"):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out.reshape(-1))


def _check_size(size: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and tuple(size) != tuple(expected):
        raise ValueError(f"the frame is {size[0]}x{size[1]}, the clip's first frame {expected[0]}x{expected[1]}")


@functools.cache
def _region_decoder():
    """shards.format._jpeg_region, or None where it was not built (the whole-frame decoder is used)."""
    try:
        from shards.format import _jpeg_region
    except ImportError:
        return None
    return _jpeg_region


def _sof_size(jpeg: bytes) -> tuple[int, int]:
    """(height, width) from the SOF marker segment, walking the header in Python."""
    i = 2
    while i + 9 < len(jpeg):
        if jpeg[i] != 0xFF:
            break
        marker = jpeg[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            return (jpeg[i + 5] << 8) | jpeg[i + 6], (jpeg[i + 7] << 8) | jpeg[i + 8]
        i += 2 + ((jpeg[i + 2] << 8) | jpeg[i + 3])
    raise ValueError("not a JPEG: no SOF marker in its header")
