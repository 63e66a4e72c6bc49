"""`mbt table1`: a small Table 1 of the paper on the demo data — one modality alone vs fused, and how.

    mbt table1 --demo runs/table1_data --workdir runs/table1 --steps 100

`--demo DIR` synthesises the demo clips (16 per class for training, 8 for validation, distinct seeds)
and ingests them into DIR/shards first, unless they are there; `--data DIR` takes any dataset folder
with train and validation splits of the demo's classes.

Trains the `tiny` preset with the same budget (steps, batch, schedule, seed) in each variant below, then
evaluates each on the validation split: top-1 of the fused prediction and of each modality's own logits.
The demo's class is (colour of a square, pitch of a tone), so one modality alone can tell only 2 of the 4
classes (top-1 about 50%) and fusion should win; the clips where one modality is noise hold even a
perfect fused model near 90% (see the README's "Small Table 1").
Prints the table and writes it as markdown to WORKDIR/table1.md; each run keeps its own directory
(WORKDIR/<run>), so `mbt report WORKDIR/<run>` draws its per-class AP and attention maps. A rerun resumes
finished runs from their checkpoints: use a new --workdir for a new budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from shards.format import storage

# (directory, what it is, overrides of the tiny preset: 4 layers, L_f = 2, 4 bottlenecks)
RUNS = (
    ("audio_only", "audio only", ["model.modalities=spectrogram"]),
    ("video_only", "video only", ["model.modalities=rgb"]),
    ("late", "late fusion (L_f = 4)", ["model.fusion=none", "model.fusion_layer=4"]),
    ("bottleneck_lf2", "bottleneck, L_f = 2", ["model.fusion=bottleneck", "model.fusion_layer=2"]),
    ("bottleneck_lf0", "bottleneck, L_f = 0", ["model.fusion=bottleneck", "model.fusion_layer=0"]),
    ("self_attention_lf2", "self-attention, L_f = 2", ["model.fusion=self_attention", "model.fusion_layer=2"]),
)


@dataclasses.dataclass(frozen=True)
class Row:
    run: str  # directory under the workdir
    name: str  # what the variant is
    fused_top1: float  # the model's prediction (mean of its modalities' logits)
    video_top1: float | None  # the rgb stream's own logits (None: no rgb stream)
    audio_top1: float | None  # the spectrogram stream's own logits
    fused_map: float  # mean over classes of AP (one-hot targets)
    clips: int  # validation clips
    seconds: float  # wall time of training + evaluation


def table1(data: str, workdir: str, *, steps: int, runs=RUNS, overrides: list[str] = (),
           eval_data: str | None = None, progress: bool = False, log=print) -> list[Row]:
    """Train and evaluate each run in turn (same preset, budget and seed); returns the table's rows."""
    import numpy as np

    from mbt.train import train
    from mbt.train_config import get_config
    from shards.input import source

    source.resolve(eval_data or data, split="validation")  # no validation split: say so before training
    log("\n".join(HEADER))
    rows = []
    for slug, name, run_overrides in runs:
        cfg = get_config("tiny", [f"optim.steps={steps}", *run_overrides, *overrides])
        t = time.perf_counter()
        last = train(cfg, data, storage.join(workdir, slug), eval_data=eval_data or data, progress=progress)
        result = last["eval"]
        top1 = lambda k: result[k]["top1"] if k in result else None  # noqa: E731
        row = Row(run=slug, name=name, fused_top1=result["fused"]["top1"], video_top1=top1("rgb"),
                  audio_top1=top1("spectrogram"),
                  fused_map=float(np.nanmean(result["fused"]["per_class_ap"])), clips=result["clips"],
                  seconds=round(time.perf_counter() - t, 1))
        log(format_row(row))
        rows.append(row)
    storage.write_atomic(storage.join(workdir, "table1.json"),
                         json.dumps([dataclasses.asdict(r) for r in rows], indent=1).encode("utf-8"))
    return rows


def make_demo_data(root: str, train_per_class: int = 16, validation_per_class: int = 8) -> str:
    """The demo dataset with a validation split, ingested into ROOT/shards (kept when already there)."""
    from pipelines.config import IngestConfig
    from pipelines.ingest import run as ingest
    from pipelines.manifests import read_manifest
    from tools.demo_data import make_demo_videos

    shards = os.path.join(root, "shards")
    for split, per_class, seed in (("train", train_per_class, 0), ("validation", validation_per_class, 1)):
        if not os.path.exists(os.path.join(shards, f"{split}.index.json")):
            manifest = make_demo_videos(root, per_class, seed=seed, split=split)
            ingest(read_manifest(str(manifest), classes=os.path.join(root, "classes.txt")),
                   IngestConfig(output=shards, split=split, formats=("webdataset",)), show_progress=False)
    return shards


HEADER = ("| run | top-1 fused | top-1 video stream | top-1 audio stream | mAP fused | train + eval (s) |",
          "| --- | ---: | ---: | ---: | ---: | ---: |")


def format_row(row: Row) -> str:
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
    return (f"| {row.name} | {pct(row.fused_top1)} | {pct(row.video_top1)} | {pct(row.audio_top1)} | "
            f"{pct(row.fused_map)} | {row.seconds:.0f} |")


def markdown(rows: list[Row], steps: int, command: str = "") -> str:
    clips = rows[0].clips if rows else 0
    lines = [f"Validation top-1 (%) on {clips} clips after {steps} steps of the `tiny` preset; the video and "
             "audio stream columns are each model's per-modality logits.", "", *HEADER,
             *(format_row(r) for r in rows)]
    if command:
        lines += ["", f"    {command}"]
    return "\n".join(lines) + "\n"


def add_parser(sub) -> None:
    p = sub.add_parser("table1", help="a small Table 1: audio only, video only and fusion variants, same budget",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=__doc__.split("\n\n")[1])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="demo dataset folder with train and validation splits")
    where.add_argument("--demo", metavar="DIR",
                       help="make the demo data (16 + 8 clips per class) into DIR/shards first, unless there")
    p.add_argument("--eval-data", default=None, help="evaluate on this dataset's validation split; None: --data")
    p.add_argument("--workdir", default="runs/table1", help="one run directory per variant, and table1.md")
    p.add_argument("--steps", type=int, default=100, help="training steps of every run (the shared budget)")
    p.add_argument("--runs", nargs="+", default=None, choices=[r[0] for r in RUNS],
                   help="only these runs; None: all")
    p.add_argument("--workers", type=int, default=1,
                   help="loader worker processes (input.num_workers; 0 and 1 give the same batches, 1 overlaps "
                        "the input with the step)")
    p.add_argument("--progress", action="store_true", help="show each run's progress line")
    p.set_defaults(run=run, takes_overrides=True)


def run(args: argparse.Namespace, overrides: list[str] = ()) -> int:
    import sys

    t = time.perf_counter()
    data = args.data or make_demo_data(args.demo)
    runs = [r for r in RUNS if args.runs is None or r[0] in args.runs]
    rows = table1(data, args.workdir, steps=args.steps, runs=runs,
                  overrides=[f"input.num_workers={args.workers}", *overrides], eval_data=args.eval_data,
                  progress=args.progress, log=lambda s: print(s, flush=True))
    command = "mbt " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["table1"] else ""
    path = storage.join(args.workdir, "table1.md")
    storage.write_atomic(path, markdown(rows, args.steps, command).encode("utf-8"))
    print(f"{len(rows)} runs in {time.perf_counter() - t:.0f} s; table in {path}")
    return 0
