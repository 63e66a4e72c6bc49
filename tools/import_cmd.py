"""`mbt import scenic|ast CHECKPOINT --workdir RUN`: published weights as a run directory.

    mbt import scenic gs://B/mbt_as500k/checkpoint_500000 --workdir runs/as500k --fusion-layer 8 \
        --classes class_labels_indices.csv
    mbt import ast audioset_10_10_0.4593.pth --workdir runs/ast --classes class_labels_indices.csv
    mbt import ast ./ast-finetuned-audioset-10-10-0.4593 --workdir runs/ast_hf     # Hugging Face folder

The result is an ordinary run (config.json, data.json with the preprocessing the weights expect, an
orbax checkpoint): `mbt eval`, `mbt predict` and `mbt report` work on it unchanged, and `mbt train
--run.init_from=RUN` fine-tunes from it. The readers live in mbt (mbt.scenic_import, mbt.ast_import);
this module only parses the command line.
"""

from __future__ import annotations

import argparse

D = argparse.ArgumentDefaultsHelpFormatter


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("import", help="published MBT (scenic) or AST weights as a run directory",
                              description=__doc__.split("\n\n")[0], formatter_class=D)
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    add_scenic_parser(kinds)
    add_ast_parser(kinds)


# --- scenic's MBT ------------------------------------------------------------------------------------
def add_scenic_parser(kinds) -> None:
    p = kinds.add_parser("scenic", help="a scenic MBT checkpoint (Flax msgpack)", formatter_class=D)
    p.set_defaults(run=run_scenic)


def run_scenic(args: argparse.Namespace) -> int:
    raise NotImplementedError  # filled in by the scenic importer


# --- AST ---------------------------------------------------------------------------------------------
def add_ast_parser(kinds) -> None:
    p = kinds.add_parser("ast", help="AST weights: the AST repository's .pth, or a Hugging Face folder",
                         formatter_class=D)
    p.set_defaults(run=run_ast)


def run_ast(args: argparse.Namespace) -> int:
    raise NotImplementedError  # filled in by the AST importer
