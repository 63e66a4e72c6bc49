"""`mbt inspect`, `mbt stats`, `mbt validate`: look at shards and datasets."""

from __future__ import annotations

import argparse
import json

D = argparse.ArgumentDefaultsHelpFormatter


def add_parsers(sub) -> None:
    p = sub.add_parser("inspect", help="print one sample of a .tar/.tfrecord shard, optionally as a PNG",
                       formatter_class=D)
    p.add_argument("path", help="a shard file (SPLIT-00000-of-00004-g<8 hex digits>.tar or .tfrecord)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=None, help="position of the sample in the shard (0)")
    which.add_argument("--key", help="the sample's key")
    which.add_argument("--list", action="store_true", help="list the keys in the shard")
    p.add_argument("--png", help="write a contact sheet (frames + spectrogram) to this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run_inspect)

    p = sub.add_parser("stats", help="summarise a dataset folder from its index", formatter_class=D)
    p.add_argument("folder")
    p.add_argument("--split", action="append", help="only this split (repeatable); default all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_stats)

    p = sub.add_parser("validate", help="read every sample of every shard and report any that fail",
                       formatter_class=D)
    p.add_argument("folder")
    p.add_argument("--split", action="append", help="only this split (repeatable); default all")
    p.add_argument("--add-offsets", action="store_true",
                   help="first record where each sample starts in shards written without offsets (older "
                        "datasets), so they can be read by sample number; the shards are not rewritten")
    p.set_defaults(run=run_validate)


def run_inspect(args: argparse.Namespace) -> int:
    from tools import inspect_sample

    if args.list:
        print("\n".join(inspect_sample.list_keys(args.path)))
        return 0
    sample = inspect_sample.find_sample(args.path, index=args.index, key=args.key)
    print(json.dumps(inspect_sample.sample_summary(sample), indent=1) if args.json
          else inspect_sample.describe(sample))
    if args.png:
        inspect_sample.check_frame_sizes(sample, args.path)  # (before Pillow is handed a frame)
        print(f"contact sheet: {inspect_sample.contact_sheet(sample, args.png)}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from tools.dataset_report import dataset_stats, format_stats

    stats = dataset_stats(args.folder, args.split)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from tools.dataset_report import validate_dataset

    if args.add_offsets:
        from pipelines.add_offsets import add_offsets

        for split, n in add_offsets(args.folder, args.split).items():
            print(f"add-offsets: {split}: {n} offsets sidecars written" if n else
                  f"add-offsets: {split}: every shard has its offsets already")
    report = validate_dataset(args.folder, args.split)
    for note in report.notes:
        print(f"NOTE {note}")
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print(f"validate: {report.samples} samples in {report.shards} shards read; "
          f"{'all good' if report.ok else f'{len(report.problems)} problems'}")
    return 0 if report.ok else 1
