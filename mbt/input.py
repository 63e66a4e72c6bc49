"""The device feed: host batches from shards.input -> global jax.Arrays sharded over the mesh's batch axis.

    feed = device_batches(make_input(...), mesh)       # mesh has a "data" axis
    for batch in feed:                                 # batch["rgb"]: jax.Array [global B, F, H, W, 3]
        state, metrics = train_step(state, batch)
        ... checkpoint feed.state() with the model ...

Each host passes its own slice of the global batch (make_input gives batch_size / process_count per
host); `jax.make_array_from_process_local_data` assembles them into one array sharded with
`NamedSharding(mesh, P("data"))`. Two batches are kept in flight: placement is asynchronous, so the
copy of the next batch overlaps the current step. Fields that are not numbers (`key`) stay on the
host as numpy, host-local. `feed.state()` is the input state *after the last batch handed out*, not
after the prefetched ones, so a checkpoint restores exactly to the step it was taken at.

With InputConfig(rgb_uint8=True), which the training presets set, the host ships raw uint8 pixels
(a quarter of the bytes written by the loader, through worker shared memory and to the device) and
the feed normalises them here, on the device, with the same affine map the host would have used
(InputConfig.rgb_normalization: shards.input.augment.rgb_affine; pass it as `rgb_normalization`).
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding of a batch: leading dimension split over `axis`, replicated over the other axes."""
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh axes {mesh.axis_names} have no {axis!r} axis to shard the batch over")
    return NamedSharding(mesh, P(axis))


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding, *,
              rgb_normalization: str = "imagenet") -> dict[str, Any]:
    """One host's slice of a batch -> global jax.Arrays (numeric fields); other fields unchanged.

    uint8 `rgb` (InputConfig.rgb_uint8) arrives as float32, normalised on the device as
    `rgb_normalization` (InputConfig.rgb_normalization) says."""
    out: dict[str, Any] = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "biuf":
            out[name] = jax.make_array_from_process_local_data(sharding, value)
        else:
            out[name] = value  # strings (keys): host-local, never on the device
    if "rgb" in out and out["rgb"].dtype == np.uint8:
        out["rgb"] = _rgb_normalizer(rgb_normalization)(out["rgb"])
    return out


@functools.lru_cache(maxsize=None)
def _rgb_normalizer(normalization: str):
    """A jitted uint8 -> float32 map, the host's affine map (shards.input.augment.rgb_affine)."""
    from shards.input.augment import rgb_affine

    scale, offset = rgb_affine(normalization)

    @jax.jit
    def normalize(rgb: jax.Array) -> jax.Array:
        return rgb.astype(np.float32) * scale + offset  # elementwise: keeps the batch sharding

    return normalize


class DeviceFeed:
    """Iterator of device batches with a prefetch of `prefetch`; `state()` matches what was handed out."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]], mesh: Mesh, *, axis: str = "data",
                 prefetch: int = 2, rgb_normalization: str = "imagenet"):
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._rgb_normalization = rgb_normalization
        self._source = batches
        self._it: Iterator = iter(batches)
        self._sharding = batch_sharding(mesh, axis)
        self._prefetch = prefetch
        self._queue: collections.deque = collections.deque()
        self._state = self._source_state()

    def __iter__(self) -> "DeviceFeed":
        return self

    def __next__(self) -> dict[str, Any]:
        while len(self._queue) < self._prefetch:
            try:
                host = next(self._it)
            except StopIteration:
                break
            self._queue.append((to_global(host, self._sharding, rgb_normalization=self._rgb_normalization),
                                self._source_state()))
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.popleft()
        return batch

    def state(self) -> dict | None:
        """The input state after the last batch returned (None when the source has no state())."""
        return self._state

    def _source_state(self) -> dict | None:
        state = getattr(self._source, "state", None)
        return state() if callable(state) else None


def device_batches(batches: Iterable[dict[str, np.ndarray]], mesh: Mesh, *, axis: str = "data",
                   prefetch: int = 2, rgb_normalization: str = "imagenet") -> DeviceFeed:
    """Feed host batches (e.g. shards.input.make_input) onto `mesh`, batch dimension over `axis`;
    uint8 RGB normalised as `rgb_normalization` (the input's InputConfig.rgb_normalization)."""
    return DeviceFeed(batches, mesh, axis=axis, prefetch=prefetch, rgb_normalization=rgb_normalization)


def data_mesh(devices: list | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh over all (or the given) devices, for pure data parallelism."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (axis,))
