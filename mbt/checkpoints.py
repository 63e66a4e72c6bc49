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
from mbt.train_config import TrainConfig
from mbt.train_state import init_state


class CheckpointError(ValueError):
    """A checkpoint that does not fit this run; the message names the differing fields or parameters."""


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


class Checkpointer:
    """Save / restore TrainState + input state under WORKDIR/checkpoints, keeping the newest `keep`.

    WORKDIR may be a URL (mbt.run_dir). read_only: for evaluation, which must not touch the run."""

    def __init__(self, workdir: str, cfg: TrainConfig, keep: int = 3, read_only: bool = False):
        self.workdir = workdir
        self.cfg = cfg
        run_dir.use_store_backends()
        if not read_only:
            self._check_config(cfg)
        options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                                save_interval_steps=0) if read_only else
                   ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self.manager = ocp.CheckpointManager(run_dir.checkpoint_dir(workdir), options=options)

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

    def restore_params(self, step: int | None = None):
        """Only the parameters of a checkpoint (latest by default), for evaluation."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.workdir}: no checkpoint to evaluate; train first (mbt train)")
        # The target says where the arrays go now (this process's devices), whatever topology wrote them.
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
                              jax.eval_shape(lambda: init_state(self.cfg, 2, 1, 0)))
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        return restored.state.params, step

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
