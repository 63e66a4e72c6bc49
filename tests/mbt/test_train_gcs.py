"""A run directory in a bucket, against a GCS API server on this machine (tests/conftest.py's
gcs_bucket): training from gs:// shards into a gs:// workdir, resuming after SIGKILL from the bucket
with exactly the uninterrupted losses, then eval and report from the bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shards.format import storage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bucket_data(gcs_bucket, tmp_path_factory, make_clips, make_dataset) -> str:
    """16 clips in 2 webdataset shards, train and validation splits, copied into gs://BUCKET/train_ds."""
    folder = make_dataset(tmp_path_factory.mktemp("gcs_train"), make_clips(16), num_shards=2,
                          formats=("webdataset",))
    url = f"{gcs_bucket}/train_ds"
    for name in os.listdir(folder):
        storage.upload(os.path.join(folder, name), f"{url}/{name}")
    return url


def mbt(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def losses(workdir: str) -> dict[int, float]:
    """The last logged loss of every step (a restarted run logs again the steps it redoes)."""
    out = {}
    for line in storage.read_bytes(f"{workdir}/metrics.jsonl").decode().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
def test_a_run_in_the_bucket_resumes_after_sigkill_with_the_uninterrupted_losses(gcs_bucket, bucket_data,
                                                                                 tiny_train):
    args = ["train", "--data", bucket_data, "--no-progress", *tiny_train, "--optim.steps=8",
            "--run.checkpoint_every=2", "--run.tensorboard=true"]
    straight = f"{gcs_bucket}/runs/straight"
    p = mbt(*args, "--workdir", straight)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    names = storage.listdir(straight)
    assert {"config.json", "metrics.jsonl", "checkpoints", "tensorboard"} <= set(names)
    assert [n for n in storage.listdir(f"{straight}/tensorboard") if n.startswith("events.out.tfevents.")]
    assert sorted(storage.listdir(f"{straight}/checkpoints"), key=int) == ["4", "6", "8"]  # keep 3

    killed = f"{gcs_bucket}/runs/killed"
    p = mbt(*args, "--workdir", killed)
    deadline = time.time() + 600
    while storage.size(f"{killed}/checkpoints/4/commit_success.txt") is None and time.time() < deadline:
        assert p.poll() is None, p.stderr.read()  # still running when killed: a kill, not a finished run
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert storage.size(f"{killed}/checkpoints/8/commit_success.txt") is None
    p = mbt(*args, "--workdir", killed)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert losses(killed) == losses(straight) and len(losses(straight)) == 8


def test_eval_and_report_read_a_run_in_the_bucket(gcs_bucket, bucket_data, tiny_train, tmp_path, capsys):
    from tools.cli import main

    run = f"{gcs_bucket}/runs/eval"
    assert main(["train", "--data", bucket_data, "--no-progress", *tiny_train, "--optim.steps=2",
                 "--workdir", run]) == 0
    config_before = storage.read_bytes(f"{run}/config.json")
    capsys.readouterr()
    assert main(["eval", "--workdir", run, "--data", bucket_data, "--split", "train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 2 and result["clips"] > 0
    assert storage.read_bytes(f"{run}/config.json") == config_before  # eval leaves the run as it was

    assert main(["report", run, "--data", bucket_data, "--split", "train", "--clips", "1"]) == 0
    written = set(storage.listdir(f"{run}/report"))
    assert {"summary.json", "per_class_ap.csv", "per_class_ap.png"} <= written
    summary = json.loads(storage.read_bytes(f"{run}/report/summary.json"))
    assert summary["step"] == 2 and set(summary["files"]) <= written
    local = tmp_path / "report"
    assert main(["report", run, "--data", bucket_data, "--split", "train", "--clips", "1",
                 "--out", str(local)]) == 0
    assert (local / "per_class_ap.png").stat().st_size > 0
