"""The ingestion job's settings: one frozen dataclass, every field a command-line flag."""

from __future__ import annotations

import argparse
import dataclasses
import re

from shards.naming import FORMATS, num_shards_for
from shards.schema import MelParams


class IngestError(ValueError):
    """A job that cannot start: bad options or output; the message names the option and the fix."""


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What the job writes and the limits it enforces per clip."""

    output: str  # folder for shards, index and failures (local, gs://, s3://)
    split: str = "train"  # shard name prefix: SPLIT-00000-of-00064.tar
    formats: tuple[str, ...] = ("webdataset",)  # any of FORMATS
    short_side: int = 256  # frames resized so that their short side is this many pixels
    jpeg_quality: int = 3  # ffmpeg's mjpeg -q:v: 2 (best) .. 31 (smallest); 3 is visually lossless
    min_seconds: float = 0.5  # a clip shorter than this (after clamping to the file) is a failure
    max_seconds: float = 3600.0  # a clip longer than this is a failure (cut it in the manifest)
    max_pixels: int = 4096 * 2160  # a source with more pixels per frame than this is a failure
    timeout: float = 600.0  # seconds of ffmpeg per clip before it is killed and the clip fails
    samples_per_shard: int = 128  # target samples per shard (ignored when num_shards is set)
    num_shards: int | None = None  # exact number of shards per format
    mel: MelParams = MelParams()

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.split):
            raise IngestError(f"--split {self.split!r}: use letters, digits and '_' (it prefixes file names)")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise IngestError(f"--format {','.join(self.formats)}: choose from {','.join(FORMATS)}")
        if not 2 <= self.jpeg_quality <= 31:
            raise IngestError(f"--jpeg-quality {self.jpeg_quality}: use ffmpeg's -q:v scale, 2 (best) .. 31")
        if self.num_shards is not None and self.num_shards < 1:
            raise IngestError(f"--num-shards {self.num_shards}: use 1 or more")
        if self.samples_per_shard < 1:
            raise IngestError(f"--samples-per-shard {self.samples_per_shard}: use 1 or more")

    def resolve_num_shards(self, num_clips: int) -> int:
        """Shards per format: --num-shards, else enough for --samples-per-shard (at least 1)."""
        if self.num_shards:
            return self.num_shards
        return num_shards_for(num_clips, self.samples_per_shard)

    def feature_params(self) -> dict:
        """What a reader needs to interpret the stored features; goes into meta and the index."""
        return {"fps": 25, "short_side": self.short_side, "jpeg_quality": self.jpeg_quality,
                "audio_sample_rate": self.mel.sample_rate, "mel": self.mel.to_dict()}

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        d = IngestConfig(output="")
        parser.add_argument("--split", default=d.split, help="split name, the shards' prefix")
        parser.add_argument("--format", default=",".join(d.formats),
                            help=f"comma-separated output formats: {','.join(FORMATS)}")
        parser.add_argument("--short-side", type=int, default=d.short_side)
        parser.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                            help="ffmpeg -q:v of the JPEG frames, 2 (best) .. 31 (smallest)")
        parser.add_argument("--min-seconds", type=float, default=d.min_seconds)
        parser.add_argument("--max-seconds", type=float, default=d.max_seconds)
        parser.add_argument("--max-pixels", type=int, default=d.max_pixels)
        parser.add_argument("--timeout", type=float, default=d.timeout, help="ffmpeg seconds per clip")
        parser.add_argument("--samples-per-shard", type=int, default=d.samples_per_shard)
        parser.add_argument("--num-shards", type=int, default=None)

    @staticmethod
    def from_args(args: argparse.Namespace) -> "IngestConfig":
        return IngestConfig(
            output=args.output, split=args.split,
            formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
            short_side=args.short_side, jpeg_quality=args.jpeg_quality, min_seconds=args.min_seconds,
            max_seconds=args.max_seconds, max_pixels=args.max_pixels, timeout=args.timeout,
            samples_per_shard=args.samples_per_shard, num_shards=args.num_shards)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags; anything else on the command line is a Beam pipeline option."""
    parser.add_argument("--manifest", required=True,
                        help="CSV/JSONL manifest, AudioSet/VGGSound/EPIC CSV, or a folder ROOT/<label>/<video>")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://, s3://)")
    parser.add_argument("--manifest-kind", default="auto",
                        choices=["auto", "generic", "audioset", "vggsound", "epic", "folder"])
    parser.add_argument("--video-root", help="folder that relative video paths / corpus ids resolve against")
    parser.add_argument("--pattern", help="video filename pattern for corpus manifests, e.g. '{ytid}.mp4'")
    parser.add_argument("--classes", help="class vocabulary: one name per line, or class_labels_indices.csv")
    parser.add_argument("--clip-seconds", type=float,
                        help="folder manifests: cut each video into clips of this length")
    parser.add_argument("--corpus-split", help="VGGSound: keep only rows of this split (train/test)")
    parser.add_argument("--full-videos", action="store_true",
                        help="AudioSet/VGGSound: the files are whole YouTube videos, not the 10 s segments")
    IngestConfig.add_arguments(parser)
