"""`mbt predict VIDEO|FOLDER|MANIFEST ... --workdir RUN`: labels of raw videos, per window and per video."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="label raw videos with a trained run (its own preprocessing)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="VIDEO|FOLDER|MANIFEST",
                   help="video files, folders of videos, manifests (.csv/.tsv/.jsonl: each row's [start, end))")
    p.add_argument("--workdir", required=True, help="a run directory of `mbt train` (local or gs://)")
    p.add_argument("--data", default=None,
                   help="the training dataset (folder with SPLIT.index.json), for runs without data.json")
    p.add_argument("--split", default="train", help="the split of --data the run was trained on")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--stride", type=float, default=None,
                     help="seconds between windows of the model's span t (default: t, windows side by side)")
    how.add_argument("--windows", type=int, default=None,
                     help="N evenly spaced windows per video instead, as `mbt eval --test-windows N`")
    p.add_argument("--top-k", type=int, default=5, help="labels shown per window and video")
    p.add_argument("--batch-size", type=int, default=None, help="windows per model call (default: the run's)")
    p.add_argument("--output", default=None, help="write the predictions to F.json or F.csv")
    p.add_argument("--png", default=None, metavar="DIR", help="a timeline picture per video into DIR")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tools.predict import check_outputs, check_request, load_predictor, predict, videos_of

    check_request(stride=args.stride, windows=args.windows, top_k=args.top_k, batch_size=args.batch_size)
    check_outputs(args.output, args.png)  # before the run is loaded and the videos decoded
    failures: list[dict] = []

    def failed(what: str, reason: str, detail: str) -> None:
        detail = detail.removeprefix(f"{what}: ")  # (ffmpeg's messages name the file too)
        failures.append({"video": what, "reason": reason, "detail": detail})
        print(f"predict: {what}: {reason}: {detail}", file=sys.stderr)

    videos = videos_of(args.inputs, failed)
    predictor = load_predictor(args.workdir, args.data, args.split)
    results = predict(predictor, videos, stride=args.stride, windows=args.windows, top_k=args.top_k,
                      batch_size=args.batch_size, on_failure=failed)
    print(format_table(results, predictor.cfg.model.modalities))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        (write_csv if args.output.lower().endswith(".csv") else write_json)(
            results, failures, args.output, run=args.workdir, step=predictor.step)
        print(f"wrote {args.output}")
    if args.png:
        from tools.predict_plot import timeline

        os.makedirs(args.png, exist_ok=True)
        for r in results:
            path = os.path.join(args.png, _file_name(r["key"]) + ".png")
            timeline(r, path, top=min(args.top_k, 5))
            print(f"wrote {path}")
    print(f"predict: {len(results)} videos, {sum(len(r['windows']) for r in results)} windows; "
          f"{len(failures)} failed" + (" (see above)" if failures else ""))
    return 1 if failures else 0


def _file_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _labels(top: list[list], k: int = 3) -> str:
    return ", ".join(f"{name} {p:.2f}" for name, p in top[:k])


def format_table(results: list[dict], modalities: tuple[str, ...]) -> str:
    short = {"rgb": "video", "spectrogram": "audio"}
    lines = []
    for r in results:
        flag = "" if r["has_audio"] else "  [no audio track: predicted with a silent spectrogram]"
        lines.append(f"{r['video']}: {_labels(r['top']['fused'])}{flag}")
        for w in r["windows"]:
            streams = "  ".join(f"{short.get(m, m)}: {_labels(w['top'][m], 1)}" for m in modalities)
            lines.append(f"  {w['start']:8.2f}-{w['end']:<8.2f} {_labels(w['top']['fused'])}   ({streams})")
    return "\n".join(lines)


def public(result: dict) -> dict[str, Any]:
    """A result without the arrays (logits, thumbnails) it carries for the caller."""
    out = {k: v for k, v in result.items() if k not in ("probabilities", "classes")}
    out["windows"] = [{k: v for k, v in w.items() if k in ("start", "end", "top")} for w in result["windows"]]
    return out


def write_json(results: list[dict], failures: list[dict], path: str, **head) -> None:
    with open(path, "w") as f:
        json.dump({**head, "videos": [public(r) for r in results], "failures": failures}, f, indent=1)


def write_csv(results: list[dict], failures: list[dict], path: str, **head) -> None:
    """One row per (video, window or 'video', prediction, rank); failures as rows with their reason."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "window_start", "window_end", "prediction", "rank", "label", "probability",
                    "has_audio", "error"])
        for r in results:
            rows = [(ws["start"], ws["end"], ws["top"]) for ws in r["windows"]] + [("video", "video", r["top"])]
            for start, end, tops in rows:
                for pred, labels in tops.items():
                    for rank, (label, p) in enumerate(labels, 1):
                        w.writerow([r["video"], start, end, pred, rank, label, p, int(r["has_audio"]), ""])
        for fail in failures:
            w.writerow([fail["video"], "", "", "", "", "", "", "", f"{fail['reason']}: {fail['detail']}"])
