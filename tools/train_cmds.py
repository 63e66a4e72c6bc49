"""`mbt train` and `mbt eval`: thin wrappers over mbt.train.train and mbt.evaluate.evaluate."""

from __future__ import annotations

import argparse
import json

D = argparse.ArgumentDefaultsHelpFormatter
OVERRIDES = ("any --SECTION.FIELD=VALUE overrides the preset (sections: model, input, optim, run), "
             "e.g. --model.fusion_layer=4 --input.batch_size=32 --optim.base_lr=0.1")


def positive_int(text: str) -> int:
    """argparse type of a count that must be 1 or more (windows, batch sizes): 0 is not 'the default'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: use 1 or more")
    return value


def add_parsers(sub) -> None:
    from mbt.train_config import PRESETS

    p = sub.add_parser("train", help="train MBT on shards (resumes from the workdir's latest checkpoint)",
                       formatter_class=D, epilog=OVERRIDES)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="the settings to start from (default: tiny; with --run.init_from=RUN, RUN's own)")
    p.add_argument("--data", required=True, help="dataset folder (SPLIT.index.json) or a shard pattern")
    p.add_argument("--split", default="train")
    p.add_argument("--eval-data", help="evaluate on this dataset (split --run.eval_split) during/after")
    p.add_argument("--workdir", required=True, help="checkpoints, config.json, metrics.jsonl, tensorboard/")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("multi-process (one process per host or GPU; TPU pods need none of these)")
    g.add_argument("--distributed", action="store_true",
                   help="join a cluster that jax.distributed detects itself (TPU pods, SLURM)")
    g.add_argument("--coordinator", help="HOST:PORT of process 0's coordinator service")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)
    g.add_argument("--init-timeout", type=int, default=60, help="seconds to wait for the other processes")
    p.set_defaults(run=run_train, takes_overrides=True)

    p = sub.add_parser("eval", help="evaluate a run's latest checkpoint: fused and per-modality metrics",
                       formatter_class=D)
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--test-windows", type=positive_int, default=None, help="windows per clip (multi-clip test)")
    p.add_argument("--json", action="store_true", help="print everything, per-class AP included")
    p.set_defaults(run=run_eval)


def check_workdir(workdir: str) -> None:
    """MBTError when `mbt train` could not, or should not, write its run into `workdir`: a file, a
    folder under a file, a read-only folder, or a dataset folder (checkpoints would go among its shards)."""
    import glob
    import os

    from mbt.config import MBTError
    from pipelines.config import output_folder_problem
    from shards.format.dataset_index import INDEX_SUFFIX

    if problem := output_folder_problem(workdir):
        raise MBTError(f"--workdir {workdir}: {problem}")
    if os.path.isdir(workdir) and (found := glob.glob(os.path.join(glob.escape(workdir), "*" + INDEX_SUFFIX))):
        raise MBTError(f"--workdir {workdir}: is a dataset folder ({os.path.basename(found[0])}); a run "
                       f"writes checkpoints, so give it a folder of its own, e.g. --workdir runs/NAME")


def run_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from mbt.train_config import get_config

    check_workdir(args.workdir)
    cfg = get_config(args.preset or "tiny", overrides)  # a bad override fails before JAX starts
    if args.preset is None and cfg.run.init_from:  # a fine-tune: the settings of the run it starts from
        from mbt.run_dir import fine_tune_config

        cfg = fine_tune_config(cfg.run.init_from, overrides)
    if args.distributed or args.coordinator or args.num_processes:
        from mbt.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id, args.init_timeout)
    from mbt.train import train

    last = train(cfg, args.data, args.workdir, eval_data=args.eval_data, split=args.split,
                 progress=not args.no_progress)
    print(f"train: done at step {last.get('step')}, loss {last.get('loss', float('nan')):.4f}; "
          f"checkpoints in {args.workdir}/checkpoints")
    if "eval" in last:
        print(format_eval(last["eval"]))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from mbt.evaluate import evaluate
    from mbt.run_dir import load_run

    cfg, params, step = load_run(args.workdir)
    result = evaluate(cfg, params, args.data, args.split, test_windows=args.test_windows)
    result["step"] = step
    print(json.dumps(result, indent=1) if args.json else format_eval(result))
    return 0


def format_eval(result: dict) -> str:
    lines = [f"eval: {result['clips']} clips x {result['windows']} windows"]
    for name in ("fused", "rgb", "spectrogram"):
        if name in result:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in result[name].items() if isinstance(v, float))
            lines.append(f"  {name:<12} {scores}")
    return "\n".join(lines)
