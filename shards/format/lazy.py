"""One stored sample, decoded on demand.

Readers yield these so that a training loader can skip a sample without decoding it, read its labels
without touching its frames, and slice out (and later JPEG-decode) only the frames it samples. Each
encoding subclasses `LazySample`; `to_sample()` gives the same `Sample` whichever encoding stored it.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np

from shards.format.errors import ShardError
from shards.format.schema import Sample, SchemaError


class Damaged:
    """Stands in for a member or record whose bytes are known to be unusable (a size beyond its limit, a
    CRC mismatch) while the shard's framing still holds: the sample is yielded, the rest of the shard
    stays readable, and reading this sample's fields raises ShardError with `what`."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"Damaged({self.what!r})"


class LazySample:
    """A sample as stored in shard `shard` at position `index`; fields are decoded when first read.

    Subclasses implement `_header()` (labels, text, meta, verb, noun, key), `num_frames`, `frame(i)`
    and `_melspec()`; anything malformed raises ShardError naming the shard and the sample.
    """

    def __init__(self, shard: str, index: int):
        self.shard = shard  # shard name, for messages
        self.index = index  # 0-based position of the sample in its shard

    # --- provided by each encoding ---
    def _header(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> bytes:
        """The JPEG bytes of frame `i` (not decoded)."""
        raise NotImplementedError

    def _melspec(self) -> np.ndarray:
        raise NotImplementedError

    # --- shared ---
    @functools.cached_property
    def header(self) -> dict[str, Any]:
        """key, labels, label_text, meta, verb, noun: everything but frames and spectrogram."""
        return self._header()

    @property
    def key(self) -> str:
        return self.header["key"]

    @property
    def labels(self) -> list[int]:
        return self.header["labels"]

    @property
    def label_text(self) -> list[str]:
        return self.header["label_text"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.header["meta"]

    @property
    def verb(self) -> int | None:
        return self.header["verb"]

    @property
    def noun(self) -> int | None:
        return self.header["noun"]

    def frames(self, indices: Sequence[int] | None = None) -> list[bytes]:
        """JPEG bytes of the frames at `indices` (all frames when None), in that order."""
        return [self.frame(i) for i in (range(self.num_frames) if indices is None else indices)]

    @functools.cached_property
    def melspec(self) -> np.ndarray:
        """The float32 [T, 128] log-mel spectrogram."""
        return self._melspec()

    def to_sample(self) -> Sample:
        """The whole sample, decoded and validated."""
        h = self.header
        sample = Sample(key=h["key"], frames=self.frames(), melspec=self.melspec, labels=h["labels"],
                        label_text=h["label_text"], meta=h["meta"], verb=h["verb"], noun=h["noun"])
        try:
            return sample.validate()
        except SchemaError as e:
            raise self.error(str(e)) from None

    def error(self, what: str) -> ShardError:
        """A ShardError naming this shard and sample (its key too, where that is known), with the fix."""
        key = self._known_key()
        name = f"sample #{self.index} ({key})" if key else f"sample #{self.index}"
        return ShardError(f"shard {self.shard}, {name}: {what}; the shard is corrupt or "
                          f"was not written by this toolkit - re-create it (mbt ingest)")

    def _known_key(self) -> str | None:
        """The key, if it is known without parsing anything that could fail."""
        header = vars(self).get("header")
        return header["key"] if header else None

    def _check_frame_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i!r} out of range for sample {self.key} with {self.num_frames} frames")
        return int(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shard={self.shard!r}, index={self.index})"
