"""`mbt bench ingest|jpeg|input|gcs|predict|train`: each stage's speed against its physical bound, measured in the same run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: each stage against its bound, measured in the same run")
    stages = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    from tools import bench_gcs, bench_ingest, bench_input, bench_jpeg, bench_predict, bench_train

    for name, module, help_ in (
            ("ingest", bench_ingest, "the Beam job vs bare ffmpeg doing the same decode"),
            ("jpeg", bench_jpeg, "the frames' JPEG encoder: ffmpeg's mjpeg vs libjpeg-turbo at equal bytes"),
            ("input", bench_input, "the training input vs decoding the same JPEGs and nothing else"),
            ("gcs", bench_gcs, "bytes the training input fetches per sample from gs:// vs from disk vs needed"),
            ("predict", bench_predict, "mbt predict's compute per minute of video: decode, features, input, model"),
            ("train", bench_train, "train step time, clips/s, FLOP/s and MFU of tiny and B/16; data wait")):
        s = stages.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(s)
        s.set_defaults(run=module.run)
