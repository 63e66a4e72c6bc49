"""`mbt flops`: parameters and forward GFLOPs per clip for each fusion strategy and fusion layer L_f.

The compute half of the MBT paper's Figure 3: XLA's own cost analysis of the compiled forward pass
beside the analytic count. JAX and the model are imported inside run(), so `mbt --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

DEFAULT_FUSIONS = ["bottleneck", "self_attention", "cross_attention"]
DEFAULT_FUSION_LAYERS = [0, 2, 4, 6, 8, 10, 12]


def add_parser(subparsers) -> None:
    """Add the `flops` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "flops",
        help="parameters and forward GFLOPs per clip, per fusion strategy and fusion layer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="any --model.FIELD=VALUE overrides the preset, e.g. --model.variant=S/16 --model.num_bottlenecks=8",
    )
    p.add_argument("--preset", default="mbt_base_audioset", help="preset whose model is costed (mbt.train_config.PRESETS)")
    p.add_argument("--frames", type=int, default=8, help="RGB frames per clip")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of spectrogram per clip (100 rows each)")
    p.add_argument("--image-size", type=int, default=224, help="side of the square RGB crops")
    p.add_argument("--classes", type=int, default=None,
                   help="classes of the head (default: the preset's; tiny, which takes them from the data: 10)")
    p.add_argument("--fusion", nargs="+", default=DEFAULT_FUSIONS, help="fusion strategies to cost")
    p.add_argument("--fusion-layers", nargs="+", type=int, default=DEFAULT_FUSION_LAYERS, help="values of L_f")
    p.add_argument("--no-xla", action="store_true", help="analytic count only (skips compiling each model)")
    p.set_defaults(run=run, takes_overrides=True)


def run(args, overrides: Sequence[str] = ()) -> int:
    """Print the table, one row per (fusion, L_f) as each is computed; 0 on success, 2 on a bad option.

    `overrides` are the command line's extra `--model.FIELD=VALUE` arguments.
    """
    from mbt import flops
    from mbt.config import MBTError
    from mbt.overrides import OverrideError
    from mbt.train_config import get_config

    try:
        bad = [o for o in overrides if not o.startswith("--model.")]
        if bad:
            raise MBTError(f"{' '.join(bad)}: flops takes only --model.FIELD=VALUE overrides")
        cfg = get_config(args.preset, [f"model.num_frames={args.frames}",
                                       f"model.spectrogram_frames={round(100 * args.seconds)}",
                                       f"model.image_size={args.image_size}", *overrides]).model
        if args.classes or not cfg.num_classes:
            cfg = dataclasses.replace(cfg, num_classes=args.classes or 10)
        print(
            f"{args.preset}: {cfg.variant} (depth {cfg.num_layers}, width {cfg.hidden_size}), "
            f"{'+'.join(cfg.modalities)}, {cfg.num_frames} frames of {cfg.image_size}x{cfg.image_size} "
            f"({cfg.rgb_tokenizer}), {cfg.spectrogram_frames / 100:g} s of spectrogram; "
            f"{cfg.num_bottlenecks} bottlenecks; forward pass of one clip"
        )
        print(flops.HEADER)
        print("-" * len(flops.HEADER))
        for row in flops.flops_rows(cfg, args.fusion, args.fusion_layers, xla=not args.no_xla):
            print(flops.format_row(row), flush=True)
    except (MBTError, OverrideError) as e:
        print(f"mbt flops: error: {e}", file=sys.stderr)
        return 2
    return 0
