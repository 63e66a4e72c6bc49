"""Which samples a loader stream reads, in what order: shard shuffle, host/worker split, shuffle buffer.

A *stream* is one loader worker on one host; a host with W workers runs streams
`process_index * W .. process_index * W + W - 1` of `process_count * W`. Every epoch the shard list
is permuted by (seed, epoch) — the same permutation on every host — and stream s reads shards
`perm[s::S]`, so each sample is read exactly once per epoch across all hosts and workers. With fewer
shards than streams every stream reads every shard and keeps sample number g of the epoch when
`g % S == s`: still exactly once, and no stream is left without data (an empty stream would hang a
multi-host step).

All randomness is counter-based (`rng(*words)`): a draw depends only on the seed and what it is
for, never on how much was drawn before. That makes the position of a stream a few integers plus
the references of the samples in its shuffle buffer, so a stream can be saved and restored exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shards.format.errors import ShardError

# What a draw is for: the first word after the seed, so the streams of numbers never overlap.
SHARDS, BUFFER, WINDOW, CROP, FLIP, COLOUR, SPEC = range(1, 8)

Ref = tuple[int, int, int]  # (epoch, shard id, sample index in the shard): names a read sample exactly

_MASK = (1 << 64) - 1


def rng(*words: int) -> "Draws":
    """A random stream determined by `words` alone: the same words give the same numbers in any process.

    Philox keyed by a hash of the words: counter-based, so a stream costs nothing to set up."""
    data = b"".join((int(w) & _MASK).to_bytes(8, "little") for w in words)
    return Draws(int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little"))


class Draws:
    """numpy's Generator draws (integers, uniform, random, permutation) on the Philox stream with this
    128-bit key, from counter 0: the numbers of `np.random.Generator(np.random.Philox(key=key))`.

    Making a numpy bit generator costs ~15 us, nearly all of it gathering OS entropy for a
    SeedSequence that a keyed Philox never uses, and the input makes several streams per example.
    So the streams of a thread share one Philox: a stream's state is put in when it draws after
    another stream did, and the other's taken out then (if it is still alive)."""

    __slots__ = ("_state", "__weakref__")

    def __init__(self, key: int):
        self._state = {"bit_generator": "Philox",
                       "state": {"counter": [0, 0, 0, 0], "key": [key & _MASK, (key >> 64) & _MASK]},
                       "buffer": [0, 0, 0, 0], "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}

    def _generator(self) -> np.random.Generator:
        local = _local.__dict__
        generator = local.get("generator")
        if generator is None:
            generator = local["generator"] = np.random.Generator(np.random.Philox(key=0))
        owner = local.get("owner")
        owner = owner and owner()
        if owner is not self:
            if owner is not None:  # (a stream that is gone needs no saving)
                owner._state = generator.bit_generator.state
            generator.bit_generator.state = self._state
            local["owner"] = weakref.ref(self)
        return generator

    def integers(self, *args, **kwargs):
        return self._generator().integers(*args, **kwargs)

    def uniform(self, *args, **kwargs):
        return self._generator().uniform(*args, **kwargs)

    def random(self, *args, **kwargs):
        return self._generator().random(*args, **kwargs)

    def permutation(self, *args, **kwargs):
        return self._generator().permutation(*args, **kwargs)


_local = threading.local()


def below(rng: Any, n: int) -> int:
    """A uniform integer in [0, n) from one double of `rng` (a Draws or numpy Generator): a third of the
    cost of numpy's `integers` for one number, and just as uniform for any n a sample index reaches."""
    return int(rng.random() * n)


def key_hash(key: str) -> int:
    """A stable 64-bit hash of a sample key (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The shard ids in the order an epoch reads them: a permutation of (seed, epoch), or as listed."""
    if not shuffle:
        return list(range(num_shards))
    return [int(i) for i in rng(seed, SHARDS, epoch).permutation(num_shards)]


def stream_of(process_index: int, process_count: int, worker: int, num_workers: int) -> tuple[int, int]:
    """(stream id, number of streams) of a host's worker."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} out of range for {num_workers} workers")
    return process_index * num_workers + worker, process_count * num_workers


def stream_split(order: list[int], stream: int, num_streams: int) -> tuple[list[int], bool]:
    """(the shards stream `stream` reads, whether it keeps only every num_streams-th sample of them)."""
    if len(order) >= num_streams:
        return order[stream::num_streams], False
    return list(order), True  # fewer shards than streams: split by sample


def stream_sizes(counts: list[int], *, seed: int, epoch: int, shuffle: bool, num_streams: int) -> list[int]:
    """Samples each stream reads in an epoch, from the shards' sample counts."""
    order = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    sizes = []
    for s in range(num_streams):
        shards, by_sample = stream_split(order, s, num_streams)
        total = sum(counts[i] for i in shards)
        sizes.append(len(range(s, total, num_streams)) if by_sample else total)
    return sizes


@dataclasses.dataclass
class Position:
    """Where a stream is: enough to continue exactly (with the shuffle buffer's refs)."""

    epoch: int = 0
    shard_pos: int = 0  # index into this epoch's shard list of the stream
    sample_pos: int = 0  # samples of that shard already read
    seen: int = 0  # samples read so far, all epochs (numbers the by-sample split)
    step: int = 0  # shuffle-buffer draws so far

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def read_stream(open_shard: Callable[[int], Iterable[Any]], num_shards: int, *, stream: int,
                num_streams: int, seed: int, shuffle: bool, epochs: int | None, pos: Position,
                on_bad_shard: Callable[[int, ShardError], None]) -> Iterator[tuple[Ref, Any]]:
    """(ref, sample) of every sample stream `stream` reads, epoch after epoch, from `pos` on.

    `open_shard(shard_id)` iterates a shard's samples. `pos` is advanced before each yield, so between
    yields it says exactly what has been read. The by-sample split numbers samples across epochs, so
    even a stream of a dataset smaller than the number of streams gets samples when training
    endlessly. A shard that fails part-way (ShardError) goes to `on_bad_shard` — which counts it, or
    raises — and reading continues with the next shard.
    """
    while epochs is None or pos.epoch < epochs:
        order = shard_order(num_shards, seed=seed, epoch=pos.epoch, shuffle=shuffle)
        shards, by_sample = stream_split(order, stream, num_streams)
        seen_before = pos.seen if pos.shard_pos == 0 and pos.sample_pos == 0 else None
        while pos.shard_pos < len(shards):
            shard = shards[pos.shard_pos]
            skip = pos.sample_pos
            try:
                for i, sample in enumerate(open_shard(shard)):
                    if i < skip:
                        continue  # read before a restore
                    pos.sample_pos, pos.seen, g = i + 1, pos.seen + 1, pos.seen
                    if not by_sample or g % num_streams == stream:
                        yield (pos.epoch, shard, i), sample
            except ShardError as e:
                if not by_sample or shard % num_streams == stream:  # count a shared shard once
                    on_bad_shard(shard, e)
            pos.shard_pos, pos.sample_pos = pos.shard_pos + 1, 0
        if seen_before == pos.seen and epochs is None:  # an endless loop over nothing would hang
            raise ShardError(f"loader stream {stream} of {num_streams} read no sample in a whole epoch "
                             f"(shards {shards[:5]}...): its shards are empty or unreadable")
        pos.epoch, pos.shard_pos = pos.epoch + 1, 0


def shuffle_buffer(items: Iterable[dict], *, size: int, seed: int, stream: int, pos: Position,
                   buffer: list[dict], complete: Callable[[dict], bool] = lambda item: True) -> Iterator[dict]:
    """Webdataset's shuffle: hold up to `size` samples, emit a random one as each new one arrives.

    `buffer` is the live buffer (pass the restored samples to continue a saved stream); draw n of
    stream s is `rng(seed, BUFFER, s, n)`, with n = `pos.step`. size <= 1 keeps the order (FIFO).
    Nothing is emitted until `complete(item)` says the last item taken ends its group (the windows of
    one clip), so a clip is never half in the buffer and half still upstream when a state is saved.
    """
    def draw() -> dict:
        r = below(rng(seed, BUFFER, stream, pos.step), len(buffer))
        pos.step += 1
        buffer[r], buffer[-1] = buffer[-1], buffer[r]
        return buffer.pop()

    while buffer and len(buffer) >= size:  # a restored buffer continues where it was saved
        yield buffer.pop(0) if size <= 1 else draw()
    for item in items:
        buffer.append(item)
        if not complete(item):
            continue
        while buffer and len(buffer) >= size:
            yield buffer.pop(0) if size <= 1 else draw()
    while buffer:
        yield buffer.pop(0) if size <= 1 else draw()
