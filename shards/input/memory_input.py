"""Evaluation batches of samples held in memory, made exactly as `make_input(training=False)` makes
them from shards: for `mbt predict`, which decodes videos itself.

    lazies = [as_stored(sample) for sample in samples]      # each through the shard encoding
    for batch in eval_batches(lazies, cfg, num_classes=527, mel_mean=m, mel_std=s):
        ...                                                 # rgb, spectrogram, key, window, mask

`as_stored` runs a Sample through the webdataset encoding in memory and reads it back, so the
windows are cut from the very bytes a shard would hold (the JPEG frames as stored, the float32
spectrogram); `eval_batches` is the evaluation half of shards.input's pipeline (windows, centred
crop, normalisation, batching with the last batch padded) without the shard reading around it.
"""

from __future__ import annotations

import functools
import io
from typing import Any, Iterable, Iterator

from shards.format.lazy import LazySample
from shards.format.schema import Sample
from shards.format.webdataset_codec import iter_webdataset, sample_bytes, shard_end
from shards.input import augment, sampling
from shards.input.batching import Batcher


def as_stored(sample: Sample) -> LazySample:
    """`sample` as a reader of its shard would see it."""
    data = sample_bytes(sample)
    (lazy,) = iter_webdataset(io.BytesIO(data + shard_end(len(data))), f"<memory:{sample.key}>")
    return lazy


def eval_batches(samples: Iterable[LazySample], cfg: Any, *, num_classes: int | None, mel_mean: Any = 0.0,
                 mel_std: Any = 1.0, batch_size: int | None = None) -> Iterator[dict]:
    """Batches of `cfg.test_windows` evenly spaced windows per sample (one centred window when 1),
    in order; errors raise (ShardError naming the sample). `cfg` is an InputConfig."""
    batcher = Batcher(batch_size=batch_size or cfg.batch_size, cfg=cfg, num_classes=num_classes)
    examples = sampling.sample_windows(({"lazy": lazy} for lazy in samples), cfg=cfg, training=False, seed=0)
    examples = augment.augment_video(examples, cfg=cfg, training=False, slot=functools.partial(batcher.slot, "rgb"))
    examples = augment.augment_audio(examples, cfg=cfg, training=False, mel_mean=mel_mean, mel_std=mel_std,
                                     slot=functools.partial(batcher.slot, "spectrogram"))
    yield from batcher.batches(examples, pad=True)
