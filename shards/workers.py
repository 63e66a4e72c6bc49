"""Loader streams in worker processes (a torch DataLoader), and the shared memory their batches cross.

Each worker makes its batches in a ring of `prefetch + 1` batch slots in shared memory that the
main process creates once: the video stage writes the pixels straight into a slot (see
shards.batching), the worker sends only the slot's number, the small fields and its state, and the
main process copies the large arrays out and releases the slot (a counter per worker, also in
shared memory), into a shards.batching.MemoryPool. The memory is mapped once and reused: no batch
pays for a new shared-memory segment and its fresh pages (torch's default, one segment per batch,
cost more CPU than decoding the JPEGs did), and the caller's batches are its own arrays, never
overwritten. A worker waits for
a free slot only if the caller has not taken its batches; with the DataLoader's `prefetch` tasks
per worker that never happens.

Workers start from a fork server (see `start_method`), which imports the script that created them,
as spawn does: guard a training script with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from shards.batching import MemoryPool, batch_arrays

if TYPE_CHECKING:
    from shards.stream import _Plan


class Ring:
    """The batch slots of every worker of a host, and how many batches of each the caller has taken."""

    def __init__(self, plan: "_Plan"):
        import torch

        self.size = plan.cfg.prefetch + 1
        shapes = batch_arrays(plan.batch_size, plan.cfg)
        self.slots = [[{name: _shared(shape, dtype) for name, (shape, dtype) in shapes.items()}
                       for _ in range(self.size)] for _ in range(plan.streams_per_host)]
        self.released = torch.zeros(plan.streams_per_host, dtype=torch.int64).share_memory_()
        self.pool = MemoryPool(shapes)

    def take(self, local: int, item: dict) -> dict[str, np.ndarray]:
        """In the main process: worker `local`'s batch `item` as arrays of its own; frees its slot."""
        batch = {**item["batch"], **self.pool()}
        for name, tensor in self.slots[local][item["slot"]].items():
            np.copyto(batch[name], tensor.numpy())
        self.released[local] += 1
        return batch


class _WorkerSlots:
    """In a worker: hands its batcher the next free slot of its ring (shards.batching.Allocate)."""

    def __init__(self, ring: Ring, local: int):
        self.arrays = [{name: t.numpy() for name, t in slot.items()} for slot in ring.slots[local]]
        self.released, self.local, self.made = ring.released, local, 0

    def __call__(self) -> dict[str, np.ndarray]:
        while self.made - int(self.released[self.local]) >= len(self.arrays):
            time.sleep(0.001)  # every slot holds a batch the caller has not taken yet
        arrays = self.arrays[self.made % len(self.arrays)]
        self.made += 1
        return arrays

    def slot_of(self, batch: dict) -> int:
        return next(k for k, a in enumerate(self.arrays) if a["rgb"] is batch["rgb"])


def make_loader(plan: "_Plan", states: list, first: int, ring: Ring):
    import torch.utils.data

    return torch.utils.data.DataLoader(
        _stream_dataset_class()(plan, states, first, ring), batch_size=None, num_workers=plan.streams_per_host,
        collate_fn=_identity, prefetch_factor=plan.cfg.prefetch,
        multiprocessing_context=start_method(plan.cfg.start_method))


def start_method(name: str | None):
    """The workers' multiprocessing context. Default: forkserver where there is one. A trainer's process
    runs JAX's (and TensorFlow's) threads, and forking a threaded process can deadlock the child; the
    fork server is a clean single-threaded process that imported torch and this module once, so
    workers still start in well under a second."""
    import multiprocessing

    if name is None:
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return None
        name = "forkserver"
    context = multiprocessing.get_context(name)
    if name == "forkserver":
        context.set_forkserver_preload(["torch", "numpy", "cv2", "shards.stream", __name__])
    return context


def _identity(x):
    return x


def _shared(shape: tuple, dtype: Any):
    import torch

    return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype).share_memory_()


def _stream_dataset_iter(self) -> Iterator[dict]:
    import torch.utils.data

    from shards.stream import _Stream

    worker = torch.utils.data.get_worker_info().id
    local = (self.first + worker) % self.plan.streams_per_host
    slots = _WorkerSlots(self.ring, local)
    for batch, state in _Stream(self.plan, local, self.states[local], allocate=slots):
        small = {k: v for k, v in batch.items() if k not in ("rgb", "spectrogram")}
        yield {"stream": local, "slot": slots.slot_of(batch), "batch": small, "state": state}


def _stream_dataset_class() -> type:
    """torch's IterableDataset must be subclassed, but importing torch at the top would slow every
    import of shards: the class is made on first use, as the module attribute `_StreamDataset`, so
    a worker started by spawn/forkserver still finds it by name when unpickling."""
    cls = globals().get("_StreamDataset")
    if cls is None:
        import torch.utils.data

        def init(self, plan, states, first, ring):
            self.plan, self.states, self.first, self.ring = plan, states, first, ring

        cls = type("_StreamDataset", (torch.utils.data.IterableDataset,),
                   {"__init__": init, "__iter__": _stream_dataset_iter, "__module__": __name__})
        globals()["_StreamDataset"] = cls
    return cls


def __getattr__(name: str):
    if name == "_StreamDataset":
        return _stream_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
