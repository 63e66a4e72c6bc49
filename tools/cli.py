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
import errno
import os
import shutil
import signal
import sys
from typing import Callable, Sequence

from shards.format.errors import UserError
from tools import (bench_cmd, data_cmds, demo_cmd, flops_cmd, import_cmd, ingest_cmd, predict_cmd, report_cmd,
                   table1, train_cmds)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other user error of `mbt` (its subcommands'
    parsers are of this class too): 'mbt eval: error: argument --test-windows: ... (see mbt eval --help)'."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mbt", description=__doc__.split("\n\n")[0])
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
    import_cmd.add_parser(sub)
    parser.set_defaults(mbt=main)  # the command itself, for those that run others (demo), without an import circle
    return parser


class UsageError(UserError, ValueError):
    """A command line that can't work as given; the message says what to type instead."""


# A file system that refuses a write: what it means for the user, and the fix (the path is added)
_FS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space there or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space there or write elsewhere"),
    errno.EROFS: ("read-only file system", "write elsewhere"),
    errno.EACCES: ("permission denied", "fix its permissions or use another path"),
    errno.EPERM: ("operation not permitted", "fix its permissions or use another path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "use another path"),
    errno.EISDIR: ("is a folder where a file is needed", "name a file"),
    errno.EEXIST: ("already exists", "remove it or use another path"),
}
# the flags whose folder a write without a file name (f.write on a full disk) most likely went to
_OUTPUT_FLAGS = ("output", "out", "png", "workdir")


def file_system_error(e: OSError, args: argparse.Namespace | None = None) -> str | None:
    """One line for an OSError a full, read-only or misnamed destination causes, naming the path
    (the error's own, else the command's output flag), the fix and, for a full disk, the space left;
    None for any other OSError (a bug, not the user's to fix)."""
    if e.errno not in _FS_ERRORS:
        return None
    what, fix = _FS_ERRORS[e.errno]
    path = e.filename
    if path is None and args is not None:
        path = next((getattr(args, a) for a in _OUTPUT_FLAGS if getattr(args, a, None)), None)
    path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else None
    where = f"{path}: " if path else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT) and path:
        free = free_space(path)
        if free:
            what += f" ({free})"
    return f"{where}{what}; {fix}"


def free_space(path: str) -> str | None:
    """'12.3 MB free in /mnt/x': shutil.disk_usage of the nearest existing folder of `path`."""
    folder = os.path.realpath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if free >= size:
            return f"{free / size:.1f} {unit} free in {folder}"
    return f"{free} bytes free in {folder}"


def _closed_stdout() -> int:
    """A reader that stopped reading (`mbt stats DIR | head -1`): end quietly, as Unix tools do.
    stdout goes to /dev/null so that Python's own flush at exit does not complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (tests)
        pass
    return 128 + signal.SIGPIPE  # 141, what a shell reports for a process SIGPIPE ended


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
        rc = run(args, extra) if takes_extra else run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return rc
    except BrokenPipeError:
        return _closed_stdout()
    except UserError as e:  # bad input, a bad flag, a bad file: one line
        return _error(args, str(e).splitlines()[0] if str(e) else type(e).__name__)
    except FileNotFoundError as e:
        return _error(args, f"{e.filename}: no such file or folder; check the path" if e.filename
                      else str(e).splitlines()[0] if str(e) else "no such file or folder")
    except OSError as e:  # a full disk, a read-only folder, a file where a folder belongs
        line = file_system_error(e, args)
        if line is None:
            raise
        return _error(args, line)
    except KeyboardInterrupt:
        print(f"mbt {args.command}: interrupted", file=sys.stderr)
        return 130


def _error(args: argparse.Namespace, line: str) -> int:
    print(f"mbt {args.command}: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
