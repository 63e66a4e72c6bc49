"""A run directory, local or in a bucket (gs://, any fsspec URL): what `mbt train` leaves behind.

    RUN/config.json      the TrainConfig the run was started with (written whole)
    RUN/data.json        what the training data was: its classes, feature parameters (fps, short
                         side, JPEG quality, log-mel) and mel statistics, for `mbt predict`
    RUN/checkpoints/N/   orbax checkpoints: parameters, optimiser state, step, input position
    RUN/metrics.jsonl    one line per logged step
    RUN/tensorboard/     TensorBoard event files

    cfg = read_config("gs://B/runs/as")
    cfg, params, step = load_run("runs/tiny")          # for eval, report and predict: read-only

Everything here goes through shards.format.storage. Orbax reaches a bucket through etils.epath (its file
operations) and tensorstore (its arrays); `use_store_backends` points both where the project's own
reads go (see there).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from shards.format import storage
from shards.format.errors import UserError

CONFIG = "config.json"
DATA = "data.json"
# the training data's index fields that preprocessing outside the shards (mbt predict) needs
DATA_FIELDS = ("classes", "features", "mel_mean", "mel_std", "mel_mean_per_bin", "mel_std_per_bin")


class RunDirError(UserError, FileNotFoundError):
    """Not a run directory (or not a finished one); the message names it and what to do."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit this run; the message names the differing fields or parameters."""


def use_store_backends() -> None:
    """Make orbax's storage calls reach the same GCS endpoint as everything else.

    etils.epath picks tf.io.gfile for gs:// whenever TensorFlow is installed, and tf.io.gfile ignores
    STORAGE_EMULATOR_HOST, so on an emulator (or any private endpoint) checkpoints would go to Google;
    EPATH_USE_TF=false makes epath use fsspec's gcsfs, as shards.format.storage does. tensorstore reads its
    endpoint from TENSORSTORE_GCS_HTTP_URL, which follows STORAGE_EMULATOR_HOST unless set. Both are
    only defaults: a user's own setting wins."""
    os.environ.setdefault("EPATH_USE_TF", "false")
    # epath caches its TensorFlow check on first use of any path (a local checkpoint included), so
    # a process that used orbax before needs the cache cleared (a private part of etils 1.15: if
    # it moves, only a process that used orbax before this call keeps tf.io.gfile)
    from etils.epath import gpath

    getattr(getattr(gpath, "_is_tf_installed", None), "cache_clear", lambda: None)()
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)


def path(workdir: str, name: str) -> str:
    return storage.join(workdir, name)


def checkpoint_manager(workdir: str, *, keep: int = 3, read_only: bool = False):
    """orbax's manager of RUN/checkpoints, keeping the newest `keep`; read_only: touches nothing."""
    import orbax.checkpoint as ocp

    use_store_backends()
    folder = path(workdir, "checkpoints")
    options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                            save_interval_steps=0) if read_only else
               ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    return ocp.CheckpointManager(folder if storage.is_url(folder) else os.path.abspath(folder), options=options)


def read_config_dict(workdir: str) -> dict[str, Any] | None:
    """config.json of a run as saved, or None when the run has none yet."""
    try:
        return json.loads(storage.read_bytes(path(workdir, CONFIG)).decode("utf-8"))
    except FileNotFoundError:
        return None


def write_config_dict(workdir: str, config: dict[str, Any]) -> None:
    """config.json, whole or not at all: the other processes of a run read it meanwhile."""
    storage.write_atomic(path(workdir, CONFIG), json.dumps(config, indent=1, sort_keys=True).encode("utf-8"))


def write_data_record(workdir: str, data: str, split: str, index: dict[str, Any] | None) -> None:
    """RUN/data.json: the training data's spec and the fields of its index listed in DATA_FIELDS
    (None where the data has no index: then predict needs --data)."""
    index = index or {}
    record = {"data": data, "split": split, "generation": index.get("generation"),
              **{k: index.get(k) for k in DATA_FIELDS}}
    storage.write_atomic(path(workdir, DATA), json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))


def read_data_record(workdir: str) -> dict[str, Any] | None:
    """RUN/data.json, or None for a run trained before it was written."""
    try:
        return json.loads(storage.read_bytes(path(workdir, DATA)).decode("utf-8"))
    except FileNotFoundError:
        return None


def read_config(workdir: str):
    """The TrainConfig a run was started with."""
    from mbt.config import ModelConfig
    from mbt.train_config import OptimConfig, RunConfig, TrainConfig
    from shards.input import InputConfig

    d = read_config_dict(workdir)
    if d is None:
        raise RunDirError(f"{path(workdir, CONFIG)} does not exist: is {workdir} a run directory of "
                          f"`mbt train`? (pass the --workdir a run was trained in)")

    def build(kind, values):
        names = {f.name for f in dataclasses.fields(kind)}
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    old = d["input"].pop("normalize_rgb", None)  # runs before rgb_normalization: False meant x/255
    if old is False and "rgb_normalization" not in d["input"]:
        d["input"]["rgb_normalization"] = "unit"
    return TrainConfig(model=build(ModelConfig, d["model"]), input=build(InputConfig, d["input"]),
                       optim=build(OptimConfig, d["optim"]), run=build(RunConfig, d["run"]))


def fine_tune_config(run: str, overrides: list[str] = ()):
    """The TrainConfig of a run that starts from run directory `run` (--run.init_from=RUN without a
    preset): RUN's own model, input and optimiser settings, the class count left to the new data, a
    fresh run section; then `overrides`."""
    from mbt.overrides import apply_overrides
    from mbt.train_config import RunConfig

    start = read_config(run)
    model = start.model if start.model.head == "verb_noun" else dataclasses.replace(start.model, num_classes=0)
    return apply_overrides(dataclasses.replace(start, model=model, run=RunConfig()), overrides)


def load_run(workdir: str, step: int | None = None):
    """(config, params, step) of a run's latest (or given) checkpoint, without writing to the run."""
    import jax
    import orbax.checkpoint as ocp

    from mbt.train_state import init_state

    cfg = read_config(workdir)
    manager = checkpoint_manager(workdir, read_only=True)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir}: no checkpoint to evaluate; train first (mbt train)")
        # The target says where the arrays go now (this process's devices), whatever topology wrote them.
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
                              jax.eval_shape(lambda: init_state(cfg, 2, 1, 0)))
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    finally:
        manager.wait_until_finished()
        manager.close()
    return cfg, restored.state.params, step
