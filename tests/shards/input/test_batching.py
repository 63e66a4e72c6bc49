"""shards.input.batching: the batcher's slots (pixels written once, in place), padding, and its guard."""

from __future__ import annotations

import numpy as np
import pytest

from shards.input.batching import Batcher


def example(i, rgb):
    return {"__key__": f"k{i}", "rgb": rgb, "spectrogram": np.full((100, 128), i, np.float32), "labels": [i % 5],
            "verb": None, "noun": None, "window": 0, "frames_padded": 0, "spec_padded": 0}


def made_in_slots(batcher, n):
    for i in range(n):
        slot, spec = batcher.slot("rgb"), batcher.slot("spectrogram")
        slot[...], spec[...] = i + 1, i
        yield {**example(i, slot), "spectrogram": spec}


def test_examples_made_in_their_slots_are_batched_in_place_and_padded(small_input):
    batcher = Batcher(batch_size=4, cfg=small_input(rgb_uint8=True), num_classes=5)
    first, last = list(batcher.batches(made_in_slots(batcher, 6), pad=True))
    assert first["rgb"].dtype == np.uint8 and [int(first["rgb"][i].max()) for i in range(4)] == [1, 2, 3, 4]
    assert [int(last["rgb"][i].max()) for i in range(4)] == [5, 6, 0, 0] and last["mask"].tolist() == [1, 1, 0, 0]
    assert last["key"].tolist() == ["k4", "k5", "", ""] and last["spectrogram"][1].max() == 5
    assert first["rgb"].ctypes.data != last["rgb"].ctypes.data  # a new array per batch
    assert [float(first["spectrogram"][i].max()) for i in range(4)] == [0, 1, 2, 3]


def test_slots_are_the_batch_memory(small_input):
    batcher = Batcher(batch_size=2, cfg=small_input(rgb_uint8=True), num_classes=5)
    examples = []
    (batch,) = batcher.batches(examples.append(ex) or ex for ex in made_in_slots(batcher, 2))
    for name in ("rgb", "spectrogram"):  # written once, where the batch leaves from: no copy
        assert np.shares_memory(batch[name][1], examples[1][name])


def test_examples_made_elsewhere_are_copied_or_normalised(small_input):
    pixels = np.full((4, 32, 32, 3), 255, np.uint8)
    batcher = Batcher(batch_size=2, cfg=small_input(rgb_normalization="unit"), num_classes=5)
    (batch,) = batcher.batches([example(0, pixels), example(1, pixels)])
    assert batch["rgb"].dtype == np.float32 and np.allclose(batch["rgb"], 1.0)


def test_an_example_in_another_examples_slot_raises(small_input):
    batcher = Batcher(batch_size=4, cfg=small_input(rgb_uint8=True), num_classes=5)

    def held_back():  # takes two slots before either example is batched: both get slot 0
        a, b = example(0, batcher.slot("rgb")), example(1, batcher.slot("rgb"))
        yield a
        yield b

    with pytest.raises(RuntimeError, match="rgb was written into another example's batch slot"):
        list(batcher.batches(held_back(), pad=True))


def test_a_spectrogram_in_another_examples_slot_raises(small_input):
    batcher = Batcher(batch_size=4, cfg=small_input(rgb_uint8=True), num_classes=5)

    def held_back():
        a = {**example(0, np.zeros((4, 32, 32, 3), np.uint8)), "spectrogram": batcher.slot("spectrogram")}
        b = {**example(1, np.zeros((4, 32, 32, 3), np.uint8)), "spectrogram": batcher.slot("spectrogram")}
        yield a
        yield b

    with pytest.raises(RuntimeError, match="spectrogram was written into another example's batch slot"):
        list(batcher.batches(held_back(), pad=True))


def test_pool_reuses_a_block_only_after_every_array_of_its_batch_is_gone():
    from shards.input.batching import MemoryPool

    pool = MemoryPool({"rgb": ((2, 3), np.uint8), "spectrogram": ((4, 5), np.float32)})
    a = pool()
    assert a["rgb"].shape == (2, 3) and a["spectrogram"].dtype == np.float32
    assert a["spectrogram"].ctypes.data % 64 == 0
    a["rgb"][...] = 7
    kept = a["rgb"][1:]  # a view outlives the dict
    address = a["rgb"].ctypes.data
    del a
    b = pool()
    assert b["rgb"].ctypes.data != address and (kept == 7).all()  # still held: a new block
    second = b["rgb"].ctypes.data
    del kept, b
    assert len(pool.free) == 2  # both batches gone: both blocks back
    assert pool()["rgb"].ctypes.data in (address, second)
