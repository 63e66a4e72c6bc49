"""Samples with real JPEG frames (Pillow) for the shard tests."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.format.schema import Sample


def jpeg(rng: np.random.Generator, width: int = 24, height: int = 16) -> bytes:
    """A real JPEG of random pixels (sizes differ between frames, so frame offsets matter)."""
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=80)
    return out.getvalue()


@pytest.fixture
def make_sample():
    """make_sample(key, num_frames=..., mel_rows=..., verb=..., noun=...) -> a valid Sample."""

    def make(key: str = "vid_0", num_frames: int = 5, mel_rows: int = 150, seed: int = 0,
             labels: tuple[int, ...] = (3, 7), verb: int | None = None, noun: int | None = None) -> Sample:
        rng = np.random.default_rng(seed)
        return Sample(
            key=key,
            frames=[jpeg(rng, 16 + 8 * (i % 3)) for i in range(num_frames)],
            melspec=rng.standard_normal((mel_rows, 128)).astype(np.float32),
            labels=list(labels),
            label_text=[f"class é {i}" for i in labels],
            meta={"source": f"/videos/{key}.mp4", "start": 1.5, "end": 1.5 + num_frames / 25,
                  "fps": 25, "num_frames": num_frames, "has_audio": True, "mel": {"hop_length": 160}},
            verb=verb, noun=noun,
        ).validate()

    return make


@pytest.fixture
def samples(make_sample):
    """Four samples covering the edge cases: EPIC verb/noun, no labels, mel rows a multiple of 100."""
    return [
        make_sample("a_0", num_frames=5, mel_rows=150, seed=1),
        make_sample("b-1_2000", num_frames=1, mel_rows=40, seed=2, verb=4, noun=11),
        make_sample("c_3", num_frames=7, mel_rows=200, seed=3, labels=()),
        make_sample("_-0Gj8-vB1q4_30000", num_frames=3, mel_rows=1, seed=4, labels=(0,)),
    ]


class NonSeekable:
    """A write-only / read-only stream with no seek or tell, like a pipe or an object-store upload."""

    def __init__(self, data: bytes = b""):
        self._buf = io.BytesIO(data)
        self.written = bytearray()

    def write(self, b: bytes) -> int:
        self.written += b
        return len(b)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 7000) if n and n > 0 else n)  # short reads, as sockets give


@pytest.fixture
def non_seekable():
    return NonSeekable
