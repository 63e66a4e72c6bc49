"""`mbt bench gcs`: what the training input fetches per sample from a bucket, against what it needs.

Ingests clips of real footage (the 720p film trailer, 10 s clips at the job's defaults) into a local
dataset, copies it into a GCS API server on this machine (tools.gcs_emulator), and runs the training
input over both, one epoch in this process with the MBT-B/AudioSet sampling (8 frames over 8 s,
the whole spectrogram window). It reports per sample:

- local: bytes read from disk (this process's /proc/self/io `rchar`: the tar headers, the JSON, the
  spectrogram, and a pread per sampled frame);
- gs://: bytes and requests of the range reads (shards.format.storage.RANGE_READS);
- the bound: the bytes the sample's use needs (its JSON, its spectrogram, 8 frames of its mean frame
  size) and, for scale, the whole sample (what a front-to-back reader, e.g. of a TFRecord, fetches).

Both inputs must give the same batches (checked). Against the emulator on localhost, wall times say
nothing about a real bucket's latency; the requests per sample do (each is one round trip).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tools.bench_ingest import FALLBACK, FILM


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=str(FILM if FILM.exists() else FALLBACK), help="video to cut clips from")
    p.add_argument("--clips", type=int, default=12, help="clips to ingest (overlapping where needed)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per example")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="window of the frames and spectrogram")


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _epoch(spec: str, cfg) -> tuple[list[dict], float]:
    from shards.input import make_input

    t0 = time.perf_counter()
    batches = list(make_input(spec, cfg, seed=0))
    return batches, time.perf_counter() - t0


def needed_bytes(folder: str, frames: int) -> tuple[float, float]:
    """(bytes a sample's use needs, bytes of the whole sample), averaged over the dataset."""
    from shards.format.reader import read_shard_lazy

    need = whole = n = 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".tar"):
            continue
        for lazy in read_shard_lazy(os.path.join(folder, name)):
            members = lazy._members
            mjpeg = len(members["mjpeg"])
            need += len(members["json"]) + len(members["mel.npy"]) + frames * mjpeg / lazy.num_frames
            whole += len(members["json"]) + len(members["mel.npy"]) + mjpeg + 3 * 512  # + tar headers
            n += 1
    return need / n, whole / n


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pipelines.config import IngestConfig
    from pipelines.ingest import run as ingest
    from pipelines.manifests import read_manifest
    from shards.format import storage
    from shards.input import InputConfig
    from tools.gcs_emulator import gcs_emulator

    with tempfile.TemporaryDirectory(prefix="mbt-bench-gcs-") as tmp:
        from pipelines.ffmpeg_stderr import probe

        duration = probe(args.source).duration
        step = max(0.5, (duration - args.seconds) / max(args.clips - 1, 1))
        manifest = Path(tmp) / "clips.csv"
        manifest.write_text("path,start,end,labels\n" + "".join(
            f"{args.source},{i * step:.2f},{i * step + args.seconds:.2f},c{i % 3}\n" for i in range(args.clips)))
        local = os.path.join(tmp, "ds")
        t0 = time.perf_counter()
        summary = ingest(read_manifest(str(manifest)), IngestConfig(output=local, formats=("webdataset",),
                                                                    num_shards=2), show_progress=False)
        print(f"ingested {summary['written']} clips of {args.seconds:g} s from {args.source} in "
              f"{time.perf_counter() - t0:.0f} s ({summary['bytes'] / 1e6:.1f} MB in 2 shards)")
        need, whole = needed_bytes(local, args.frames)
        cfg = InputConfig(batch_size=2, epochs=1, shuffle_buffer=4, num_frames=args.frames,
                          clip_seconds=args.clip_seconds, num_workers=0)

        before = _rchar()
        here, wall_local = _epoch(local, cfg)
        local_bytes = _rchar() - before
        samples = sum(int(b["mask"].sum()) for b in here)

        with gcs_emulator("mbt-bench", os.path.join(tmp, "emulator.log")) as bucket:
            remote = f"{bucket}/ds"
            for name in os.listdir(local):
                storage.upload(os.path.join(local, name), f"{remote}/{name}")
            start = dict(storage.RANGE_READS)
            there, wall_remote = _epoch(remote, cfg)
            fetched = storage.RANGE_READS["bytes"] - start["bytes"]
            requests = storage.RANGE_READS["requests"] - start["requests"]
        same = len(here) == len(there) and all(
            list(a["key"]) == list(b["key"]) and np.array_equal(a["rgb"], b["rgb"])
            and np.array_equal(a["spectrogram"], b["spectrogram"]) for a, b in zip(here, there))

    kb = 1e3
    rows = [("needed (json + spectrogram + sampled frames)", need, None, None),
            ("local: read from disk (pread of the frames)", local_bytes / samples, None, wall_local / samples),
            ("gs://: range reads", fetched / samples, requests / samples, wall_remote / samples),
            ("whole sample (a front-to-back reader)", whole, None, None)]
    print(f"\n{samples} samples, {args.frames} frames over {args.clip_seconds:g} s each; same batches "
          f"from both: {'yes' if same else 'NO'}\n")
    print(f"{'per sample':<48} {'KB':>8} {'x needed':>9} {'requests':>9} {'wall ms':>8}")
    for name, nbytes, reqs, wall in rows:
        print(f"{name:<48} {nbytes / kb:>8.1f} {nbytes / need:>9.2f} "
              f"{'' if reqs is None else f'{reqs:.1f}':>9} {'' if wall is None else f'{wall * 1e3:.0f}':>8}")
    print(json.dumps({"samples": samples, "needed_bytes": round(need), "local_bytes": round(local_bytes / samples),
                      "gcs_bytes": round(fetched / samples), "gcs_requests": round(requests / samples, 2),
                      "whole_bytes": round(whole), "same_batches": same}))
    return 0 if same else 1
