"""`mbt`: the toolkit's one command. Each subcommand is a thin wrapper over a library function.

    mbt ingest --manifest M.csv --output DIR --format webdataset,tfrecord
    mbt inspect DIR/train-00000-of-00004-g1a2b3c4d.tar --index 0 --png sample.png
    mbt stats DIR            mbt validate DIR
    mbt train --preset tiny --data DIR --workdir runs/tiny --model.fusion_layer=2
    mbt eval --workdir runs/tiny --data DIR --split validation
    mbt predict clip.mp4 videos/ --workdir runs/tiny --png timelines/
    mbt flops --preset mbt_base_audioset
    mbt bench ingest         mbt demo
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from tools import (bench_cmd, data_cmds, demo_cmd, flops_cmd, ingest_cmd, predict_cmd, report_cmd, table1,
                   train_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbt", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest_cmd.add_parser(sub)
    data_cmds.add_parsers(sub)
    train_cmds.add_parsers(sub)
    flops_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    predict_cmd.add_parser(sub)
    table1.add_parser(sub)
    parser.set_defaults(mbt=main)  # the command itself, for those that run others (demo), without an import circle
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can cause and fix: printed as one line, never as a traceback."""
    from pipelines.config import IngestError
    from pipelines.manifests import ManifestError
    from shards.format.errors import ShardError
    from shards.format.schema import SchemaError
    from shards.format.storage import StorageError

    errors = [IngestError, ManifestError, ShardError, SchemaError, StorageError, FileNotFoundError, UsageError]
    try:  # the model side's errors, when JAX is installed (the `train` extra)
        from mbt.checkpoints import CheckpointError
        from mbt.config import MBTError
        from mbt.distributed import DistributedError
        from mbt.overrides import OverrideError
        from mbt.report import ReportError
        from mbt.train import TrainError
        from tools.predict import PredictError

        errors += [CheckpointError, DistributedError, MBTError, OverrideError, PredictError, ReportError, TrainError]
    except ImportError:
        pass
    return tuple(errors)


class UsageError(ValueError):
    """A command line that can't work as given; the message says what to type instead."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `ingest` passes unknown flags on to Beam, `train` takes --section.field=value overrides; every
    # other command rejects them.
    args, extra = parser.parse_known_args(argv)
    takes_extra = args.command == "ingest" or getattr(args, "takes_overrides", False)
    if extra and not takes_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run: Callable[..., int] = args.run
    try:
        return run(args, extra) if takes_extra else run(args)
    except user_errors() as e:
        print(f"mbt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mbt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
