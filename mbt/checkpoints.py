"""Checkpoints of a run (orbax): parameters, optimiser state, step, and the input's position.

A run directory (mbt.run_dir) holds `config.json` and `checkpoints/<step>/`. Restarting in the same
directory restores the latest complete checkpoint: orbax writes each one under a temporary name and
renames it when whole (in a bucket, where there is no rename, it writes a commit_success.txt last and
skips a checkpoint without one), so a killed run never resumes from half a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp

from mbt import run_dir
from mbt.overrides import flatten
from mbt.run_dir import CheckpointError
from mbt.train_config import TrainConfig

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
            old, new = flatten(saved.get("model", {})), flatten(current["model"])
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
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(input_state or {})), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
