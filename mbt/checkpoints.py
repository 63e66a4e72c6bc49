"""Checkpoints of a run (orbax): parameters, optimiser state, step, and the input's position.

A run directory (mbt.run_dir) holds `config.json` and `checkpoints/<step>/`. Restarting in the same
directory restores the latest complete checkpoint: orbax writes each one under a temporary name and
renames it when whole (in a bucket, where there is no rename, it writes a commit_success.txt last and
skips a checkpoint without one), so a killed run never resumes from half a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from mbt import run_dir
from mbt.config import ModelConfig
from mbt.overrides import flatten
from mbt.run_dir import CheckpointError
from mbt.train_config import TrainConfig
from shards.format import storage

__all__ = ["Checkpointer", "CheckpointError", "config_dict"]


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


class Checkpointer:
    """Save / restore TrainState + input state under WORKDIR/checkpoints, keeping the newest `keep`.

    WORKDIR may be a URL (mbt.run_dir). Evaluation restores read-only through mbt.run_dir.load_run."""

    def __init__(self, workdir: str, cfg: TrainConfig, keep: int = 3):
        self.workdir = workdir
        self.cfg = cfg
        self._check_config(cfg)
        self.manager = run_dir.checkpoint_manager(workdir, keep=keep)

    def _check_config(self, cfg: TrainConfig) -> None:
        """A run directory belongs to one model: refuse to resume with another model config."""
        current = config_dict(cfg)
        saved = run_dir.read_config_dict(self.workdir)
        if saved is not None:
            # a run saved before a model setting existed ran with that setting's default
            defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(ModelConfig)}, default=list))
            old, new = flatten({**defaults, **saved.get("model", {})}), flatten(current["model"])
            diff = [f"model.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)]
            if diff:
                raise CheckpointError(f"{self.workdir} holds a run of a different model ({'; '.join(diff)}); "
                                      f"use a new --workdir or the same model settings")
        if jax.process_index() == 0:
            run_dir.write_config_dict(self.workdir, current)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, state):
        """(state, input_state) of the latest checkpoint, or (state, None) when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return state, None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), input=ocp.args.JsonRestore()))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {step} in {self.workdir} does not fit this model: "
                                  f"{str(e).splitlines()[0][:400]}") from None
        return restored.state, (restored.input or None)

    def save(self, step: int, state, input_state: dict | None) -> None:
        check_space(self.workdir, step, state)
        with disk_errors():
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(input_state or {})), force=True)

    def close(self) -> None:
        with disk_errors():  # the last save is written in the background: its errors come here
            self.manager.wait_until_finished()
        self.manager.close()


def check_space(workdir: str, step: int, state) -> None:
    """CheckpointError naming the folder and the space free when the checkpoint of `state` can't fit
    on a local disk: refused before orbax starts, whose writer threads would log a traceback each."""
    if storage.is_url(workdir):
        return
    need = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
    folder = existing = os.path.abspath(run_dir.path(workdir, "checkpoints"))
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # the disk the folder will be made on
    free = shutil.disk_usage(existing).free
    if free < need:
        raise CheckpointError(f"{folder}: no space for checkpoint {step} ({need / 1e6:.1f} MB needed, "
                              f"{free / 1e6:.1f} MB free); free some space there or use another --workdir")


@contextlib.contextmanager
def disk_errors():
    """orbax's storage (tensorstore) reports a file system error as a ValueError with the errno in
    its text ("... No space left on device [os_error_code='28']"): raise it as the OSError it is."""
    try:
        yield
    except ValueError as e:
        code = re.search(r"\[os_error_code='(\d+)'\]", str(e))
        if code is None:
            raise
        where = re.search(r'(?:Failed writing|local file): "([^"]+)"', str(e))
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), where.group(1) if where else None) from None
