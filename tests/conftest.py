"""Test data shared by every package's tests: synthetic clips with real JPEG frames, written as shard
datasets the way `mbt ingest` writes them (no ffmpeg or Beam needed)."""

from __future__ import annotations

import io
import os

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.format.schema import Sample

# The test models are tiny, so XLA's compile time dominates; skip LLVM's expensive passes (here and
# in the subprocesses tests start, which inherit the environment). Set before JAX is first imported.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true"]))
# Compiled programs are shared between the tests' processes (a killed and a restarted trainer compile
# the same step): JAX's persistent compilation cache, in a folder of this test session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"mbt-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# ------------------------------------------------------------------ datasets for the training input

CLASSES = ["dog", "bell", "rain", "car", "voice"]


def frame_jpeg(i: int, rng: np.random.Generator, width: int = 64, height: int = 48) -> bytes:
    """A JPEG whose brightness says its frame number (4 grey levels per frame), over a little noise."""
    base = np.full((height, width, 3), min(4 * i, 240), np.int16)
    pixels = np.clip(base + rng.integers(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def clip_sample(key: str, seconds: float = 2.0, *, labels: tuple[int, ...] = (0,), seed: int = 0,
                verb: int | None = None, noun: int | None = None, width: int = 64, height: int = 48) -> Sample:
    """A clip of `seconds` at 25 fps: frame i is grey level ~4i; spectrogram row j holds j/100 (its time)."""
    rng = np.random.default_rng(seed)
    frames = [frame_jpeg(i, rng, width, height) for i in range(round(25 * seconds))]
    rows = round(100 * seconds)
    mel = np.repeat(np.arange(rows, dtype=np.float32)[:, None] / 100, 128, axis=1)
    mel += rng.normal(0, 0.01, mel.shape).astype(np.float32)
    return Sample(key=key, frames=frames, melspec=mel.astype(np.float32), labels=list(labels),
                  label_text=[CLASSES[i % len(CLASSES)] for i in labels],
                  meta={"source": f"/v/{key}.mp4", "start": 0.0, "end": seconds, "fps": 25,
                        "num_frames": len(frames), "has_audio": True},
                  verb=verb, noun=noun).validate()


def write_dataset(folder, samples, num_shards: int, formats=("webdataset", "tfrecord"), split: str = "train",
                  classes=CLASSES) -> str:
    """Shards of `samples` (stable key -> shard hash, key order inside) plus SPLIT.index.json, as
    `mbt ingest` writes them (the fields shards.format.dataset_index and the training input read)."""
    import json
    import os

    from shards.format.naming import assign_shard, shard_name
    from shards.format.tfrecord_codec import write_tfrecord
    from shards.format.webdataset_codec import write_webdataset

    os.makedirs(folder, exist_ok=True)
    groups = [sorted((s for s in samples if assign_shard(s.key, num_shards) == i), key=lambda s: s.key)
              for i in range(num_shards)]
    writers = {"webdataset": write_webdataset, "tfrecord": write_tfrecord}
    shards = {}
    for fmt in formats:
        shards[fmt] = []
        for i, group in enumerate(groups):
            name = shard_name(split, i, num_shards, fmt)
            with open(os.path.join(folder, name), "wb") as f:
                writers[fmt](f, group)
            shards[fmt].append({"path": name, "shard": i, "samples": len(group),
                                "bytes": os.path.getsize(os.path.join(folder, name))})
    mels = np.concatenate([s.melspec for s in samples])
    index = {"index_version": 1, "split": split, "formats": list(formats), "num_shards": num_shards,
             "shards": shards, "num_samples": len(samples), "classes": list(classes),
             "mel_mean": float(mels.mean()), "mel_std": float(mels.std()),
             "mel_mean_per_bin": mels.mean(0).tolist(), "mel_std_per_bin": mels.std(0).tolist(),
             "failures_file": f"{split}.failures.jsonl"}
    with open(os.path.join(folder, f"{split}.index.json"), "w") as f:
        json.dump(index, f)
    return str(folder)


def clips(n: int, seed: int = 0) -> list[Sample]:
    """n clips of 1-3 s with 1-2 labels each; keys k00, k01, ..."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = tuple(sorted({int(x) for x in rng.integers(0, len(CLASSES), 1 + i % 2)}))
        out.append(clip_sample(f"k{i:02d}", seconds=[1.0, 2.0, 3.0][i % 3], labels=labels, seed=seed + i))
    return out


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> str:
    """A 20-clip dataset in 4 shards, in both encodings, with its index (built once per session)."""
    return write_dataset(tmp_path_factory.mktemp("dataset"), clips(20), num_shards=4)


@pytest.fixture
def small_input():
    """An InputConfig for fast tests: 4 frames over 1 s, 32 px crops, batches of 4."""
    from shards.input import InputConfig

    def make(**overrides) -> "InputConfig":
        base = dict(batch_size=4, num_frames=4, clip_seconds=1.0, crop_size=32, shuffle_buffer=6,
                    time_mask_max=20, freq_mask_max=16)
        return InputConfig(**{**base, **overrides})

    return make


# The helpers as fixtures: test modules can't `import conftest` (tests/mbt has one too).
@pytest.fixture(scope="session")
def make_clip():
    """make_clip(key, seconds=2.0, labels=(0,), seed=0, verb=None, noun=None) -> a Sample (see clip_sample)."""
    return clip_sample


@pytest.fixture(scope="session")
def make_clips():
    """make_clips(n, seed=0) -> n clips of 1-3 s, keys k00, k01, ..."""
    return clips


@pytest.fixture(scope="session")
def make_dataset():
    """make_dataset(folder, samples, num_shards, formats=(...), split="train") -> folder with shards + index."""
    return write_dataset


# A 2-layer model on 2 frames of 32 px and 0.64 s of spectrogram, multi-label over CLASSES: the
# `tiny` train preset shrunk further, for trainer tests (as `--section.field=value` overrides).
TINY_TRAIN = ["--model.depth=2", "--model.width=32", "--model.num_heads=2", "--model.mlp_dim=64",
              "--model.num_frames=2", "--model.image_size=32", "--model.spectrogram_frames=64",
              "--model.fusion_layer=1", "--model.head=multilabel", "--input.labels=multi_hot",
              "--input.num_frames=2", "--input.crop_size=32", "--input.clip_seconds=0.64",
              "--input.batch_size=4", "--input.shuffle_buffer=8", "--input.time_mask_max=10",
              "--input.freq_mask_max=8", "--run.log_every=1", "--optim.mixup_alpha=0.3",
              "--run.tensorboard=false"]


@pytest.fixture(scope="session")
def tiny_train() -> list[str]:
    """Overrides that make the `tiny` train preset small enough for a test (see TINY_TRAIN)."""
    return list(TINY_TRAIN)


# ------------------------------------------------------------------ gs:// against a GCS API on this machine

@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(size)`: a folder on a file system of its own of `size` (tmpfs, e.g. "4k", "3m"), a
    real disk to fill; unmounted after the test. Skips the test where this machine can't mount one."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """A real GCS API server (PyPI gcp-storage-emulator) on a free localhost port with one bucket, that
    every client of the project reaches (tools.gcs_emulator). Yields "gs://BUCKET"."""
    from tools.gcs_emulator import gcs_emulator

    with gcs_emulator("mbt-test", str(tmp_path_factory.mktemp("gcs") / "emulator.log")) as bucket:
        yield bucket
