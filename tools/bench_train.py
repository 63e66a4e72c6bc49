"""`mbt bench train`: step time, clips/s and achieved FLOP/s of the train step, tiny and B/16.

FLOPs per step are XLA's cost analysis of the compiled `mbt.train.train_step` (forward, backward and
the SGD update, as it runs); achieved FLOP/s is that over the measured step time, and MFU that over the
chip's peak where it is known (dense bf16, per chip: KNOWN_PEAKS; a CPU's is not, so no MFU there).

- tiny: the `tiny` preset on real batches from shards.input (the demo data, or shards synthesised
  here), three ways in the same run: the trainer's loop (input + step), the step alone on one batch held
  in memory, and the input alone. The time spent waiting in `next(batches)` is printed: when the loop's
  step time matches the step alone, the input is not the bottleneck.
- B/16: `mbt_base_audioset` on a synthetic in-memory batch. On an accelerator it runs a few steps; on CPU
  a step of even batch 2 (about 2.6 TFLOP) takes minutes, so by default it is only compiled and
  cost-analysed (`--b16 step` runs it anyway).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

# Dense bf16 peak FLOP/s per chip, by a substring of jax's device_kind (first match wins).
KNOWN_PEAKS = (
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12),
    ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("V100", 125e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12), ("TPU v3", 123e12),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="demo shards for the tiny preset; None: demo_out/shards if it exists, else "
                        "shards synthesised here")
    p.add_argument("--steps", type=int, default=20, help="measured steps of the tiny preset (per way)")
    p.add_argument("--batch-size", type=int, default=None, help="tiny batch size; None: the preset's")
    p.add_argument("--workers", type=int, default=None,
                   help="loader worker processes for the tiny input; None: the preset's input.num_workers")
    p.add_argument("--b16", default="auto", choices=("auto", "step", "compile", "skip"),
                   help="B/16: run steps (auto: on an accelerator), only compile + cost-analyse, or skip")
    p.add_argument("--b16-batch", type=int, default=None, help="B/16 batch; None: 2 on CPU, 32 on an accelerator")
    p.add_argument("--b16-steps", type=int, default=5, help="measured B/16 steps (after one warm-up)")
    p.add_argument("--b16-dtype", default=None, choices=("float32", "bfloat16"),
                   help="B/16 compute dtype; None: bfloat16 on an accelerator, float32 on CPU")


def peak_flops(device) -> float | None:
    """The device's dense bf16 peak FLOP/s, or None when unknown (every CPU)."""
    if device.platform == "cpu":
        return None
    kind = getattr(device, "device_kind", "")
    return next((peak for name, peak in KNOWN_PEAKS if name in kind), None)


def compile_step(cfg, state, batch, total_steps: int = 1000, steps_per_epoch: int = 100):
    """(compiled train step taking (state, batch, rng), FLOPs of one step from XLA's cost analysis)."""
    import jax

    from mbt.train import train_step

    lowered = train_step.lower(state, batch, jax.random.key(0), cfg=cfg, total_steps=total_steps,
                               steps_per_epoch=steps_per_epoch)
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, float(cost.get("flops", float("nan")))


def timed_steps(step, state, batches, n: int, rng) -> tuple[object, float, float]:
    """Run n steps, each on next(batches); (state, seconds per step, seconds waiting for batches)."""
    import jax

    wait, t0 = 0.0, time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t
        state, metrics = step(state, batch, rng)
    jax.block_until_ready((state, metrics))
    return state, (time.perf_counter() - t0) / n, wait / n


def _line(name: str, seconds: float, batch: int, flops: float, peak: float | None, extra: str = "") -> str:
    achieved, rate = flops / seconds, batch / seconds
    mfu = f"{100 * achieved / peak:5.1f}%" if peak else "  n/a"
    return (f"  {name:<26} {1000 * seconds:9.1f} ms {rate:9.{1 if rate >= 10 else 3}f} clips/s "
            f"{achieved / 1e9:10.1f} GFLOP/s  MFU {mfu}{extra}")


def bench_tiny(args, device, peak) -> None:
    import jax

    from mbt.input import data_mesh, device_batches
    from mbt.train import plan_run
    from mbt.train_config import get_config
    from mbt.train_state import init_state
    from shards.input import make_input

    spec, tmp = args.data, None
    if spec is None and os.path.exists(os.path.join("demo_out", "shards", "train.index.json")):
        spec = os.path.join("demo_out", "shards")
    if spec is None:
        from tools.bench_input import synthesise

        tmp = tempfile.mkdtemp(prefix="mbt-bench-train-")
        spec = synthesise(tmp, 32)
        print(f"tiny: no demo shards (run `mbt demo`); synthesised 32 clips of 10 s in {tmp}")
    try:
        overrides = [] if args.workers is None else [f"input.num_workers={args.workers}"]
        if args.batch_size:
            overrides.append(f"input.batch_size={args.batch_size}")
        plan = plan_run(get_config("tiny", overrides), spec)
        cfg, b = plan.cfg, plan.cfg.input.batch_size
        m = cfg.model
        print(f"tiny: depth {m.num_layers}, width {m.hidden_size}, {m.num_frames} frames of {m.image_size} px + "
              f"{m.spectrogram_frames} spectrogram rows, {m.fusion} L_f={m.fusion_layer}, batch {b}, "
              f"{cfg.input.num_workers} loader workers; data {spec}")
        mesh = data_mesh([device])  # one chip: FLOPs and MFU per chip
        t = time.perf_counter()
        state = jax.device_put(init_state(cfg, 1000, plan.steps_per_epoch, 0), jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec()))
        host = make_input(plan.source, cfg.input, training=True, seed=0)
        feed = device_batches(host, mesh)
        strip = lambda batch: {k: v for k, v in batch.items() if k != "key"}  # noqa: E731
        batches = (strip(x) for x in feed)
        first = next(batches)
        step, flops = compile_step(cfg, state, first, steps_per_epoch=plan.steps_per_epoch)
        print(f"  init + compile {time.perf_counter() - t:.1f} s; XLA: {flops / 1e9:.2f} GFLOP per step "
              f"({flops / b / 1e9:.3f} per clip, forward + backward + update)")
        rng = jax.random.key(1)
        state, _, _ = timed_steps(step, state, batches, 3, rng)  # warm-up: first shard reads, caches

        # 1. The trainer's loop: each step takes the next real batch.
        state, loop_s, wait_s = timed_steps(step, state, batches, args.steps, rng)
        # 2. The step alone: one batch held on the device, no input work at all.
        held = next(batches)
        state, alone_s, _ = timed_steps(step, state, iter(lambda: held, None), args.steps, rng)
        # 3. The input alone: host batches, no model.
        it = make_input(plan.source, cfg.input, training=True, seed=1)
        next(it)
        t = time.perf_counter()
        for _ in range(args.steps):
            next(it)
        input_s = (time.perf_counter() - t) / args.steps
        it.close(), host.close()
        stall = max(loop_s - alone_s, 0.0)  # what the input costs the loop, waiting or sharing cores
        print(f"  {'':<26} {'step':>12} {'clips/s':>17} {'achieved':>18}")
        print(_line("loop (real input + step)", loop_s, b, flops, peak))
        print(_line("step alone (held batch)", alone_s, b, flops, peak))
        print(f"  {'input alone (no model)':<26} {1000 * input_s:9.1f} ms {b / input_s:9.1f} clips/s")
        if input_s > alone_s:
            verdict = "the input IS the bottleneck: it makes a batch slower than a step; raise --workers"
        elif stall > 0.25 * alone_s:
            verdict = (f"the input keeps up (a batch in {input_s / alone_s:.2f} step times) but shares the "
                       f"cores with the step: fewer cores here than the step and the input need together")
        else:
            verdict = "the input is not the bottleneck"
        print(f"  waiting for data: {1000 * wait_s:.1f} ms/step inside next() (an upper bound: the step, dispatched "
              f"asynchronously, runs meanwhile); the loop is {1000 * stall:.1f} ms/step "
              f"({100 * stall / alone_s:+.0f}%) slower than the step alone: {verdict}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_b16(args, device, peak) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mbt.train_config import get_config
    from mbt.train_state import TrainState, init_state, make_optimizer

    cpu = device.platform == "cpu"
    mode = args.b16 if args.b16 != "auto" else ("compile" if cpu else "step")
    b = args.b16_batch or (2 if cpu else 32)
    dtype = args.b16_dtype or ("float32" if cpu else "bfloat16")
    cfg = get_config("mbt_base_audioset", [f"input.batch_size={b}", f"model.dtype={dtype}"]).check()
    m = cfg.model
    print(f"B/16: mbt_base_audioset, {m.num_frames} frames of {m.image_size} px + {m.spectrogram_frames} "
          f"spectrogram rows, {m.fusion} L_f={m.fusion_layer}, batch {b}, {dtype}, synthetic batch; "
          f"{'compile + cost analysis only' if mode == 'compile' else f'{args.b16_steps} steps'}")
    rs = np.random.default_rng(0)
    batch = {k: rs.standard_normal(s).astype(np.float32) for k, s in m.input_shapes(b).items()}
    batch["labels"] = (rs.random((b, m.num_classes)) < 0.01).astype(np.float32)
    batch["mask"] = np.ones((b,), np.float32)
    t = time.perf_counter()
    init_s = 0.0
    if mode == "compile":  # abstract state: nothing allocated, only compiled
        from mbt.model import param_shapes

        params = param_shapes(m)["params"]
        opt = jax.eval_shape(make_optimizer(cfg, 1000, 100).init, params)
        state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt)
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    else:
        state = jax.block_until_ready(init_state(cfg, 1000, 100, 0))
        init_s = time.perf_counter() - t
    step, flops = compile_step(cfg, state, batch)
    took = (f"init {init_s:.1f} s, " if init_s else "") + f"compile {time.perf_counter() - t - init_s:.1f} s"
    print(f"  {took}; XLA: {flops / 1e12:.2f} TFLOP per step "
          f"({flops / b / 1e12:.3f} per clip, forward + backward + update)")
    if mode == "compile":
        print("  not run on CPU, where a step takes minutes (86 s at batch 2 on 2 cores, ~31 GFLOP/s): "
              "pass --b16 step to time it anyway")
        return
    rng = jax.random.key(1)
    held = {k: jax.device_put(v) for k, v in batch.items()}
    state, _, _ = timed_steps(step, state, iter(lambda: held, None), 1, rng)  # warm-up
    state, seconds, _ = timed_steps(step, state, iter(lambda: held, None), args.b16_steps, rng)
    print(_line("step (held batch)", seconds, b, flops, peak))


def run(args: argparse.Namespace) -> int:
    import jax

    warnings.filterwarnings("ignore", message=".*donated buffers.*")  # CPU cannot donate; harmless
    device = jax.devices()[0]
    peak = peak_flops(device)
    print(f"backend {jax.default_backend()}: {jax.device_count()} x {getattr(device, 'device_kind', device)}; "
          + (f"peak {peak / 1e12:.0f} TFLOP/s dense bf16 per chip" if peak else
             "peak FLOP/s unknown for this device, so no MFU"))
    print("(benchmarks one device; time per step includes dispatch; FLOPs from XLA's cost analysis)")
    bench_tiny(args, device, peak)
    if args.b16 != "skip":
        bench_b16(args, device, peak)
    return 0

