"""`mbt report RUN --data DIR`: per-class AP (CSV + plot) and attention maps of a trained run."""

from __future__ import annotations

import argparse

from tools.train_cmds import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="per-class AP of fused vs audio-only vs video-only, attention maps",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help="a run directory of `mbt train` (config.json, checkpoints/)")
    p.add_argument("--data", required=True, help="dataset folder (SPLIT.index.json) or a shard pattern")
    p.add_argument("--split", default="validation")
    p.add_argument("--out", default=None, help="output folder (local or gs://); None: RUN/report, in the bucket for a gs:// run")
    p.add_argument("--clips", type=int, default=4, help="clips to draw attention maps for")
    p.add_argument("--method", default="rollout", choices=("rollout", "last"),
                   help="attention map: rollout over all layers, or the last layer's CLS row")
    p.add_argument("--test-windows", type=positive_int, default=None, help="windows per clip (multi-clip test)")
    p.add_argument("--audio-run", default=None, help="a run trained on the spectrogram alone, to compare with")
    p.add_argument("--video-run", default=None, help="a run trained on RGB alone, to compare with")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mbt.report import ReportError, write_report
    from pipelines.config import output_folder_problem

    if args.out and (problem := output_folder_problem(args.out)):
        raise ReportError(f"--out {args.out}: {problem}")
    s = write_report(args.run_dir, args.data, args.split, out=args.out, clips=args.clips, method=args.method,
                     test_windows=args.test_windows, audio_run=args.audio_run, video_run=args.video_run)
    print(f"report: step {s['step']}, {s['clips']} clips of {s['split']} x {s['windows']} windows")
    for name, values in s["metrics"].items():
        print(f"  {name:<12} " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    for over, classes in s.get("fusion_gain", {}).items():
        print(f"  fusion gains most {over.replace('_', ' ').replace(' model', '-only model')}: "
              + ", ".join(f"{c} {g:+.3f}" for c, g in classes))
    print(f"wrote {', '.join(s['files'] + ['summary.json'])} to {s['out']}")
    return 0
