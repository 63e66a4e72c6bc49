"""`mbt bench input`: the training input against decoding the same JPEGs and nothing else.

The full input as the trainer runs it (shards.input: read, shuffle, sample 8 frames, decode them,
scale-jitter crop to 224, flip, SpecAugment, batch; RGB shipped as uint8 and normalised on the
device, or with --rgb-float32 on the host) runs in this process on one thread, and every JPEG it
decodes is recorded; the bound is the same decoder (shards.format.jpeg.decode_jpeg) decoding exactly
those JPEGs whole, into one reused buffer, and nothing else, right after each batch, so that input
and bound run under the same load from the machine's neighbours. (Where shards.format._jpeg_region is built
the input decodes only each frame's crop box, so it does less decoding than the bound.) Rates are
per CPU second (this process, and the workers' /proc times), so other load on the machine does not
count against the input; wall rates are printed beside them. Then the same input runs in 1..N
worker processes (torch DataLoader), batches delivered here, in stretches each followed by the
bound, and the cores needed to feed MBT-B/16 on one H200 at the planning figure of 300 clips/s follow.

Without --data it synthesises its shards in a temporary folder: 10 s clips of 25 fps Pillow JPEGs at
256 px short side (455x256: a moving scene with sensor-like noise, q90, like `mbt ingest` output).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="shard spec or dataset folder; without it, shards are synthesised")
    p.add_argument("--split", default="train", help="split of a dataset folder")
    p.add_argument("--format", default=None, help="webdataset or tfrecord; None: the data's (synthesised: webdataset)")
    p.add_argument("--clips", type=int, default=16, help="clips to synthesise (without --data)")
    p.add_argument("--frames", type=int, default=8, help="frames per example")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="window of the frames and spectrogram")
    p.add_argument("--crop", type=int, default=224, help="crop size")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="measure 1..N worker processes")
    p.add_argument("--seconds", type=float, default=8.0, help="measuring time per configuration")
    p.add_argument("--rounds", type=int, default=3, help="in-process rounds (input, then its bound) to take the median of")
    p.add_argument("--target", type=float, default=300.0, help="clips/s to feed (MBT-B/16 on one H200)")
    p.add_argument("--colour-jitter", action="store_true", help="add colour jitter (off by default)")
    p.add_argument("--rgb-float32", action="store_true",
                   help="normalise RGB to float32 on the host, instead of shipping uint8 pixels that mbt.input "
                        "normalises on the device (what the training presets do)")


def synthesise(folder: str, clips: int, seconds: float = 10.0, width: int = 455, height: int = 256,
               fmt: str = "webdataset") -> str:
    """`clips` clips of `seconds` s at 25 fps in 4 shards, with an index, as `mbt ingest` writes them."""
    import numpy as np
    from PIL import Image

    from shards.format.naming import shard_name
    from shards.format.schema import Sample
    from shards.format.tfrecord_codec import write_tfrecord
    from shards.format.webdataset_codec import write_webdataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    frames_per_clip, pool = round(25 * seconds), 25  # each clip cycles through 25 distinct frames
    samples = []
    for c in range(clips):
        base = (np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
                + rng.uniform(-60, 60, 3))
        jpegs = []
        for i in range(pool):
            img = base.copy()
            x0, y0 = int(40 + 12 * i + 7 * c) % (width - 80), int(30 + 5 * i) % (height - 80)
            img[y0:y0 + 80, x0:x0 + 80] = rng.uniform(0, 255, 3)
            img += rng.normal(0, 6, img.shape)
            out = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
            jpegs.append(out.getvalue())
        mel = rng.normal(-5, 3, (round(100 * seconds), 128)).astype(np.float32)
        samples.append(Sample(key=f"clip{c:04d}_0", frames=[jpegs[i % pool] for i in range(frames_per_clip)],
                              melspec=mel, labels=[c % 10], label_text=[f"class{c % 10}"],
                              meta={"start": 0.0, "end": seconds}))
    shards = []
    for s in range(4):
        name = shard_name("train", s, 4, fmt)
        with open(os.path.join(folder, name), "wb") as f:
            (write_webdataset if fmt == "webdataset" else write_tfrecord)(f, samples[s::4])
        shards.append({"path": name, "shard": s, "samples": len(samples[s::4]),
                       "bytes": os.path.getsize(os.path.join(folder, name))})
    index = {"split": "train", "formats": [fmt], "shards": {fmt: shards},
             "num_samples": clips, "classes": [f"class{i}" for i in range(10)], "mel_mean": -5.0, "mel_std": 3.0}
    with open(os.path.join(folder, "train.index.json"), "w") as f:
        json.dump(index, f)
    return folder


def worker_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `pids`."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


_BUFFER: dict[str, object] = {}


def decode_seconds(frames: list[bytes], decode) -> float:
    """CPU seconds of decoding `frames` whole, one after another into one reused buffer, and nothing else."""
    import numpy as np

    from shards.format.jpeg import jpeg_size

    need = max(h * w for h, w in map(jpeg_size, frames)) * 3  # (clips may differ in size)
    scratch = _BUFFER.get("scratch")
    if scratch is None or scratch.size < need:
        scratch = _BUFFER["scratch"] = np.zeros(need, np.uint8)  # (written: no page faults while timed)
    c0 = time.process_time()
    for data in frames:
        decode(data, out=scratch)
    return time.process_time() - c0


def run(args: argparse.Namespace) -> int:
    import torch

    from shards.format import jpeg
    from shards.input import InputConfig, make_input

    torch.set_num_threads(1)  # one worker = one core, here as in a DataLoader worker
    tmp = None
    spec = args.data
    if spec is None:
        tmp = tempfile.mkdtemp(prefix="mbt-bench-input-")
        t0 = time.perf_counter()
        spec = synthesise(tmp, args.clips, fmt=args.format or "webdataset")
        print(f"synthesised {args.clips} clips of 10 s (25 fps, 455x256 JPEG q90) in "
              f"{time.perf_counter() - t0:.1f} s: {tmp}")
    try:
        cfg = InputConfig(batch_size=args.batch_size, format=args.format, num_frames=args.frames,
                          clip_seconds=args.clip_seconds, crop_size=args.crop, shuffle_buffer=16,
                          colour_jitter=args.colour_jitter, rgb_uint8=not args.rgb_float32)
        print(f"input: {args.frames} frames over {args.clip_seconds:g} s, {cfg.crop} crop to {args.crop}, flip, "
              f"{'colour jitter, ' if cfg.colour_jitter else ''}SpecAugment, batches of {args.batch_size}, RGB "
              + ("float32, normalised on the host" if args.rgb_float32 else
                 "uint8 (normalised on the device, as the training presets do)"))
        print("decoder: " + ("libjpeg-turbo, only each frame's crop box (shards.format._jpeg_region)"
                             if jpeg._region_decoder() else "simplejpeg, whole frames (shards.format._jpeg_region "
                             "was not built)"))

        # --- the full input on one core, recording the JPEGs each batch decodes; each batch is followed
        # at once by its bound (the same decoder on exactly those JPEGs, whole, into one reused buffer,
        # nothing else), so the two are measured under the same load from the VM's neighbours, to within
        # a batch; the median of the rounds is reported.
        decoded: list[bytes] = []
        real = jpeg.decode_jpeg
        it = make_input(spec, cfg, split=args.split, seed=0, process_index=0, process_count=1)
        next(it), next(it)  # warm up: imports, first shard reads
        rounds, recorded = [], []
        jpeg.decode_jpeg = lambda data, **kw: (decoded.append(data), real(data, **kw))[1]
        try:  # (the bound calls `real`, so it records nothing)
            for _ in range(args.rounds):
                frames: list[bytes] = []  # what this round's batches decoded
                input_cpu = bound_cpu = input_wall = 0.0
                n, t_end = 0, time.perf_counter() + args.seconds / args.rounds
                while time.perf_counter() < t_end:
                    decoded.clear()
                    t0, c0 = time.perf_counter(), time.process_time()
                    next(it)
                    input_cpu += time.process_time() - c0
                    input_wall += time.perf_counter() - t0
                    # (in process nothing is read ahead: these are exactly this batch's JPEGs)
                    bound_cpu += decode_seconds(decoded, real)
                    frames += decoded
                    n += args.batch_size
                rounds.append((bound_cpu / input_cpu, n / input_cpu, n / bound_cpu, n / input_wall))
                recorded.append((frames, n))
        finally:
            jpeg.decode_jpeg = real
        ratio, full, bound, wall = sorted(rounds)[len(rounds) // 2]
        print(f"rates per CPU second (one thread; robust to other load on the machine; median of {args.rounds} "
              f"rounds, ratios {', '.join(f'{r[0]:.2f}' for r in rounds)}):")
        print(f"  full input, 1 core:   {full:7.1f} samples/s  ({1000 / full:.1f} ms/sample; wall {wall:.1f}/s)")
        print(f"  bound (decode only):  {bound:7.1f} samples/s  ({1000 / bound:.1f} ms/sample: the JPEGs each "
              f"batch decoded, decoded whole right after it, same decoder, one reused buffer)")
        print(f"  ratio:                {ratio:7.2f}  (input / bound; target >= 0.80)")

        # --- 1..N worker processes, batches delivered to this process. The run is cut into as many
        # stretches as there were rounds, each followed by the bound on one round's JPEGs (the workers
        # wait then, their prefetch full); CPU: the workers' over the run, this process's in the stretches.
        print("worker processes (torch DataLoader), batches delivered here:")
        print("  workers  samples/s (wall)  samples per CPU s  CPU ms/sample (workers + main)  ratio")
        per_cpu = {}
        for w in range(1, args.workers + 1):
            wcfg = dataclasses.replace(cfg, num_workers=w)
            n = 0
            main_cpu = wall = bound_cpu = 0.0
            bound_n = 0
            with make_input(spec, wcfg, split=args.split, seed=0, process_index=0, process_count=1) as it:
                for _ in range(3 * w):  # workers started and their first batches made
                    next(it)
                pids = [p.pid for p in getattr(it._loader, "_workers", [])]
                workers_cpu = -worker_seconds(pids)
                for k in range(args.rounds):
                    t0, c0 = time.perf_counter(), time.process_time()
                    while time.perf_counter() - t0 < args.seconds / args.rounds:
                        next(it)
                        n += args.batch_size
                    main_cpu += time.process_time() - c0
                    wall += time.perf_counter() - t0
                    if k == args.rounds - 1:
                        workers_cpu += worker_seconds(pids)
                    jpegs, samples = recorded[k % len(recorded)]
                    bound_cpu += decode_seconds(jpegs, real)
                    bound_n += samples
            per_cpu[w] = n / (main_cpu + workers_cpu)
            ratio_w = per_cpu[w] / (bound_n / bound_cpu)
            print(f"  {w:7d}  {n / wall:16.1f}  {per_cpu[w]:17.1f}  {1000 / per_cpu[w]:29.1f}  {ratio_w:5.2f}")

        most, workers = per_cpu[max(per_cpu)], f"{max(per_cpu)} worker" + "s" * (max(per_cpu) > 1)
        print(f"to feed {args.target:g} clips/s (MBT-B/16 on one H200): {math.ceil(args.target / most)} cores "
              f"at {most:.1f} samples per CPU second with {workers} ({math.ceil(args.target / full)} "
              f"at the in-process rate)")  # (all workers busy: transport and contention included)
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
