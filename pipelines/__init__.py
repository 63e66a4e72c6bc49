"""Ingestion: manifests -> ffmpeg decode -> log-mel -> shards, as an Apache Beam job."""

__version__ = "0.1.0"
