"""Ingestion: manifests -> ffmpeg decode -> log-mel -> shards, as an Apache Beam job."""

import logging

__version__ = "0.1.0"

# Importing Beam without its GCP extras logs a warning about BigQuery client libraries on every run;
# ingestion never uses BigQuery, so that one message is noise (the Dataflow launcher checks for the
# extras itself, see pipelines.config).
logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
