"""mbt.input: host batches -> global jax.Arrays sharded over the mesh's data axis, prefetch of 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from mbt.input import batch_sharding, data_mesh, device_batches, to_global

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Counting:
    """A host iterator with state(): how many batches were taken from it."""

    def __init__(self, n, batch=4):
        self.taken, self.n, self.batch = 0, n, batch

    def __iter__(self):
        return self

    def __next__(self):
        if self.taken == self.n:
            raise StopIteration
        self.taken += 1
        b, i = self.batch, self.taken
        return {"rgb": np.full((b, 2, 3), i, np.float32), "labels": np.arange(b, dtype=np.int32) + 10 * i,
                "key": np.array([f"k{i}_{j}" for j in range(b)]), "mask": np.ones(b, np.float32)}

    def state(self):
        return {"taken": self.taken}


def test_batches_become_global_arrays_sharded_over_data():
    mesh = data_mesh()
    n = len(jax.devices())
    host = Counting(1, batch=2 * n)
    batch = to_global(next(host), batch_sharding(mesh))
    assert isinstance(batch["rgb"], jax.Array) and batch["rgb"].shape == (2 * n, 2, 3)
    expected = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    assert batch["rgb"].sharding.is_equivalent_to(expected, 3)
    assert isinstance(batch["key"], np.ndarray) and batch["key"][0] == "k1_0"  # keys stay on the host
    np.testing.assert_array_equal(np.asarray(batch["labels"]), np.arange(2 * n) + 10)


def test_prefetch_of_two_and_state_of_what_was_handed_out():
    host = Counting(5)
    feed = device_batches(host, data_mesh())
    assert feed.state() == {"taken": 0}
    first = next(feed)
    assert host.taken == 2 and feed.state() == {"taken": 1}  # one batch ahead in flight
    assert float(first["rgb"][0, 0, 0]) == 1
    rest = list(feed)
    assert [float(b["rgb"][0, 0, 0]) for b in rest] == [2, 3, 4, 5] and feed.state() == {"taken": 5}


def test_a_mesh_without_the_axis_is_a_clear_error():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("model",))
    with pytest.raises(ValueError, match="no 'data' axis"):
        device_batches(Counting(1), mesh)


def test_feeds_make_input_batches(tmp_path, make_clips, make_dataset):
    from shards.input import InputConfig, make_input

    folder = make_dataset(tmp_path / "d", make_clips(6), num_shards=2, formats=("webdataset",))
    n = len(jax.devices())
    cfg = InputConfig(batch_size=2 * n, num_frames=2, clip_seconds=1.0, crop_size=16)
    feed = device_batches(make_input(folder, cfg, seed=0), data_mesh())
    batch = next(feed)
    assert batch["rgb"].shape == (2 * n, 2, 16, 16, 3) and batch["spectrogram"].shape == (2 * n, 100, 128)
    assert feed.state()["batches"] == 1


def test_uint8_rgb_is_normalised_on_the_device():
    from shards.input.augment import normalize_rgb

    pixels = np.random.default_rng(0).integers(0, 256, (2 * len(jax.devices()), 2, 4, 4, 3), dtype=np.uint8)
    batch = to_global({"rgb": pixels, "mask": np.ones(len(pixels), np.float32)}, batch_sharding(data_mesh()))
    assert batch["rgb"].dtype == np.float32 and batch["rgb"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_allclose(np.asarray(batch["rgb"]), normalize_rgb(pixels), rtol=1e-5, atol=1e-5)


def test_symmetric_rgb_on_the_device_is_the_hosts_in_minus_one_to_one():
    from shards.input.augment import normalize_rgb

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16, 1).repeat(3, -1).repeat(len(jax.devices()), 0)
    batch = to_global({"rgb": pixels}, batch_sharding(data_mesh()), rgb_normalization="symmetric")
    device = np.asarray(batch["rgb"])
    np.testing.assert_allclose(device, normalize_rgb(pixels, normalization="symmetric"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(device, pixels / 127.5 - 1, rtol=0, atol=1e-6)
    assert device.min() >= -1.0 and device.max() <= 1.0


@pytest.mark.slow
def test_four_devices_each_hold_their_rows():
    # XLA's device count is fixed when the backend starts: check a 4-device mesh in a fresh process.
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, numpy as np
        from mbt.input import data_mesh, device_batches
        batches = [{"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3) + 100 * i} for i in range(3)]
        feed = device_batches(iter(batches), data_mesh())
        for i, b in enumerate(feed):
            shards = sorted(b["x"].addressable_shards, key=lambda s: s.index[0].start)
            assert len(shards) == 4, len(shards)
            for d, s in enumerate(shards):
                assert s.data.shape == (2, 3)
                np.testing.assert_array_equal(np.asarray(s.data), batches[i]["x"][2 * d:2 * d + 2])
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
