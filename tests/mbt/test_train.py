"""The trainer on CPU: resumable to the bit after SIGKILL, data-parallel equal to one device, loud on NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def data(tmp_path_factory, make_clips, make_dataset) -> str:
    return make_dataset(tmp_path_factory.mktemp("train_data"), make_clips(16), num_shards=2,
                               formats=("webdataset",))


def mbt(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def losses(workdir: Path) -> dict[int, float]:
    """The last logged loss of every step (a restarted run logs again the steps it redoes)."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
def test_a_killed_run_resumes_with_exactly_the_uninterrupted_losses(data, tmp_path, tiny_train):
    args = ["train", "--data", data, "--no-progress", *tiny_train, "--optim.steps=8", "--run.checkpoint_every=2"]
    straight = tmp_path / "straight"
    p = mbt(*args, "--workdir", str(straight))
    assert p.wait(timeout=600) == 0, p.stderr.read()

    killed = tmp_path / "killed"
    p = mbt(*args, "--workdir", str(killed))
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "4").is_dir() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it was killed: " + p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert (killed / "checkpoints" / "4").is_dir() and not (killed / "checkpoints" / "8").exists()
    p = mbt(*args, "--workdir", str(killed))
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert losses(killed) == losses(straight) and len(losses(straight)) == 8


def test_sigterm_saves_before_exiting(data, tmp_path, tiny_train):
    workdir = tmp_path / "run"
    p = mbt("train", "--data", data, "--no-progress", *tiny_train, "--run.tensorboard=true", "--optim.steps=500",
            "--run.checkpoint_every=1000", "--workdir", str(workdir))
    deadline = time.time() + 600
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    saved = sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit())
    assert saved and 0 < saved[-1] < 500
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard scalars too


def test_four_devices_give_the_single_device_loss(data, tiny_train):
    script = f"""
import jax, numpy as np
from mbt.input import data_mesh, device_batches
from mbt.train import init_state, plan_run, train_step
from mbt.train_config import get_config
from shards.input import make_input
cfg = plan_run(get_config("tiny", {tiny_train!r}), {data!r}).cfg
assert jax.device_count() == 4
out = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = data_mesh(devices)
    state = jax.device_put(init_state(cfg, 10, 4, 0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    feed = device_batches(make_input({data!r}, cfg.input, seed=0, process_index=0, process_count=1), mesh)
    row = []
    for _ in range(3):
        batch = {{k: v for k, v in next(feed).items() if k != "key"}}
        state, m = train_step(state, batch, jax.random.key(1), cfg=cfg, total_steps=10, steps_per_epoch=4)
        row.append(float(m["loss"]))
    out.append(row)
print(out)
np.testing.assert_allclose(out[0], out[1], rtol=2e-5)
try:
    plan_run(get_config("tiny", {tiny_train!r} + ["--input.batch_size=6"]), {data!r})
    raise SystemExit("batch 6 on 4 devices was accepted")
except Exception as e:
    assert "divisible by the 4 devices" in str(e), e
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"}
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_non_finite_loss_names_the_step_and_the_last_good_checkpoint(data, tmp_path, tiny_train):
    from mbt.train import TrainError, train
    from mbt.train_config import get_config

    cfg = get_config("tiny", tiny_train + ["--optim.steps=6", "--optim.base_lr=1e30", "--optim.grad_clip=none",
                                     "--run.checkpoint_every=1"])
    with pytest.raises(TrainError, match=r"at step \d+; the last good checkpoint is step"):
        train(cfg, data, str(tmp_path / "nan"), progress=False)


def test_resuming_with_another_model_names_the_differing_fields(data, tmp_path, tiny_train):
    from mbt.checkpoints import CheckpointError
    from mbt.train import train
    from mbt.train_config import get_config

    workdir = str(tmp_path / "run")
    train(get_config("tiny", tiny_train + ["--optim.steps=1"]), data, workdir, progress=False)
    with pytest.raises(CheckpointError, match="model.width: 32 -> 64"):
        train(get_config("tiny", tiny_train + ["--optim.steps=2", "--model.width=64"]), data, workdir, progress=False)


def test_cli_errors_for_presets_and_overrides(capsys):
    from tools.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "x", "--workdir", "y", "--preset", "nope"])
    assert e.value.code == 2 and "mbt_base_audioset" in capsys.readouterr().err
    assert main(["train", "--data", "x", "--workdir", "y", "--model.fusion_layr=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fusion_layr" in err and "valid fields:" in err


def test_skipped_samples_are_counted_by_reason_in_metrics(tmp_path, make_clips, make_dataset, tiny_train):
    import dataclasses

    from mbt.train import train
    from mbt.train_config import get_config

    clips = make_clips(16)
    bad = clips[3]  # every frame of one clip: a JPEG header over garbage (the same length)
    clips[3] = dataclasses.replace(bad, frames=[f[:2] + bytes(len(f) - 2) for f in bad.frames])
    data = make_dataset(tmp_path / "data", clips, num_shards=2, formats=("webdataset",))
    workdir = tmp_path / "run"
    train(get_config("tiny", tiny_train + ["--optim.steps=4", "--run.log_every=1"]), data, str(workdir),
          progress=False)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    assert last["skipped_bad_jpeg"] >= 1 and last["skipped"] == sum(
        v for k, v in last.items() if k.startswith("skipped_"))


def test_out_of_range_overrides_are_one_line_errors(capsys):
    from tools.cli import main

    for override, message in (("--optim.steps=-1", "steps must be >= 1"),
                              ("--input.batch_size=0", "batch_size must be >= 1"),
                              ("--run.log_every=0", "log_every must be >= 1")):
        assert main(["train", "--data", "x", "--workdir", "y", override]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and override in err, err
