"""shards.format.jpeg: splitting ffmpeg's mjpeg stream; decode_jpeg's Pillow pixels, exact regions,
strictness and jpeg_size, with and without shards.format._jpeg_region."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.format import jpeg


@pytest.fixture(params=["region", "whole"])
def decoder(request, monkeypatch):
    """Both decoders: the region extension (where it was built) and simplejpeg's whole frames."""
    if request.param == "region":
        if jpeg._region_decoder() is None:
            pytest.skip("shards.format._jpeg_region was not built (no libjpeg-turbo headers at install)")
    else:
        monkeypatch.setattr(jpeg, "_region_decoder", lambda: None)
    return request.param


def scene(h=61, w=90, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1) + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(pixels, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **kw)
    return out.getvalue()


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("subsampling,progressive", [(0, False), (1, False), (2, False), (2, True)])
def test_whole_frames_and_regions_are_pillows_pixels(decoder, subsampling, progressive):
    # 4:4:4, 4:2:2, 4:2:0 (what ffmpeg writes), and progressive
    data = encode(scene(), quality=85, subsampling=subsampling, progressive=progressive)
    full = pillow(data)
    assert jpeg.jpeg_size(data) == full.shape[:2]
    np.testing.assert_array_equal(jpeg.decode_jpeg(data), full)
    rng = np.random.default_rng(subsampling)
    scratch = np.empty(full.size, np.uint8)
    for _ in range(200):  # random boxes, edges included: every pixel as in the whole frame
        h, w = int(rng.integers(1, 62)), int(rng.integers(1, 91))
        top, left = int(rng.integers(0, 62 - h)), int(rng.integers(0, 91 - w))
        got = jpeg.decode_jpeg(data, out=scratch, region=(top, left, h, w), frame_size=full.shape[:2])
        assert np.shares_memory(got, scratch)
        np.testing.assert_array_equal(got, full[top:top + h, left:left + w])


def test_grey_and_cmyk_jpegs_come_out_rgb(decoder):
    grey = encode(scene()[..., 1])
    np.testing.assert_array_equal(jpeg.decode_jpeg(grey, region=(3, 4, 20, 30)), pillow(grey)[3:23, 4:34])
    out = io.BytesIO()
    Image.fromarray(scene()).convert("CMYK").save(out, "JPEG")
    cmyk_data = out.getvalue()
    np.testing.assert_array_equal(jpeg.decode_jpeg(cmyk_data, region=(1, 2, 10, 10)), pillow(cmyk_data)[1:11, 2:12])


def test_bad_data_and_bad_requests_are_value_errors(decoder):
    data = encode(scene())
    for broken in (b"\xff\xd8 not a jpeg", data[:len(data) // 2], b"", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(ValueError):
            jpeg.decode_jpeg(broken)
    with pytest.raises(ValueError, match="outside the 61x90 frame"):
        jpeg.decode_jpeg(data, region=(50, 0, 20, 10))
    with pytest.raises(ValueError, match="the frame is 61x90, the clip's first frame 48x64"):
        jpeg.decode_jpeg(data, region=(0, 0, 10, 10), frame_size=(48, 64))


def test_split_jpegs_walks_markers_not_bytes():
    rng = np.random.default_rng(1)
    jpegs = []
    for i in range(3):
        img = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        buf = io.BytesIO()
        # a comment holding EOI/SOI byte pairs, and restart markers in the entropy-coded data
        img.save(buf, "JPEG", quality=95, comment=b"\xff\xd9 not the end \xff\xd8",
                 restart_marker_blocks=4)
        jpegs.append(buf.getvalue())
    stream = b"".join(jpegs)
    assert jpeg.split_jpegs(stream) == jpegs
    assert jpeg.split_jpegs(stream[:-10]) == jpegs[:2]  # a cut-off last frame is dropped
    assert jpeg.split_jpegs(b"") == []
    assert jpeg.jpeg_size(jpegs[0]) == (40, 56)  # (height, width)
