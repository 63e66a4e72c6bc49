"""`mbt bench jpeg`: which JPEG encoder the ingestion keeps, at equal bytes and quality.

The frames of a real film go through the job's own filter graph (`pipelines.decode_args.video_graph`: 25
fps, short side 256, full-range BT.601) twice, one thread each:

- ffmpeg's mjpeg encoder at `-q:v Q` (what the job runs): the run's CPU;
- raw yuvj420p planes through the pipe, then libjpeg-turbo (`simplejpeg.encode_jpeg_yuv_planes`) at
  each quality: the raw run's CPU plus the encoding's.

Quality is PSNR of each stored frame against the raw scaled frame, on luma and on chroma (the decoded
chroma averaged back to the 4:2:0 grid); bytes are the mean JPEG size. Compare rows of equal bytes.
"""

from __future__ import annotations

import argparse
import io
import resource

import numpy as np

from tools.bench_ingest import FALLBACK, FILM


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=str(FILM if FILM.exists() else FALLBACK), help="a real video")
    p.add_argument("--mjpeg-q", type=int, default=3, help="ffmpeg -q:v of the job's encoder")
    p.add_argument("--qualities", default="80,85,88,90", help="libjpeg-turbo qualities to compare")


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _frames(source: str, output: list[str]) -> tuple[bytes, float]:
    """ffmpeg's stdout for the job's video graph with `output` options, and the run's CPU seconds."""
    from pipelines.decode_args import _fps_mode_args, video_graph
    from pipelines.ffmpeg_run import run_ffmpeg
    from pipelines.media_input import input_arg

    args = ["-filter_complex_threads", "1", "-filter_threads", "1", "-threads", "1", "-i", input_arg(source),
            "-filter_complex", video_graph(256), "-map", "[frames]", *_fps_mode_args(), *output]
    before = _cpu()[1]
    run = run_ffmpeg(args, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {run.last_line}")
    return run.stdout, _cpu()[1] - before


def _planes(jpeg: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma [2, h/2, w/2]) of a JPEG as libjpeg decodes it, chroma averaged back to 4:2:0."""
    from PIL import Image

    im = Image.open(io.BytesIO(jpeg))
    im.draft("YCbCr", im.size)  # no colour conversion: the planes as stored
    a = np.asarray(im if im.mode == "YCbCr" else im.convert("YCbCr"))
    h, w = a.shape[:2]
    chroma = a[..., 1:].astype(np.float64).reshape(h // 2, 2, w // 2, 2, 2).mean((1, 3))
    return a[..., 0], np.moveaxis(chroma, -1, 0)


def _psnr(jpegs: list[bytes], raw: np.ndarray, h: int, w: int) -> tuple[float, float]:
    se_y = se_c = 0.0
    for jpeg, frame in zip(jpegs, raw):
        y, c = _planes(jpeg)
        ref_y = frame[: h * w].reshape(h, w).astype(np.float64)
        ref_c = frame[h * w:].reshape(2, h // 2, w // 2)
        se_y += float(((y - ref_y) ** 2).sum())
        se_c += float(((c - ref_c) ** 2).sum())
    n = len(jpegs)
    return (10 * np.log10(255 ** 2 / (se_y / (n * h * w))), 10 * np.log10(255 ** 2 / (se_c / (n * h * w / 2))))


def run(args: argparse.Namespace) -> int:
    import simplejpeg

    from shards.format.jpeg import jpeg_size, split_jpegs

    _frames(args.source, ["-frames:v", "50", "-f", "null", "-"])  # warm the page cache and the binary
    mjpeg, mjpeg_cpu = _frames(args.source, ["-c:v", "mjpeg", "-q:v", str(args.mjpeg_q), "-threads", "1",
                                              "-f", "image2pipe", "pipe:1"])
    jpegs = split_jpegs(mjpeg)
    h, w = jpeg_size(jpegs[0])
    raw_bytes, raw_cpu = _frames(args.source, ["-c:v", "rawvideo", "-pix_fmt", "yuvj420p", "-threads", "1",
                                               "-f", "rawvideo", "pipe:1"])
    size = h * w * 3 // 2
    raw = np.frombuffer(raw_bytes, np.uint8)[: len(jpegs) * size].reshape(-1, size)
    print(f"bench jpeg: {len(jpegs)} frames of {w}x{h} from {args.source}, one thread")
    print(f"{'encoder':<34}{'KB/frame':>9}{'PSNR Y':>8}{'PSNR UV':>9}{'CPU s':>7}")
    py, pc = _psnr(jpegs, raw, h, w)
    print(f"{f'ffmpeg mjpeg -q:v {args.mjpeg_q} (the job)':<34}{sum(map(len, jpegs)) / len(jpegs) / 1024:>9.1f}"
          f"{py:>8.2f}{pc:>9.2f}{mjpeg_cpu:>7.2f}")
    for q in (int(x) for x in args.qualities.split(",")):
        t0 = _cpu()[0]
        out = [simplejpeg.encode_jpeg_yuv_planes(f[: h * w].reshape(h, w),
                                                 f[h * w: h * w * 5 // 4].reshape(h // 2, w // 2),
                                                 f[h * w * 5 // 4:].reshape(h // 2, w // 2), quality=q)
               for f in raw]
        encode_cpu = _cpu()[0] - t0
        py, pc = _psnr(out, raw, h, w)
        print(f"{f'raw pipe + libjpeg-turbo q{q}':<34}{sum(map(len, out)) / len(out) / 1024:>9.1f}"
              f"{py:>8.2f}{pc:>9.2f}{raw_cpu + encode_cpu:>7.2f}")
    print(f"raw frames through the pipe: {size / 1024:.0f} KB each, against ~{len(mjpeg) / len(jpegs) / 1024:.0f} KB "
          f"of JPEG (a clip's memory in the job)")
    return 0
