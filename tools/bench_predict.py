"""`mbt bench predict`: seconds of compute per minute of video for `mbt predict`, by stage.

For the tiny preset (every window of the source) and MBT-B/16 (one window: its model is the cost),
with freshly initialised parameters (the cost does not depend on their values), on the 720p trailer:
- decode: `pipelines.clip.decode` of each window (ffmpeg's CPU, frames to JPEG and 16 kHz audio),
  against bare ffmpeg running the same arguments (the bound);
- features: the log-mel of each window (this process's CPU);
- input: the shard encoding in memory and the evaluation input (JPEG decode of the sampled frames,
  centred crop, normalisation);
- model: the forward pass per window (compiled once before timing), against XLA's FLOPs of it at the
  FLOP/s of one large float32 matmul measured in the same run (the bound);
- total: `tools.predict.predict` end to end on the same windows (tiny only: B/16's is its model).
Rates are per minute of video: a stage's seconds x 60 / the seconds of video its windows cover.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from tools.bench_ingest import FALLBACK, FILM, bare_ffmpeg, children_cpu


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=str(FILM if FILM.exists() else FALLBACK), help="video to predict on")
    p.add_argument("--b16", default="one", choices=("one", "skip"), help="MBT-B/16: one window, or skip it")


def matmul_flops() -> float:
    """FLOP/s of a 2048^3 float32 matmul on the default device (the best of 5)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return 2 * 2048 ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(preset: str, source: str, windows: int | None, peak: float) -> list[str]:
    import jax

    from mbt.evaluate import logits_of
    from mbt.flops import xla_flops
    from mbt.model import init_params
    from mbt.train_config import get_config
    from pipelines.clip import decode, sample_of
    from pipelines.config import IngestConfig
    from pipelines.ffmpeg_stderr import probe
    from pipelines.logmel import log_mel
    from pipelines.manifests import ClipSpec
    from shards.input.memory_input import as_stored, eval_batches
    from tools.predict import Predictor, Video, predict, window_starts

    cfg = get_config(preset, ["model.num_classes=527"] if preset == "tiny" else [])
    span = cfg.input.clip_seconds
    duration = probe(source).duration
    starts = window_starts(0.0, duration, span, span)[:windows]
    covered = len(starts) * span
    ingest = IngestConfig(output="-")
    icfg = dataclasses.replace(cfg.input, test_windows=1, labels="multi_hot", rgb_uint8=False, num_workers=0,
                               batch_size=1)
    decode_wall = decode_cpu = mel_cpu = store_cpu = 0.0
    lazies, with_audio, with_audio_cpu = [], [], 0.0
    log_mel(decode(source, 0.0, 1.0, ingest).audio, ingest.mel)  # (librosa's and numba's first call: once)
    for i, s in enumerate(starts):
        c0, t0 = children_cpu(), time.perf_counter()
        clip = decode(source, s, s + span, ingest)
        decode_wall += time.perf_counter() - t0
        decode_cpu += children_cpu() - c0
        if clip.has_audio:  # (a window after the audio's end runs other arguments: no bound for it)
            with_audio.append((s, s + span))
            with_audio_cpu += children_cpu() - c0
        p0 = time.process_time()
        log_mel(clip.audio, ingest.mel)
        mel_cpu += time.process_time() - p0
        p0 = time.process_time()  # sample_of computes the log-mel again: subtracted below
        sample = sample_of(ClipSpec(row=i + 1, key=f"w{i}", path=source, start=s, end=s + span), [], ingest, clip)
        lazies.append(as_stored(sample))
        store_cpu += time.process_time() - p0
    store_cpu = max(0.0, store_cpu - mel_cpu)
    with tempfile.TemporaryDirectory(prefix="mbt-bench-predict-") as tmp:
        c0 = children_cpu()
        bare_ffmpeg(Path(source), with_audio, Path(tmp), workers=1)
        bare_cpu = children_cpu() - c0

    p0 = time.process_time()
    batches = list(eval_batches(lazies, icfg, num_classes=cfg.model.num_classes, mel_mean=-5.0, mel_std=3.0))
    input_cpu = time.process_time() - p0
    params = init_params(cfg.model, jax.random.key(0, impl="unsafe_rbg"))["params"]
    inputs = [{m: b[m] for m in cfg.model.modalities} for b in batches]
    t0 = time.perf_counter()
    jax.block_until_ready(logits_of(params, inputs[0], cfg.model))
    compile_s = time.perf_counter() - t0
    model_s = sum(_timed(lambda x=x: jax.block_until_ready(logits_of(params, x, cfg.model))) for x in inputs)
    flops = xla_flops(cfg.model) * len(inputs)
    per_min = 60.0 / covered
    lines = [f"{preset}: {len(starts)} window(s) of {span:g} s = {covered:g} s of {Path(source).name}; "
             f"seconds of compute per minute of video",
             f"  decode (ffmpeg CPU)          {decode_cpu * per_min:8.1f} s/min   "
             f"{with_audio_cpu / max(bare_cpu, 1e-9):.2f}x bare ffmpeg with the same args on the "
             f"{len(with_audio)} windows with audio (wall {decode_wall * per_min:.1f} s/min)",
             f"  features (log-mel)           {mel_cpu * per_min:8.1f} s/min",
             f"  input (store + eval input)   {(store_cpu + input_cpu) * per_min:8.1f} s/min",
             f"  model (forward)              {model_s * per_min:8.1f} s/min   {flops / model_s / 1e9:.1f} GFLOP/s"
             f" = {flops / model_s / peak:.2f} of a float32 matmul's {peak / 1e9:.0f} GFLOP/s "
             f"(compile once: {compile_s:.1f} s)"]
    if windows is None:  # the whole road, end to end, through predict() (jit already compiled above)
        p = Predictor(workdir="-", cfg=cfg, params=params, step=0, ingest=ingest, classes=[],
                      mel_mean=-5.0, mel_std=3.0)
        t0, c0 = time.perf_counter(), children_cpu()
        (result,) = predict(p, [Video(key="film", path=source, end=starts[-1] + span)], batch_size=1)
        wall, ffmpeg_cpu = time.perf_counter() - t0, children_cpu() - c0
        assert len(result["windows"]) == len(starts)
        parts = decode_cpu + mel_cpu + store_cpu + input_cpu + model_s
        lines.append(f"  total, predict() end to end  {wall * per_min:8.1f} s/min wall ({ffmpeg_cpu * per_min:.1f} "
                     f"of it ffmpeg CPU); the stages above sum to {parts * per_min:.1f} s/min")
    return lines


def run(args: argparse.Namespace) -> int:
    peak = matmul_flops()
    print(f"float32 matmul 2048^3: {peak / 1e9:.0f} GFLOP/s (the model's bound)")
    for preset, windows in (("tiny", None), ("mbt_base_audioset", 1)):
        if preset != "tiny" and args.b16 == "skip":
            continue
        print("\n".join(bench(preset, args.source, windows, peak)))
    return 0
