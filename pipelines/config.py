"""The ingestion job's settings: one frozen dataclass, every field a command-line flag; and the Beam
pipeline options it runs under, checked before any work (runner flags, staged files, endpoints)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import re
from typing import Sequence

from shards.format.errors import UserError
from shards.format.naming import FORMATS, num_shards_for
from shards.format.schema import FEATURE_KINDS, FbankParams, MelParams, feature_params, spectrogram_params
from shards.format.storage import is_url


class IngestError(UserError, ValueError):
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
    shared_decode: float = 0.0  # > 0: overlapping clips of a source share one ffmpeg run of at most this many s
    max_failed_fraction: float = 0.5  # a job failing more of its rows does not replace a published split
    features: str = "log_mel"  # the spectrogram: log_mel (librosa, pipelines.logmel) | kaldi_fbank (AST's)
    mel: MelParams | FbankParams | None = None  # its parameters, of the kind's type; None: the kind's defaults

    def __post_init__(self):
        if self.features not in FEATURE_KINDS:
            raise IngestError(f"--features {self.features}: choose from {', '.join(FEATURE_KINDS)}")
        if self.mel is None:  # resolved here, so that cfg.mel is always the parameters computed
            object.__setattr__(self, "mel", spectrogram_params(self.features))
        elif type(self.mel) is not FEATURE_KINDS[self.features]:
            raise IngestError(f"--features {self.features} takes {FEATURE_KINDS[self.features].__name__} "
                              f"parameters, not {type(self.mel).__name__} (leave mel unset for its defaults)")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.split):
            raise IngestError(f"--split {self.split!r}: use letters, digits and '_' (it prefixes file names)")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise IngestError(f"--format {','.join(self.formats)}: choose from {','.join(FORMATS)}")
        if not 2 <= self.jpeg_quality <= 31:
            raise IngestError(f"--jpeg-quality {self.jpeg_quality}: use ffmpeg's -q:v scale, 2 (best) .. 31")
        if self.short_side < 2 or self.short_side % 2:
            raise IngestError(f"--short-side {self.short_side}: use an even number of pixels >= 2 (e.g. 256)")
        for flag, value in (("--min-seconds", self.min_seconds), ("--max-seconds", self.max_seconds),
                            ("--timeout", self.timeout), ("--shared-decode", self.shared_decode)):
            if not math.isfinite(value):  # nan passes every comparison below, inf is no limit
                raise IngestError(f"{flag} {value}: use a finite number of seconds")
        if not 0 <= self.min_seconds < self.max_seconds:
            raise IngestError(f"--min-seconds {self.min_seconds:g} / --max-seconds {self.max_seconds:g}: use "
                              f"0 <= min < max")
        if self.max_pixels < 1:
            raise IngestError(f"--max-pixels {self.max_pixels}: use 1 or more (e.g. {4096 * 2160})")
        if not self.timeout > 0:
            raise IngestError(f"--timeout {self.timeout:g}: use a number of seconds > 0 (ffmpeg's time per clip)")
        if self.num_shards is not None and self.num_shards < 1:
            raise IngestError(f"--num-shards {self.num_shards}: use 1 or more")
        if not 0 <= self.shared_decode <= self.max_seconds:
            raise IngestError(f"--shared-decode {self.shared_decode:g}: use 0 (off) .. --max-seconds "
                              f"({self.max_seconds:g}) seconds of media per shared ffmpeg run")
        if self.samples_per_shard < 1:
            raise IngestError(f"--samples-per-shard {self.samples_per_shard}: use 1 or more")
        if not 0 <= self.max_failed_fraction <= 1:
            raise IngestError(f"--max-failed-fraction {self.max_failed_fraction:g}: use 0 .. 1 (the share "
                              f"of failed rows with which a job may still replace a published split)")

    def resolve_num_shards(self, num_clips: int) -> int:
        """Shards per format: --num-shards, else enough for --samples-per-shard (at least 1)."""
        if self.num_shards:
            return self.num_shards
        return num_shards_for(num_clips, self.samples_per_shard)

    def feature_params(self) -> dict:
        """What a reader needs to interpret the stored features (shards.format.schema.feature_params);
        goes into the index."""
        return feature_params(self.features, short_side=self.short_side, jpeg_quality=self.jpeg_quality,
                              mel=self.mel)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        d = IngestConfig(output="")
        parser.add_argument("--split", default=d.split, help="split name, the shards' prefix")
        parser.add_argument("--format", default=",".join(d.formats),
                            help=f"comma-separated output formats: {','.join(FORMATS)}")
        parser.add_argument("--short-side", type=int, default=d.short_side,
                            help="pixels of the frames' short side: an even number >= 2")
        parser.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                            help="ffmpeg -q:v of the JPEG frames, 2 (best) .. 31 (smallest)")
        parser.add_argument("--features", default=d.features, choices=list(FEATURE_KINDS),
                            help="the spectrogram: log_mel (librosa log-mel, Hamming, Slaney filterbank) or "
                                 "kaldi_fbank (AST's Kaldi fbank: Hann, pre-emphasis, 128 bins from 20 Hz); "
                                 "both 100 rows a second x 128 bins")
        parser.add_argument("--min-seconds", type=float, default=d.min_seconds,
                            help="a shorter clip is a failure: 0 <= min < --max-seconds")
        parser.add_argument("--max-seconds", type=float, default=d.max_seconds,
                            help="a longer clip is a failure: > --min-seconds")
        parser.add_argument("--max-pixels", type=int, default=d.max_pixels,
                            help="a source with more pixels per frame is a failure: >= 1")
        parser.add_argument("--timeout", type=float, default=d.timeout,
                            help="ffmpeg seconds per clip before it is a failure: > 0")
        parser.add_argument("--samples-per-shard", type=int, default=d.samples_per_shard,
                            help="target samples per shard: >= 1 (ignored with --num-shards)")
        parser.add_argument("--num-shards", type=int, default=None, help="exact shards per format: >= 1")
        parser.add_argument("--shared-decode", type=float, default=d.shared_decode, metavar="SECONDS",
                            help="decode overlapping clips of one source (EPIC-style segments) in one "
                                 "ffmpeg run of at most SECONDS of media, each clip's start snapped to "
                                 "the run's 25 fps grid (at most 20 ms off, recorded in meta); 0: every "
                                 "clip decoded on its own, frame-exact at its start")
        parser.add_argument("--max-failed-fraction", type=float, default=d.max_failed_fraction,
                            metavar="FRACTION",
                            help="a job in which more than this share of the rows failed does not replace "
                                 "an already published split (the old one stays; the new failures file "
                                 "says why); 1: replace it whatever failed. A job with no sample never "
                                 "publishes")

    @staticmethod
    def from_args(args: argparse.Namespace) -> "IngestConfig":
        return IngestConfig(
            output=args.output, split=args.split,
            formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
            short_side=args.short_side, jpeg_quality=args.jpeg_quality, min_seconds=args.min_seconds,
            max_seconds=args.max_seconds, max_pixels=args.max_pixels, timeout=args.timeout,
            samples_per_shard=args.samples_per_shard, num_shards=args.num_shards,
            shared_decode=args.shared_decode, max_failed_fraction=args.max_failed_fraction,
            features=args.features)


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


def output_folder_problem(path: str) -> str | None:
    """Why nothing can be written into the local folder `path` (made if missing), in words that follow
    the path in a message: it is a file, it lies under a file, or the nearest existing folder is not
    writable. None when nothing stands in the way, and for URLs (the bucket answers for itself)."""
    if is_url(path):
        return None
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder; name a folder (or a new name)"
    existing = path
    while not os.path.exists(existing):  # the nearest part of the path that exists
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"lies under {existing}, which is a file, not a folder; use another path"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"can't be written: {existing} is read-only (its permissions or its file system); "
                f"fix that or use another path")
    return None


def check_output(output: str) -> None:
    """IngestError naming --output when the job could not write its shards there (before any work)."""
    problem = output_folder_problem(output)
    if problem:
        raise IngestError(f"--output {output}: {problem}")


# ---------------------------------------------------------------------------------------------------
# Beam pipeline options: local defaults, and checks that fail before any work instead of mid-launch
# ---------------------------------------------------------------------------------------------------
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"})  # in-process
PORTABLE_RUNNERS = frozenset({"PortableRunner", "FlinkRunner", "SparkRunner"})  # Beam's job API
DATAFLOW_REQUIRED = ("project", "region", "temp_location")
REACH_TIMEOUT = 5.0  # seconds a job service or worker pool has to answer
_KNOWN = {n.lower(): n for n in LOCAL_RUNNERS | PORTABLE_RUNNERS | {"DataflowRunner", "PrismRunner"}}


def runner_name(runner: str | None) -> str:
    """'DataflowRunner' for 'DataflowRunner', 'dataflow' or 'apache_beam...DataflowRunner' (as Beam
    resolves them); unknown names unchanged."""
    name = (runner or "").split(".")[-1]
    key = name.lower() if name.lower().endswith("runner") else name.lower() + "runner"
    return _KNOWN.get(key, name)


def beam_options(beam_args: Sequence[str], output: str):
    """Beam's PipelineOptions from the flags the job doesn't know, with local defaults filled in and
    checked before any work. Returns (options, runner name: 'FnApiRunner', 'PortableRunner', ...).

    No --runner: Beam's in-process FnApiRunner, one worker thread per core (never Beam's default, which
    may pick Prism and download a binary). Raises IngestError naming the flag (DataflowRunner without
    --project, a missing --setup_file, an --output that is a file or read-only, ...). Only looks at
    flags and files; `check_endpoints` is the network half."""
    from apache_beam.options.pipeline_options import PipelineOptions

    check_output(output)
    args = list(beam_args)
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if "--runner" not in given:
        # ffmpeg does the heavy lifting in subprocesses, so threads are enough in one process.
        args += ["--runner=FnApiRunner", f"--direct_num_workers={os.cpu_count() or 1}",
                 "--direct_running_mode=multi_threading"]
    check_beam_flags(args)
    options = PipelineOptions(args)
    opts = options.get_all_options()
    runner = runner_name(opts.get("runner"))
    if runner not in _KNOWN.values() and "." not in str(opts.get("runner")):
        raise IngestError(f"--runner={opts.get('runner')}: unknown runner; use one of "
                          f"{', '.join(sorted(set(_KNOWN.values())))} (or a runner class's full module path)")
    if runner == "PortableRunner" and not opts.get("job_endpoint"):
        raise IngestError("--runner=PortableRunner needs --job_endpoint: 'embed' (the job service "
                          "runs in this process) or HOST:PORT of a running job server")
    if runner == "DataflowRunner":
        _check_dataflow(opts, output)
    _check_staged_files(options)
    return options, runner


def check_beam_flags(args: Sequence[str]) -> None:
    """IngestError naming the first flag that neither the job nor any of Beam's option classes knows,
    with the closest known name (Beam itself would only log a warning and drop it: `--fromat tfrecord`
    would then quietly write the default format)."""
    import difflib

    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():  # as Beam collects them
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own registry of options
    _, unknown = parser.parse_known_args(list(args))
    flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
    if not flags:
        return
    own = argparse.ArgumentParser(add_help=False)
    add_arguments(own)
    known = [o for p in (own, parser) for action in p._actions for o in action.option_strings]  # noqa: SLF001
    near = difflib.get_close_matches(flags[0], known, n=1)
    raise IngestError(f"unknown flag {flags[0]}" + (f"; did you mean {near[0]}?" if near else
                      "; `mbt ingest --help` lists the job's flags, and Beam's pipeline options are the rest"))


def _check_dataflow(opts: dict, output: str) -> None:
    """What DataflowRunner needs that Beam would otherwise discover late (or after creating a bucket)."""
    missing = [f"--{k}" for k in DATAFLOW_REQUIRED if not opts.get(k)
               and not (k == "temp_location" and opts.get("staging_location"))]
    if missing:
        raise IngestError(f"--runner=DataflowRunner needs {', '.join(missing)} (missing); e.g. "
                          f"--project=MY_PROJECT --region=us-central1 --temp_location=gs://BUCKET/tmp")
    for k in ("temp_location", "staging_location"):
        if opts.get(k) and not str(opts[k]).startswith("gs://"):
            raise IngestError(f"--{k}={opts[k]}: Dataflow needs a gs:// path")
    if not is_url(output):
        raise IngestError(f"--output {output}: Dataflow workers can't write to this machine's disk; "
                          f"use a bucket path such as gs://BUCKET/shards")
    image = opts.get("sdk_container_image") or opts.get("worker_harness_container_image")
    if not (image or opts.get("setup_file") or opts.get("extra_packages")):
        raise IngestError("--runner=DataflowRunner: the workers need this project's code; pass "
                          "--sdk_container_image=IMAGE (docker/Dockerfile.dataflow) or "
                          "--setup_file=./setup.py")
    if not gcp_extras_installed():
        raise IngestError("--runner=DataflowRunner needs Beam's GCP extras on this machine: "
                          "pip install 'apache-beam[gcp]==2.77.0'")


def gcp_extras_installed() -> bool:
    """Whether Beam's GCP extras (Dataflow client, gs:// file system) can be imported here."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("apitools", "google.cloud.storage"))
    except ImportError:  # a parent package (google.cloud) is missing
        return False


def _check_staged_files(options) -> None:
    """--setup_file / --requirements_file must exist (Beam stages them for the workers); the setup
    file's path is made absolute, since Beam builds the package from its folder."""
    from apache_beam.options.pipeline_options import SetupOptions

    setup = options.view_as(SetupOptions)
    if setup.setup_file:
        if not os.path.isfile(setup.setup_file) or os.path.basename(setup.setup_file) not in (
                "setup.py", "pyproject.toml"):
            raise IngestError(f"--setup_file {setup.setup_file}: no such file; use this project's "
                              f"setup.py, e.g. --setup_file=./setup.py")
        setup.setup_file = os.path.abspath(setup.setup_file)
    if setup.requirements_file and not os.path.isfile(setup.requirements_file):
        raise IngestError(f"--requirements_file {setup.requirements_file}: no such file; this project's "
                          f"is requirements-worker.txt")


def check_endpoints(options, timeout: float = REACH_TIMEOUT) -> None:
    """For Beam's job API (PortableRunner, Flink, Spark): the job server (unless embedded) and an
    EXTERNAL worker pool must answer a harmless call within `timeout` s, else IngestError naming the
    address. (A job handed to a pool that isn't there fails late, with pages of gRPC traceback; a
    bare TCP connect is not proof, as any proxy on the port accepts it.)"""
    opts = options.get_all_options()
    if runner_name(opts.get("runner")) not in PORTABLE_RUNNERS:
        return
    job = opts.get("job_endpoint")
    if job and job != "embed":
        _ping(job, timeout, f"the job server at {job} (--job_endpoint)", _list_jobs)
    if (opts.get("environment_type") or "").upper() == "EXTERNAL":
        address = _external_address(opts)
        if not address:
            raise IngestError("--environment_type=EXTERNAL needs the worker pool's address: "
                              "--environment_config=HOST:PORT")
        port = address.rsplit(":", 1)[-1]
        _ping(address, timeout, f"the SDK worker pool at {address} (--environment_config)",
              _stop_no_worker,
              f"; start one with `make worker-pool PORT={port}` (python -m "
              f"apache_beam.runners.worker.worker_pool_main --service_port={port}, with the project's "
              f"venv first on PATH)")


def _external_address(opts: dict) -> str | None:
    """The worker pool's HOST:PORT, as Beam reads it: --environment_config (plain or JSON {"url"}),
    else --environment_options=external_service_address=..."""
    config = (opts.get("environment_config") or "").strip()
    if config.startswith("{"):
        import json
        try:
            return json.loads(config).get("url")
        except ValueError:
            raise IngestError(f"--environment_config {config}: not valid JSON") from None
    if config:
        return config
    for item in opts.get("environment_options") or []:
        key, _, value = item.partition("=")
        if key == "external_service_address":
            return value
    return None


def _stop_no_worker(channel, timeout: float) -> None:
    """Ask a worker pool to stop a worker it never started: a no-op that only a pool answers."""
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
    stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="mbt-ingest-check"), timeout=timeout)


def _list_jobs(channel, timeout: float) -> None:
    """List a job server's jobs: read-only, answered by any Beam job service."""
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(beam_job_api_pb2.GetJobsRequest(),
                                                          timeout=timeout)


def _ping(address: str, timeout: float, what: str, call, hint: str = "") -> None:
    """call(channel, timeout) on a gRPC channel to `address`; IngestError if it fails or times out."""
    import grpc

    if not re.fullmatch(r"\S+:\d+", address):
        raise IngestError(f"{what}: {address!r} is not HOST:PORT")
    try:
        with grpc.insecure_channel(address) as channel:
            call(channel, timeout)
    except grpc.RpcError as e:
        code = e.code()
        reason = (f"no answer within {timeout:g} s" if code == grpc.StatusCode.DEADLINE_EXCEEDED
                  else f"{code.name}: {(e.details() or '').splitlines()[0][:200]}")
        raise IngestError(f"{what} is not reachable ({reason}){hint}") from None
