"""Loader streams in worker processes (a torch DataLoader), and the shared memory their batches cross.

Each worker makes its batches in a ring of batch slots in shared memory that the main process
creates once: the video stage writes the pixels straight into a slot (see shards.input.batching), and the
worker sends only the slot's number, the small fields and its state. The main process lends the
slot to the caller: the batch's arrays view it, and a flag in shared memory gives it back to the
worker when the last of them is garbage (shards.input.batching.lend), so a batch crosses the process
boundary without a copy and is never overwritten while anything holds it. A caller that keeps more
than LEASES batches of a worker gets copies of the rest (into a shards.input.batching.MemoryPool), so the
worker always has a free slot: `prefetch` in flight + LEASES lent + 1. No batch pays for a new
shared-memory segment and its fresh pages (torch's default, one segment per batch, cost more CPU
than decoding the JPEGs did).

Workers start from a fork server (see `start_method`), which imports the script that created them,
as spawn does: guard a training script with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import functools
import time
from typing import Iterator

import numpy as np

from shards.format import storage
from shards.input.batching import Layout, MemoryPool, batch_arrays, lend
from shards.input.pipeline import Plan, Stream


LEASES = 2  # batches per worker the caller may hold in its slots; more are copied out


class Ring:
    """The batch slots of every worker of a host, made once in shared memory, and which are free."""

    def __init__(self, plan: Plan):
        import torch

        workers = plan.streams_per_host
        # in flight (one per DataLoader task a worker holds), lent to the caller, and one to spare
        slots = plan.cfg.prefetch + LEASES + 1
        arrays = batch_arrays(plan.batch_size, plan.cfg)
        self.layout = Layout(arrays)
        self.blocks = [[torch.empty(self.layout.nbytes, dtype=torch.uint8).share_memory_()
                        for _ in range(slots)] for _ in range(workers)]
        self.free = torch.ones((workers, slots), dtype=torch.int8).share_memory_()  # 1: the worker's
        self._free = self.free.numpy()  # the same flags, written from here (also at interpreter exit)
        self.pool = MemoryPool(arrays)
        self.lent = [0] * workers

    def __getstate__(self) -> dict:  # what a worker needs (the tensors cross as shared memory)
        return {"layout": self.layout, "blocks": self.blocks, "free": self.free}

    def take(self, local: int, item: dict) -> dict[str, np.ndarray]:
        """In the main process: worker `local`'s batch `item`. Its slot is lent to the caller (the
        arrays view it, and it goes back to the worker when the last of them is gone) unless the
        caller already holds LEASES of this worker's batches; then the batch is copied out."""
        k, block = item["slot"], self.blocks[local][item["slot"]].numpy()
        if self.lent[local] < LEASES:
            self.lent[local] += 1
            arrays = self.layout.views(lend(block, functools.partial(self._returned, local, k)))
        else:
            arrays = self.pool()
            for name, view in self.layout.views(block).items():
                np.copyto(arrays[name], view)
            self._free[local, k] = 1
        return {**item["batch"], **arrays}

    def _returned(self, local: int, k: int) -> None:
        self.lent[local] -= 1
        self._free[local, k] = 1


class _WorkerSlots:
    """In a worker: hands its batcher a free slot of its ring (shards.input.batching.Allocate)."""

    def __init__(self, ring: Ring, local: int):
        self.arrays = [ring.layout.views(block.numpy()) for block in ring.blocks[local]]
        self.free = ring.free.numpy()[local]  # a view of the shared flags
        self.next = 0

    def __call__(self) -> dict[str, np.ndarray]:
        while True:
            for i in range(len(self.arrays)):
                k = (self.next + i) % len(self.arrays)
                if self.free[k]:
                    self.free[k], self.next = 0, k + 1
                    return self.arrays[k]
            time.sleep(0.001)  # every slot is in flight or lent: wait for the caller

    def slot_of(self, batch: dict) -> int:
        return next(k for k, a in enumerate(self.arrays) if a["rgb"] is batch["rgb"])


def make_loader(plan: Plan, states: list, first: int, ring: Ring):
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
        context.set_forkserver_preload(["torch", "numpy", "cv2", "shards.input.pipeline", __name__])
    return context


def worker_error_message(text: str) -> str:
    """The worker's own message out of torch's re-raised text ('Caught ShardError in DataLoader worker
    process 0. Original Traceback (most recent call last): ... shards.format.errors.ShardError: MESSAGE')."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split("ShardError: ", 1)[-1]


def _identity(x):
    return x


def _stream_dataset_iter(self) -> Iterator[dict]:
    import torch.utils.data

    worker = torch.utils.data.get_worker_info().id
    local = (self.first + worker) % self.plan.streams_per_host
    slots = _WorkerSlots(self.ring, local)
    storage.use_environment(self.env)
    for batch, state in Stream(self.plan, local, self.states[local], allocate=slots):
        small = {k: v for k, v in batch.items() if k not in self.ring.layout.places}  # (the rest is in the slot)
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
            self.env = storage.environment()

        cls = type("_StreamDataset", (torch.utils.data.IterableDataset,),
                   {"__init__": init, "__iter__": _stream_dataset_iter, "__module__": __name__})
        globals()["_StreamDataset"] = cls
    return cls


def __getattr__(name: str):
    if name == "_StreamDataset":
        return _stream_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
