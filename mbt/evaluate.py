"""Evaluate MBT on a split: every clip once (N evenly spaced windows each, logits averaged), metrics
for the fused prediction and for each modality's own logits.

    mbt eval --workdir runs/tiny --data demo_out/shards --split validation --test-windows 4
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import jax
import numpy as np

from mbt import metrics
from mbt.config import MBTError
from mbt.model import MBT
from mbt.train_config import TrainConfig


@functools.partial(jax.jit, static_argnames=("cfg",))
def logits_of(params, inputs: dict, cfg) -> dict:
    """{modality: logits, "fused": the model's prediction} of a batch of model inputs (`cfg` a
    ModelConfig), in evaluation mode. "fused" is the mean of the modalities' logits, except under
    classifier='joint_gap' (one head on the tokens of both)."""
    logits, inter = MBT(cfg).apply({"params": params}, inputs, train=False)
    return {**inter["logits"], "fused": logits}


class EvalInput:
    """The evaluation input of a run's config on `data`/`split`: every clip once, in order (N evenly
    spaced windows each), in this process, numpy batches normalised for the model. Iterating gives
    (batch, clips): `clips` the (row, key, label) of the batch's real clips (a padded last batch has
    fewer); `skipped()` what on_error=skip dropped."""

    def __init__(self, cfg: TrainConfig, data: str, split: str, *, test_windows: int | None = None,
                 batch_size: int | None = None):
        from shards.input import make_input

        for name, value in (("test_windows", test_windows), ("batch_size", batch_size)):
            if value is not None and value < 1:  # None is the run's own; 0 is not
                raise MBTError(f"{name} {value}: use 1 or more")
        icfg = dataclasses.replace(cfg.input, test_windows=test_windows or cfg.input.test_windows,
                                   batch_size=batch_size or cfg.input.batch_size, num_workers=0,
                                   rgb_uint8=False)  # numpy straight into the model: normalised here
        self.head = cfg.model.head
        self.batch_size = icfg.batch_size
        self.batches = make_input(data, icfg, split=split, training=False, seed=0, process_index=0,
                                  process_count=1)

    def __iter__(self) -> Iterator[tuple[dict, list[tuple[int, str, Any]]]]:
        for batch in self.batches:
            yield batch, [(i, str(batch["key"][i]), clip_label(batch, i, self.head))
                          for i in np.nonzero(batch["mask"] > 0)[0]]

    def skipped(self) -> dict[str, int]:
        return {k: v for k, v in self.batches.counts().items() if k.startswith("bad_")}


def clip_label(batch: dict, i: int, head: str) -> Any:
    """Row i's label: {"verb", "noun"} for EPIC, else the multi-hot vector or the class index."""
    if head == "verb_noun":
        return {"verb": int(batch["verb"][i]), "noun": int(batch["noun"][i])}
    return np.asarray(batch["labels"][i])


def predict(cfg: TrainConfig, params, data: str, split: str, *, test_windows: int | None = None,
            batch_size: int | None = None) -> dict[str, Any]:
    """Per clip: the fused logits and each modality's, averaged over its windows, and the clip's labels."""
    sums: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    labels: dict[str, Any] = {}
    clips = EvalInput(cfg, data, split, test_windows=test_windows, batch_size=batch_size)
    for batch, rows in clips:
        inputs = {m: batch[m] for m in cfg.model.modalities}
        logits = jax.device_get(logits_of(params, inputs, cfg.model))
        for i, key, label in rows:
            row = jax.tree.map(lambda x: np.asarray(x[i], np.float64), logits)
            sums[key] = row if key not in sums else jax.tree.map(np.add, sums[key], row)
            counts[key] = counts.get(key, 0) + 1
            labels[key] = label
    keys = sorted(sums)
    names = ("fused", *cfg.model.modalities)
    per_clip = {n: jax.tree.map(lambda *rows: np.stack(rows), *[
        jax.tree.map(lambda x: x / counts[k], sums[k][n]) for k in keys]) for n in names}
    return {"keys": keys, "logits": per_clip, "labels": [labels[k] for k in keys],
            "windows": max(counts.values(), default=0), "skipped": clips.skipped()}  # on_error=skip


def score(logits: Any, labels: list, head: str) -> dict[str, Any]:
    """The paper's metric(s) for one set of logits."""
    if head == "multilabel":
        targets = np.stack(labels)
        m, per_class = metrics.mean_average_precision(1 / (1 + np.exp(-logits)), targets)
        return {"mAP": m, "per_class_ap": per_class.tolist()}
    if head == "multiclass":
        y = np.array([int(l) for l in labels])
        return {"top1": metrics.topk_accuracy(logits, y, 1), "top5": metrics.topk_accuracy(logits, y, 5),
                "per_class_ap": metrics.mean_average_precision(
                    logits, np.eye(logits.shape[1])[y])[1].tolist()}
    return metrics.epic_accuracy(logits["verb"], logits["noun"], np.array([l["verb"] for l in labels]),
                                 np.array([l["noun"] for l in labels]))


def evaluate(cfg: TrainConfig, params, data: str, split: str, **kw) -> dict[str, Any]:
    """{"fused": {...}, "rgb": {...}, "spectrogram": {...}, "clips": N, "windows": W, "skipped": {reason: n}}."""
    pred = predict(cfg, params, data, split, **kw)
    out: dict[str, Any] = {name: score(logits, pred["labels"], cfg.model.head)
                           for name, logits in pred["logits"].items()}
    out.update(clips=len(pred["keys"]), windows=pred["windows"], skipped=pred["skipped"])
    return out

