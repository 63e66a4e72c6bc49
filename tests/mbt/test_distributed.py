"""Two JAX processes over gloo on this machine: the same losses as one process with two devices,
checkpoints that restore in one process, and fast, named failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_clips, make_dataset) -> str:
    return make_dataset(tmp_path_factory.mktemp("dist_data"), make_clips(16), num_shards=4,
                        formats=("webdataset",))


def launch(data: str, workdir: Path, port: int, tiny_train: list[str], extra=(), ids=(0, 1)) -> list[subprocess.Popen]:
    return [subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "train", "--data", data, "--workdir", str(workdir),
         "--no-progress", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i), "--init-timeout", "30", *tiny_train, *extra],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in ids]


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices_and_restore_in_one(data, tmp_path, tiny_train):
    # Launching two processes on a port picked beforehand can lose a race for that port (or a gloo
    # connection on a loaded machine); such a launch failure is retried once, on a new port and run
    # directory, with the first attempt's errors kept in a warning. A loss mismatch is never retried.
    for attempt in (1, 2):
        workdir = tmp_path / f"run{attempt}"
        procs = launch(data, workdir, free_port(), tiny_train, ["--optim.steps=3", "--run.checkpoint_every=3"])
        codes = [p.wait(timeout=600) for p in procs]
        if codes == [0, 0]:
            break
        errors = "\n".join(p.stderr.read()[-3000:] for p in procs)
        assert attempt == 1, f"exit codes {codes}:\n{errors}"
        warnings.warn(f"2-process launch failed (exit codes {codes}), retrying once:\n{errors}")
    two = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]

    # One process, two virtual devices, fed the same global batches: host 0's slice then host 1's.
    script = f"""
import jax, numpy as np
from mbt.input import data_mesh, to_global
from mbt.train import init_state, plan_run, train_step
from mbt.train_config import get_config
from shards.input import make_input
cfg = plan_run(get_config("tiny", {tiny_train + ["--optim.steps=3"]!r}), {data!r}).cfg
mesh = data_mesh()
rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
state = jax.device_put(init_state(cfg, 3, 4, cfg.run.seed), rep)
hosts = [make_input({data!r}, cfg.input, seed=cfg.run.seed, process_index=i, process_count=2) for i in (0, 1)]
losses = []
for _ in range(3):
    parts = [next(h) for h in hosts]
    batch = to_global({{k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "key"}}, shard)
    state, m = train_step(state, batch, jax.random.key(cfg.run.seed + 1), cfg=cfg, total_steps=3,
                          steps_per_epoch=4)
    losses.append(float(m["loss"]))
print(losses)
"""
    env = {**ENV, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(two) == 3 and two == pytest.approx(one, rel=2e-5)

    # The 2-process checkpoint restores in a single process.
    r = subprocess.run([sys.executable, "-m", "tools.cli", "eval", "--workdir", str(workdir), "--data", data,
                        "--split", "train"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "eval: 16 clips" in r.stdout, r.stderr[-3000:]


def test_an_unreachable_coordinator_is_a_named_error_not_a_hang(data, tmp_path, tiny_train):
    port = free_port()
    t0 = time.time()
    (p,) = launch(data, tmp_path / "run", port, tiny_train, ["--init-timeout=5"], ids=(1,))
    assert p.wait(timeout=120) == 2
    err = p.stderr.read().strip().splitlines()
    assert f"127.0.0.1:{port}" in err[-1] and "Traceback" not in "\n".join(err)
    assert time.time() - t0 < 90


@pytest.mark.slow
def test_processes_that_disagree_on_the_config_both_stop_naming_the_field(data, tmp_path, tiny_train):
    port = free_port()
    p0, = launch(data, tmp_path / "run", port, tiny_train, ["--optim.steps=2"], ids=(0,))
    p1, = launch(data, tmp_path / "run", port, tiny_train, ["--optim.steps=2", "--optim.base_lr=0.1"], ids=(1,))
    assert p1.wait(timeout=300) == 2 and p0.wait(timeout=300) == 2
    assert "optim.base_lr: process 0 has 0.2, process 1 has 0.1" in p1.stderr.read()
    assert "differ from process 0" in p0.stderr.read()
