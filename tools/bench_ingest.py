"""`mbt bench ingest`: the Beam ingestion job against bare ffmpeg doing the same decode, same cores.

The bound is ffmpeg itself: the same arguments the job uses (seek, 25 fps, resize, JPEG, 16 kHz mono
f32 audio; `pipelines.decode.decode_args`) run straight to files with the same number of concurrent
processes. CPU time is this process plus its waited-for children (ffmpeg), from getrusage, so the
ratio counts everything the job adds: Beam, JPEG splitting, log-mel, encoding, shard writing.

Beam has a fixed cost per job (building and optimising the pipeline graph, ~3 CPU s here) that a
small benchmark would otherwise mistake for a per-clip cost; so the job runs on the clips once and
on twice as many, and the marginal cost per media second (what an AudioSet-sized run pays) is
reported beside the totals.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", default=str(DATA), help="folder of real clips to decode")
    p.add_argument("--copies", type=int, default=3,
                   help="times each clip is ingested (as distinct rows); the job also runs on twice that")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="concurrent clips (cores)")
    p.add_argument("--format", default="webdataset", help="shard formats the job writes")


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn()."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def bare_ffmpeg(clips: list[tuple[str, float, bool]], out: Path, workers: int) -> None:
    """Run exactly the job's ffmpeg work for every clip, to files, `workers` at a time."""
    from pipelines.decode import FPS, SAMPLE_RATE, decode_args, round_half_up
    from pipelines.ffmpeg import ffmpeg_exe

    def one(i_clip):
        i, (path, duration, has_audio) = i_clip
        args = decode_args(path, 0.0, round_half_up(FPS * duration), round_half_up(SAMPLE_RATE * duration),
                           with_audio=has_audio, video_out=str(out / f"{i}.mjpeg"),
                           audio_out=str(out / f"{i}.f32"))
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
                        *map(str, args)], check=True, timeout=600)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, enumerate(clips)))


def run(args: argparse.Namespace) -> int:
    from pipelines.config import IngestConfig
    from pipelines.ffmpeg import probe
    from pipelines.ingest import run as ingest
    from pipelines.logmel import log_mel
    from pipelines.manifests import read_manifest
    from shards.schema import MelParams

    import numpy as np

    sources = sorted(p for p in Path(args.videos).iterdir() if p.suffix.lower() in {".mp4", ".ts", ".mkv",
                                                                                   ".mov", ".webm"})
    if not sources:
        raise FileNotFoundError(f"{args.videos}: no video files; pass --videos FOLDER")
    with tempfile.TemporaryDirectory(prefix="mbt-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        rows, clips = [], []
        for src in sources:
            info = probe(src)
            for c in range(2 * args.copies):
                dst = tmp / "videos" / f"{src.stem}_{c}{src.suffix}"
                shutil.copy(src, dst)
                rows.append([str(dst), "", "", "bench"])
                clips.append((str(dst), info.duration, info.has_audio))
        beam_args = ["--runner=FnApiRunner", f"--direct_num_workers={args.workers}",
                     "--direct_running_mode=multi_threading"]
        (tmp / "bare").mkdir()
        bare_ffmpeg(clips[:1], tmp / "bare", 1)  # warm the page cache and the binary
        results = {}
        for n in (len(clips) // 2, len(clips)):
            some = clips if n == len(clips) else clips[::2]
            media = sum(d for _, d, _ in some)
            with open(tmp / f"manifest{n}.csv", "w", newline="") as f:
                csv.writer(f).writerows([["path", "start", "end", "labels"],
                                         *(r for r, c in zip(rows, clips) if c in some)])
            bare = measure(lambda: bare_ffmpeg(some, tmp / "bare", args.workers))
            manifest = read_manifest(str(tmp / f"manifest{n}.csv"))
            cfg = IngestConfig(output=str(tmp / f"shards{n}"), formats=tuple(args.format.split(",")))
            job = measure(lambda: ingest(manifest, cfg, beam_args, show_progress=False))
            results[n] = (media, bare, job)
        audio = np.random.default_rng(0).standard_normal(int(16000 * media)).astype(np.float32)
        log_mel(audio[:16000], MelParams())
        _, mel_cpu = measure(lambda: log_mel(audio, MelParams()))

    print(f"bench ingest: {args.workers} workers, clips from {args.videos}, format {args.format}")
    print(f"{'clips':>6}{'media s':>9}  {'':<20}{'wall s':>8}{'CPU s':>8}{'CPU s/media s':>15}")
    for n, (media, (bw, bc), (jw, jc)) in results.items():
        for name, w, c in (("bare ffmpeg (bound)", bw, bc), ("ingest job", jw, jc)):
            print(f"{n:>6}{media:>9.1f}  {name:<20}{w:>8.2f}{c:>8.2f}{c / media:>15.3f}")
        print(f"{'':>17}ratio job / bare: CPU {jc / bc:.2f}x, wall {jw / bw:.2f}x")
    (m1, (_, b1), (_, j1)), (m2, (_, b2), (_, j2)) = results.values()
    marginal_job, marginal_bare = (j2 - j1) / (m2 - m1), (b2 - b1) / (m2 - m1)
    print(f"marginal CPU per media second: job {marginal_job:.3f}, bare ffmpeg {marginal_bare:.3f} -> "
          f"{marginal_job / marginal_bare:.2f}x (target <= 1.2x); fixed cost of a Beam job "
          f"~{j1 - marginal_job * m1:.1f} CPU s")
    print(f"media seconds per CPU second (marginal): job {1 / marginal_job:.1f}, bare {1 / marginal_bare:.1f}")
    print(f"log-mel: {mel_cpu:.2f} CPU s for {m2:.0f} s of audio = {100 * mel_cpu / j2:.1f}% of the job's "
          f"CPU (target < 5%)")
    return 0
