"""Examples -> fixed-shape batches: the label check, and the batcher that owns each batch's memory.

The batcher hands out the slots of the next example in the batch being made (`slot("rgb")`,
`slot("spectrogram")`), and the video and audio stages (shards.input.augment) write that example's frames
and normalised spectrogram straight into them: the large arrays are written once, into the memory the
batch leaves in (in a loader worker, a reused shared-memory slot; see shards.input.workers). Only the small
fields are collated when the batch is full.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from shards.format.errors import ShardError
from shards.format.schema import NUM_MEL_BINS
from shards.input import augment, sampling

if TYPE_CHECKING:
    from shards.input.config import InputConfig

# allocate(cfg-shaped arrays) -> {"rgb": [B, F, S, S, 3], "spectrogram": [B, 100 t, 128]} of one batch
Allocate = Callable[[], dict[str, np.ndarray]]


def batch_arrays(batch_size: int, cfg: "InputConfig") -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of the large arrays of a batch: RGB (uint8, or float32 normalised) and spectrogram."""
    size = cfg.crop_size
    return {"rgb": ((batch_size, cfg.num_frames, size, size, 3), np.uint8 if cfg.rgb_uint8 else np.float32),
            "spectrogram": ((batch_size, cfg.spectrogram_rows, NUM_MEL_BINS), np.float32)}


def check_labels(samples: Iterable[dict], *, kind: str, num_classes: int | None,
                 on_error: sampling.OnError = sampling.raise_error) -> Iterator[dict]:
    """Stage: pass examples whose labels fit `kind` and the vocabulary; the others go to on_error."""
    for ex in samples:
        labels, problem = ex["labels"], None
        if kind == "verb_noun":
            if ex["verb"] is None or ex["noun"] is None:
                problem = "has no verb/noun labels (labels='verb_noun' is for EPIC-Kitchens shards)"
        elif kind == "class_index" and len(labels) != 1:
            problem = f"has {len(labels)} labels {labels}; labels='class_index' needs exactly one"
        elif num_classes is not None and any(i >= num_classes for i in labels):
            problem = f"has label {max(labels)} outside the {num_classes} classes"
        if problem:
            on_error("bad_label", ex, ShardError(f"shard {ex['__shard__']}, sample {ex['__key__']} {problem}"))
            continue
        yield ex


class Layout:
    """Where the large arrays of a batch lie in one block of bytes (each 64-byte aligned)."""

    def __init__(self, arrays: dict[str, tuple[tuple[int, ...], type]]):
        self.places, offset = {}, 0
        for name, (shape, dtype) in arrays.items():
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            self.places[name] = (offset, nbytes, shape, dtype)
            offset += -(-nbytes // 64) * 64
        self.nbytes = offset

    def views(self, block: np.ndarray) -> dict[str, np.ndarray]:
        return {name: block[offset:offset + nbytes].view(dtype).reshape(shape)
                for name, (offset, nbytes, shape, dtype) in self.places.items()}


class MemoryPool:
    """The memory of batches, reused once the caller has dropped every array of a batch.

    A fresh array's pages cost a kernel fault and a clearing on first touch (here about as much as
    writing them); a block from the pool costs nothing. A block goes back to the pool only when the
    last array viewing it is garbage (see `lend`), so batches a caller keeps stay intact, and the pool
    makes new blocks for the next.
    """

    def __init__(self, arrays: dict[str, tuple[tuple[int, ...], type]]):
        self.layout, self.free = Layout(arrays), []

    def __call__(self) -> dict[str, np.ndarray]:
        block = self.free.pop() if self.free else _aligned(self.layout.nbytes)
        return self.layout.views(lend(block, functools.partial(self.free.append, block)))


def lend(block: np.ndarray, returned: Callable[[], None]) -> np.ndarray:
    """`block` as a new array whose views all share one owner; `returned()` runs once the last is gone."""
    return np.asarray(_Owner(block, returned))


def _aligned(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes]


class _Owner:
    """The base of the arrays lent from a block; its end (the last array gone) calls `returned`."""

    def __init__(self, block: np.ndarray, returned: Callable[[], None]):
        self.__array_interface__ = block.__array_interface__
        self.block, self.returned = block, returned

    def __del__(self):
        self.returned()


class Batcher:
    """Makes one stream's batches, dicts of fixed-shape numpy arrays; slots past the examples of a
    (last) batch are zeros with mask 0.

    `slot(name)` is where the next example's `name` array goes. The stages between the first one that
    asks for a slot and `batches()` must pass examples one at a time (plain generators do), so that
    the example asking for a slot is the next one batched; an example found in another example's
    slot raises.
    """

    def __init__(self, *, batch_size: int, cfg: "InputConfig", num_classes: int | None,
                 allocate: Allocate | None = None):
        self.batch_size, self.cfg, self.num_classes = batch_size, cfg, num_classes
        self.allocate = allocate or MemoryPool(batch_arrays(batch_size, cfg))
        self.arrays: dict[str, np.ndarray] | None = None  # of the batch being made
        self.slots: dict[tuple[str, int], np.ndarray] = {}  # (array, place in it) -> the slot handed out
        self.chunk: list[dict] = []

    def slot(self, name: str) -> np.ndarray:
        """The next example's slot in the batch being made: of "rgb" [F, S, S, 3] or "spectrogram" [100 t, 128]."""
        if self.arrays is None:
            self.arrays = self.allocate()
        slot = self.slots[name, len(self.chunk)] = self.arrays[name][len(self.chunk)]
        return slot

    def batches(self, examples: Iterable[dict], *, pad: bool = False, target: int | None = None,
                done: int = 0) -> Iterator[dict]:
        """Stage: examples -> batches. pad=True (a finite stream) pads the last batch and then adds
        all-padding batches until `target` batches were made (counting `done` made before a restore)."""
        made = done
        for ex in examples:
            self.chunk.append(ex)
            if len(self.chunk) == self.batch_size:
                made += 1
                yield self._finish()
        while pad and (self.chunk or (target is not None and made < target)):
            made += 1
            yield self._finish()

    def _finish(self) -> dict[str, np.ndarray]:
        arrays = self.arrays if self.arrays is not None else self.allocate()
        examples, slots, self.arrays, self.chunk, self.slots = self.chunk, self.slots, None, [], {}
        cfg, size, n = self.cfg, self.batch_size, len(examples)
        rgb, spec = arrays["rgb"], arrays["spectrogram"]
        for i, ex in enumerate(examples):
            for name, into in (("rgb", rgb), ("spectrogram", spec)):
                made = ex[name]
                if made is slots.get((name, i)):
                    continue  # made in its slot
                if np.may_share_memory(made, into):
                    raise RuntimeError(f"an example's {name} was written into another example's batch slot: "
                                       f"a stage between augment and the batcher held examples back")
                if name == "rgb" and made.dtype != into.dtype:  # uint8 pixels into a float32 batch
                    augment.normalize_rgb(made, out=into[i], normalization=cfg.rgb_normalization)
                else:  # made elsewhere (the augment stages without a slot)
                    into[i] = made
        rgb[n:], spec[n:] = 0, 0
        ints = lambda name: np.array([ex[name] for ex in examples] + [0] * (size - n), np.int32)
        batch = {"rgb": rgb, "spectrogram": spec}
        if cfg.labels == "multi_hot":
            batch["labels"] = np.zeros((size, self.num_classes), np.float32)
            for i, ex in enumerate(examples):
                batch["labels"][i, ex["labels"]] = 1
        elif cfg.labels == "class_index":
            batch["labels"] = np.array([ex["labels"][0] for ex in examples] + [0] * (size - n), np.int32)
        else:
            batch["verb"], batch["noun"] = ints("verb"), ints("noun")
        batch["key"] = np.array([ex["__key__"] for ex in examples] + [""] * (size - n), dtype=str)
        batch["mask"] = (np.arange(size) < n).astype(np.float32)
        batch["window"] = ints("window")
        batch["frames_padded"], batch["spec_padded"] = ints("frames_padded"), ints("spec_padded")
        return batch
