"""`mbt import ast`: published AST weights as a run directory (config.json, data.json, a checkpoint).

    summary = import_ast("audioset_10_10_0.4593.pth", "runs/ast", classes=names)
    cfg, params, step = mbt.run_dir.load_run("runs/ast")      # what eval, predict and report read

The run is an audio-only MBT set up to compute exactly what the AST computes (mbt.ast_checkpoint), its
input the AST's: Kaldi fbank features (data.json's features, kind kaldi_fbank) normalised with AST's
fixed statistics, (x + 4.2677393) / (4.5689974 * 2), over a clip as long as its position embeddings
(AST's AudioSet models: 1024 rows, 10.24 s).
"""

from __future__ import annotations

import os

from flax.traverse_util import flatten_dict, unflatten_dict

from mbt.ast_checkpoint import ASTCheckpointError, ast_model_config, read_ast


def import_ast(checkpoint: str, workdir: str, *, heads: int | None = None, frames: int | None = None,
               mel_bins: int | None = None, frequency_stride: int | None = None, time_stride: int | None = None,
               classes: list[str] | None = None, head: str | None = None) -> dict:
    """Write `workdir` as a run of the AST in `checkpoint` (config.json, data.json, an orbax checkpoint
    at step 0) that `mbt eval`, `mbt predict` and `mbt train` read like any other; returns a summary."""
    import jax
    import jax.numpy as jnp

    from mbt import run_dir
    from mbt.checkpoints import Checkpointer
    from mbt.model import param_shapes
    from mbt.train_config import LABELS_FOR_HEAD, TrainConfig
    from mbt.train_state import TrainState, make_optimizer
    from shards.format.schema import FbankParams, feature_params
    from shards.input import InputConfig
    from shards.input.config import AST_MEL_MEAN, AST_MEL_STD

    if run_dir.read_config_dict(workdir) is not None:
        raise ASTCheckpointError(f"{workdir} already holds a run (config.json); import into a new --workdir")
    ckpt = read_ast(checkpoint, heads=heads, frames=frames, mel_bins=mel_bins,
                    frequency_stride=frequency_stride, time_stride=time_stride)  # fmt: skip
    if not ckpt.num_classes:
        raise ASTCheckpointError(f"{checkpoint}: no classification head (mlp_head / classifier); import an "
                                 "ASTForAudioClassification or a fine-tuned AST, or pass it as --run.ast_checkpoint")
    names = classes or ckpt.classes or [f"class_{i}" for i in range(ckpt.num_classes)]
    if len(names) != ckpt.num_classes:
        raise ASTCheckpointError(f"{checkpoint}: its head has {ckpt.num_classes} classes, --classes names "
                                 f"{len(names)}; give the class list it was trained on")
    model = ast_model_config(ckpt, head or ckpt.head or "multilabel")
    if model.head == "verb_noun":
        raise ASTCheckpointError("--head verb_noun: AST has one head; use multilabel or multiclass")
    data = InputConfig(clip_seconds=ckpt.frames / 100, mel_mean=AST_MEL_MEAN, mel_std=AST_MEL_STD,
                       labels=LABELS_FOR_HEAD[model.head])  # fmt: skip
    cfg = TrainConfig(model=model, input=data).check()

    # The parameters, checked against the model's own tree before anything is written.
    params = unflatten_dict(ckpt.params, sep="/")
    want = {k: tuple(v.shape) for k, v in flatten_dict(param_shapes(model)["params"], sep="/").items()}
    wrong = [f"{k} {ckpt.params[k].shape} (needs {want[k]})" for k in want if ckpt.params[k].shape != want[k]]
    if wrong:
        raise ASTCheckpointError(f"{checkpoint}: weights that don't fit the AST they describe: {', '.join(wrong[:4])}")
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=make_optimizer(cfg, 2, 1).init(params))  # what load_run's target expects
    ckpt_writer = Checkpointer(workdir, cfg, keep=1)
    try:
        ckpt_writer.save(0, state, None)
    finally:
        ckpt_writer.close()
    features = feature_params("kaldi_fbank", mel=FbankParams(num_mel_bins=ckpt.mel_bins))
    run_dir.write_data_record(workdir, os.fspath(checkpoint), "(imported AST)", {
        "classes": names, "features": features, "mel_mean": AST_MEL_MEAN, "mel_std": AST_MEL_STD})
    return {"format": ckpt.format, "depth": ckpt.depth, "width": ckpt.width, "heads": ckpt.heads,
            "grid": ckpt.grid, "frames": ckpt.frames, "classes": len(names), "head": model.head}
