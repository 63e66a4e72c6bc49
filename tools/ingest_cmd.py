"""`mbt ingest`: run the Beam ingestion job (any extra --flag is a Beam pipeline option)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from pipelines.config import add_arguments

    p = sub.add_parser("ingest", help="labelled videos -> WebDataset / TFRecord shards (Apache Beam)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       epilog="Any other --flag is a Beam option, e.g. --runner=DataflowRunner "
                              "--project=P --region=R --temp_location=gs://B/tmp")
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.ingest import run_from_args

    return run_from_args(args, beam_args)
