"""shards.input.order on plain lists: shard shuffle, host x worker split, shuffle buffer, saved positions."""

from __future__ import annotations

import copy
import itertools

import pytest

from shards.format.errors import ShardError
from shards.input import order


def shards_of(sizes: list[int]) -> list[list[str]]:
    """Shards as lists of sample names: shard i holds 'i:0', 'i:1', ..."""
    return [[f"{i}:{j}" for j in range(n)] for i, n in enumerate(sizes)]


def read_all(shards, stream, num_streams, *, epochs, seed=0, shuffle=True, pos=None, bad=None):
    pos = pos or order.Position()
    return order.read_stream(lambda i: iter(shards[i]), len(shards), stream=stream, num_streams=num_streams,
                             seed=seed, shuffle=shuffle, epochs=epochs, pos=pos,
                             on_bad_shard=bad or (lambda shard, e: pytest.fail(str(e))))


def test_streams_are_numpys_keyed_philox_and_interleave_without_mixing():
    import hashlib
    import threading

    import numpy as np

    def reference(*words):
        data = b"".join(w.to_bytes(8, "little") for w in words)
        key = int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")
        return np.random.Generator(np.random.Philox(key=key))

    def draws(a, b):  # two streams used in turn, as the input's stages do
        return [a.integers(100), b.uniform(0.5, 1.0), a.integers(100, size=3).tolist(), b.permutation(6).tolist(),
                a.random(), b.integers(7)]

    expected = draws(reference(1, 2), reference(3, 4))
    assert draws(order.rng(1, 2), order.rng(3, 4)) == expected
    other_thread = []
    thread = threading.Thread(target=lambda: other_thread.append(draws(order.rng(1, 2), order.rng(3, 4))))
    thread.start()
    thread.join()
    assert other_thread == [expected]


def test_shard_order_is_a_seeded_permutation_per_epoch():
    a = order.shard_order(50, seed=3, epoch=0, shuffle=True)
    assert sorted(a) == list(range(50))
    assert a == order.shard_order(50, seed=3, epoch=0, shuffle=True)
    assert a != order.shard_order(50, seed=3, epoch=1, shuffle=True)
    assert a != order.shard_order(50, seed=4, epoch=0, shuffle=True)
    assert order.shard_order(5, seed=3, epoch=7, shuffle=False) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("sizes", [[5, 3, 4, 6, 2, 5, 1, 4, 3], [4, 7, 2], [9], [0, 3, 0, 0, 5]])
def test_every_sample_once_per_epoch_across_2_hosts_x_2_workers(sizes):
    shards = shards_of(sizes)
    everything = sorted(s for shard in shards for s in shard)
    per_epoch: dict[int, list[str]] = {0: [], 1: []}
    for host, worker in itertools.product(range(2), range(2)):
        stream, num_streams = order.stream_of(host, 2, worker, 2)
        for (epoch, shard, index), name in read_all(shards, stream, num_streams, epochs=2):
            assert name == shards[shard][index]
            per_epoch[epoch].append(name)
    assert sorted(per_epoch[0]) == everything  # each exactly once: no duplicates, nothing missed
    assert sorted(per_epoch[1]) == everything


def test_fewer_shards_than_streams_never_leaves_a_stream_empty():
    shards = shards_of([3])  # one shard of 3 samples, 4 streams, training endlessly
    firsts = []
    for stream in range(4):
        got = list(itertools.islice(read_all(shards, stream, 4, epochs=None), 3))
        assert len(got) == 3  # it does not hang: samples of later epochs come round to it
        firsts.append(got[0])
    # over the concatenation of epochs, stream s takes samples s, s+4, s+8, ...: once each per epoch
    assert [ref for ref, _ in firsts] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (1, 0, 0)]


def test_stream_sizes_match_what_the_streams_read():
    sizes = [5, 3, 4, 6, 2, 5, 1]
    shards = shards_of(sizes)
    for num_streams in (2, 4, 8):
        expect = order.stream_sizes(sizes, seed=1, epoch=0, shuffle=True, num_streams=num_streams)
        got = [len(list(read_all(shards, s, num_streams, epochs=1, seed=1))) for s in range(num_streams)]
        assert got == expect and sum(got) == sum(sizes)


def test_a_saved_position_continues_exactly():
    shards = shards_of([4, 6, 3, 5])
    full = list(itertools.islice(read_all(shards, 1, 2, epochs=None), 20))
    pos = order.Position()
    it = read_all(shards, 1, 2, epochs=None, pos=pos)
    head = list(itertools.islice(it, 7))
    saved = copy.deepcopy(pos)
    tail = list(itertools.islice(read_all(shards, 1, 2, epochs=None, pos=saved), 13))
    assert head + tail == full


def test_a_bad_shard_is_reported_and_reading_goes_on():
    shards = shards_of([3, 3, 3])

    def open_shard(i):
        for j, name in enumerate(shards[i]):
            if i == 1 and j == 1:
                raise ShardError("shard 1: truncated")
            yield name

    bad = []
    got = list(order.read_stream(open_shard, 3, stream=0, num_streams=1, seed=0, shuffle=False, epochs=1,
                                 pos=order.Position(), on_bad_shard=lambda s, e: bad.append((s, str(e)))))
    assert [name for _, name in got] == ["0:0", "0:1", "0:2", "1:0", "2:0", "2:1", "2:2"]
    assert bad == [(1, "shard 1: truncated")]


def test_endless_reading_of_empty_shards_raises_instead_of_hanging():
    with pytest.raises(ShardError, match="read no sample in a whole epoch"):
        list(itertools.islice(read_all(shards_of([0, 0]), 0, 1, epochs=None), 1))


def test_shuffle_buffer_permutes_deterministically_and_restores():
    items = [{"i": i} for i in range(40)]

    def run(pos, buffer, source):
        return order.shuffle_buffer(iter(source), size=8, seed=5, stream=0, pos=pos, buffer=buffer)

    out = [x["i"] for x in run(order.Position(), [], items)]
    assert sorted(out) == list(range(40)) and out != list(range(40))
    assert out == [x["i"] for x in run(order.Position(), [], items)]
    # save after 10 emitted (30 items taken from upstream so far: 10 emitted + buffer), then continue
    pos, buffer = order.Position(), []
    it = run(pos, buffer, items)
    head = [next(it)["i"] for _ in range(10)]
    taken = len(head) + len(buffer)
    saved_pos, saved_buffer = copy.deepcopy(pos), copy.deepcopy(buffer)
    tail = [x["i"] for x in run(saved_pos, saved_buffer, items[taken:])]
    assert head + tail == out


def test_shuffle_buffer_keeps_groups_whole_and_size_1_keeps_order():
    items = [{"clip": c, "w": w, "last": w == 2} for c in range(4) for w in range(3)]
    pos, buffer = order.Position(), []
    it = order.shuffle_buffer(iter(items), size=0, seed=0, stream=0, pos=pos, buffer=buffer,
                              complete=lambda x: x["last"])
    first = next(it)
    assert first == items[0] and len(buffer) == 2  # the clip's other windows wait in the buffer
    assert [first, *it] == items
