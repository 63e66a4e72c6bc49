"""The ingestion job: a manifest of labelled videos -> WebDataset / TFRecord shards, index, failures.

    ReadPlan -> Reshuffle -> DecodeClip (decode, encode, stage) -> GroupByKey (small records)
             -> WriteShard (stream staged bytes in key order) -> WriteIndex

The manifest is read (and duplicate keys rejected) before the pipeline is built, so a bad manifest
costs nothing; its work goes to the workers as a plan file (pipelines.plan), never into the graph. A
sample's payload never crosses a shuffle: the worker that decodes a clip encodes it in every format
and stages the bytes beside the output (pipelines.staging); only records of a few hundred bytes go
through GroupByKey, so a process holds at most one clip per worker however large the dataset. Every
row ends as exactly one sample or one line of SPLIT.failures.jsonl; the index is written last, so a
dataset with an index is a whole dataset. Runs on Beam's in-process FnApiRunner by default and
unchanged on any Beam runner (Dataflow, Flink, Spark): the DoFns carry all they need in their
pickled fields, so workers in other processes (Beam's portable runner with an external worker pool,
tests/pipelines/test_portable_runner.py) write the same bytes. Runner flags are checked, and a job
server or worker pool reached, before any work (pipelines.config).

    python -m pipelines.ingest --manifest M.csv --output DIR --format webdataset,tfrecord
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
import uuid
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import progress
from pipelines.config import (LOCAL_RUNNERS, IngestConfig, IngestError, add_arguments, beam_options,
                              check_endpoints)
from pipelines.manifests import ClipSpec, Manifest, label_indices
from pipelines.plan import JobPlan, chains, failure_record, spec_from_json, write_plan
from pipelines.job_errors import beam_errors_held, disk_full
from pipelines.publish import (check_publishable, index_files, index_path, publish, read_published,
                               remove_unlisted)
from pipelines.shard_io import PENDING_INDEX, build_index, job_generation, write_shard
from pipelines.split_lock import split_lock
from pipelines.staging import remove_staged, stage_sample, staging_dir
from pipelines.stats import DatasetStatsFn, sample_stats
from shards.format import storage
from shards.format.naming import assign_shard
from shards.format.storage import is_url

NAMESPACE = "ingest"


# ---------------------------------------------------------------------------------------------------
# DecodeClip: a plan line -> (shard_id, staged record), with failures and stats as tagged outputs.
# ---------------------------------------------------------------------------------------------------
class DecodeClip(beam.DoFn):
    """Decode a task's clips with ffmpeg, compute their log-mel, encode and stage each sample; never
    raise. A remote source (gs://, s3://) is fetched once for all the clips of its task."""

    FAILURES = "failures"
    STATS = "stats"

    def __init__(self, cfg: IngestConfig, vocabulary: list[str], num_shards: int, staging: str):
        self.cfg = cfg
        self.vocabulary = vocabulary
        self.num_shards = num_shards
        self.staging = staging
        self.written = Metrics.counter(NAMESPACE, "clips_written")
        self.media_ms = Metrics.counter(NAMESPACE, "media_milliseconds")
        self.fetched = Metrics.counter(NAMESPACE, "bytes_fetched")

    def process(self, line: str) -> Iterator[Any]:
        from pipelines.ffmpeg_run import DecodeError
        from pipelines.media_input import local_copy, needs_local_copy

        task = json.loads(line)
        if "failure" in task:  # a manifest row that failed already
            Metrics.counter(NAMESPACE, f"failed_{task['failure']['reason']}").inc()
            yield beam.pvalue.TaggedOutput(self.FAILURES, task["failure"])
            return
        specs = [spec_from_json(d) for d in task["clips"]]
        with contextlib.ExitStack() as stack:
            local, fetched = None, 0
            if needs_local_copy(specs[0].path):
                try:
                    local = stack.enter_context(local_copy(specs[0].path))
                except DecodeError as e:  # the source can't be fetched: every clip of it fails
                    for spec in specs:
                        yield self.failure(spec, e.reason, e.detail)
                    return
                fetched = os.path.getsize(local)
                self.fetched.inc(fetched)
            runs = chains(specs, self.cfg.shared_decode) if self.cfg.shared_decode else [[s] for s in specs]
            for run in runs:
                shared = self.shared_run(run, local) if len(run) > 1 else None
                for spec, clip in zip(run, shared or [None] * len(run)):
                    yield from self.clip(spec, local, fetched, clip)
                    fetched = 0  # counted once, with the task's first clip

    def shared_run(self, run: list[ClipSpec], local: str | None) -> list[Any] | None:
        """One ffmpeg run over the span of `run` (overlapping clips of one source), sliced into its
        clips (a DecodedClip, or the DecodeError of that clip); None if the span can't be decoded,
        and then each clip is decoded on its own, with its own reason if it fails."""
        from pipelines.clip import decode
        from pipelines.decode import FPS, DecodeError, slice_clip

        # one frame more than the chain's end: a clip whose start snaps later still gets its length
        start, end = min(s.start for s in run), max(s.end for s in run) + 1 / FPS
        try:
            span = decode(local or run[0].path, start, end, self.cfg)
        except DecodeError:
            return None
        Metrics.counter(NAMESPACE, "shared_decode_runs").inc()
        clips = []
        for spec in run:
            try:
                clips.append(slice_clip(span, spec.start, spec.end, self.cfg.min_seconds))
            except DecodeError as e:
                clips.append(DecodeError(e.reason, f"{spec.path}: {e.detail}"))
        return clips

    def clip(self, spec: ClipSpec, local: str | None, fetched: int, decoded: Any = None) -> Iterator[Any]:
        from pipelines.clip import DecodeError, build_sample, sample_of

        try:
            if isinstance(decoded, Exception):
                raise decoded
            labels = label_indices(spec, self.vocabulary)
            sample = (sample_of(spec, labels, self.cfg, decoded) if decoded is not None else
                      build_sample(spec, labels, self.cfg, local))
            record = stage_sample(self.staging, sample, self.cfg.formats)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise  # the output's disk, not this clip: the job fails and says so (disk_full)
            yield self.failure(spec, "internal_error", f"{type(e).__name__}: {e}".splitlines()[0][:500])
            return
        except Exception as e:  # noqa: BLE001 - one bad clip (or a bug on one clip) never kills the job
            reason, detail = ((e.reason, e.detail) if isinstance(e, DecodeError) else
                              ("internal_error", f"{type(e).__name__}: {e}".splitlines()[0][:500]))
            yield self.failure(spec, reason, detail)
            return
        self.written.inc()
        self.media_ms.inc(int(round(sample.duration * 1000)))
        progress.tick(sample.duration)
        yield beam.pvalue.TaggedOutput(self.STATS, sample_stats(sample, fetched))
        yield assign_shard(sample.key, self.num_shards), record

    def failure(self, spec: ClipSpec, reason: str, detail: str):
        Metrics.counter(NAMESPACE, f"failed_{reason}").inc()
        progress.tick(0.0, failed=True)
        return beam.pvalue.TaggedOutput(self.FAILURES, failure_record(spec, reason, detail))


class WriteShard(beam.DoFn):
    """(shard_id, [staged record]) -> one file per format, streamed from the staged samples in key
    order under a temporary name and renamed; then the staged files are removed."""

    def __init__(self, cfg: IngestConfig, num_shards: int, generation: str):
        self.cfg = cfg
        self.num_shards = num_shards
        self.generation = generation
        self.bytes = Metrics.counter(NAMESPACE, "bytes_written")

    def process(self, element: tuple[int, Iterable[dict[str, Any] | None]]) -> Iterator[dict[str, Any]]:
        shard_id, records = element
        # Beam gives no order within a group: sort, so a rerun writes the same bytes.
        ordered = sorted((r for r in records if r is not None), key=lambda r: r["key"])
        infos = [write_shard(self.cfg.output, self.cfg.split, shard_id, self.num_shards, fmt, position,
                             ordered, self.generation) for position, fmt in enumerate(self.cfg.formats)]
        remove_staged(ordered)
        for info in infos:
            self.bytes.inc(info["bytes"])
            yield info


class WriteIndex(beam.DoFn):
    """Write the job's failures file, then its index into the staging folder (last), from the combined
    results of the job; the launcher publishes it (pipelines.publish)."""

    def __init__(self, cfg: IngestConfig, plan: JobPlan):
        self.cfg = cfg
        self.plan = plan

    def process(self, _, shard_infos, stats, failures) -> Iterator[dict[str, Any]]:
        index = build_index(self.cfg, self.plan.manifest_info, self.plan.vocabulary, shard_infos, stats,
                            failures, self.plan.generation)
        text = json.dumps(index, indent=1, sort_keys=True).encode("utf-8")
        storage.write_atomic(storage.join(self.plan.staging, PENDING_INDEX), text)
        yield index


# ---------------------------------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------------------------------
def build_pipeline(p: beam.Pipeline, plan: JobPlan, cfg: IngestConfig) -> None:
    """Add the ingestion transforms for `plan` (pipelines.plan.write_plan) to pipeline `p`."""
    num_shards = cfg.resolve_num_shards(plan.clips)
    decoded = (
        p
        | "ReadPlan" >> beam.io.ReadFromText(plan.path)  # one JSON line per task
        | "Reshuffle" >> beam.Reshuffle()  # spread tasks over workers
        | "DecodeClip" >> beam.ParDo(DecodeClip(cfg, plan.vocabulary, num_shards, plan.staging)).with_outputs(
            DecodeClip.FAILURES, DecodeClip.STATS, main="records")  # (shard_id, staged record)
    )
    # Every shard id is present, so a shard that draws no sample is still written (empty), and the
    # dataset always has exactly num_shards files per format.
    all_shards = (p | "ShardCount" >> beam.Create([num_shards])  # made here, not held in the graph
                  | "AllShardIds" >> beam.FlatMap(lambda n: ((i, None) for i in range(n))))
    shard_infos = (
        (decoded.records, all_shards)  # (shard_id, staged record | None)
        | "AssignShard" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()  # (shard_id, [staged record]): a few hundred bytes each
        | "WriteShard" >> beam.ParDo(WriteShard(cfg, num_shards, plan.generation))  # {format, path, samples, bytes}
        | "CollectShards" >> beam.combiners.ToList()
    )
    failures = decoded[DecodeClip.FAILURES] | "CollectFailures" >> beam.combiners.ToList()  # failure dicts
    stats = decoded[DecodeClip.STATS] | "DatasetStats" >> beam.CombineGlobally(DatasetStatsFn())
    (
        p
        | "IndexTrigger" >> beam.Create([None])
        | "WriteIndex" >> beam.ParDo(
            WriteIndex(cfg, plan),
            beam.pvalue.AsSingleton(shard_infos),
            beam.pvalue.AsSingleton(stats),
            beam.pvalue.AsSingleton(failures))
    )


# ---------------------------------------------------------------------------------------------------
# Launching: options, runner defaults, summary.
# ---------------------------------------------------------------------------------------------------
def read_manifest_from_args(args: argparse.Namespace) -> Manifest:
    """Read the manifest named on the command line (probing durations only for --clip-seconds)."""
    from pipelines.manifests import read_manifest

    duration_fn = None
    if args.clip_seconds:
        from pipelines.ffmpeg_stderr import probe

        def duration_fn(path: str) -> float | None:
            try:
                return probe(path).duration
            except Exception:  # noqa: BLE001 - an unreadable video becomes a failure row downstream
                return None

    return read_manifest(args.manifest, kind=args.manifest_kind, video_root=args.video_root,
                         classes=args.classes, pattern=args.pattern, clip_seconds=args.clip_seconds,
                         duration_fn=duration_fn, split=args.corpus_split, trimmed=not args.full_videos)


def check_worker_paths(manifest: Manifest, runner: str) -> None:
    """A remote runner's workers can't read this machine's disk: on Dataflow every video is a URL."""
    local = [s for s in manifest.specs if not is_url(s.path)]
    if runner == "DataflowRunner" and local:
        raise IngestError(f"{len(local)} of {len(manifest.specs)} videos are on this machine (row "
                          f"{local[0].row}: {local[0].path}), out of the Dataflow workers' reach; "
                          f"copy them to a bucket and pass --video-root gs://BUCKET/videos")


def launch_options(beam_args: Sequence[str], cfg: IngestConfig) -> tuple[Any, str]:
    """(Beam options, runner name) from Beam's own flags (--runner=..., ...), checked, and a job service
    or worker pool they name reached (IngestError otherwise)."""
    options, runner = beam_options(beam_args, cfg.output)
    check_endpoints(options)
    if is_url(cfg.output):
        from shards.format.storage import filesystem

        filesystem(cfg.output)  # a dead storage endpoint: one line now, not minutes of retries
    if runner in LOCAL_RUNNERS:
        anonymous_on_an_emulator()
    return options, runner


def anonymous_on_an_emulator() -> None:
    """Against a GCS emulator (STORAGE_EMULATOR_HOST), which takes no credentials, Beam's GCS client
    would still ask Google's default credentials first, with four retries (~25 s in each process)
    before it goes anonymous. Without credentials configured (GOOGLE_APPLICATION_CREDENTIALS), go
    anonymous at once: Beam caches its choice per process, and this fills that cache. (A private part
    of Beam 2.77: if it moves, this does nothing and the job only starts slower.)"""
    if not os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    cache = getattr(auth, "_Credentials", None)
    if cache is not None and hasattr(cache, "_credentials_init") and hasattr(cache, "_credentials_lock"):
        with cache._credentials_lock:
            if not cache._credentials_init:
                cache._credentials, cache._credentials_init = None, True


def run(manifest: Manifest, cfg: IngestConfig, beam_args: Sequence[str] = (), *,
        show_progress: bool = True, launch: tuple[Any, str] | None = None) -> dict[str, Any]:
    """Run the job to completion, publish the split (pipelines.publish) and return its summary.

    `beam_args` go through `launch_options` before the job is submitted, unless the caller did that
    already and passes its result as `launch`. IngestError when the job may not publish: the
    published split then stays as it was, and the job's files are removed (but its failures file)."""
    options, runner = launch or launch_options(beam_args, cfg)
    check_worker_paths(manifest, runner)
    start = time.time()
    # Only an in-process runner's workers tick this process's counter; remote ones have their own UI.
    reporter = progress.Reporter(len(manifest.specs), enabled=show_progress and runner in LOCAL_RUNNERS)
    with split_lock(cfg.output, cfg.split) as lock:  # one writer per split: it removes what others left
        published = read_published(cfg.output, cfg.split)
        keep = published.files()
        remove_unlisted(cfg.output, cfg.split, keep)  # what killed or failed jobs left
        staging = staging_dir(cfg.output, cfg.split, uuid.uuid4().hex[:12])
        held = beam_errors_held()
        try:
            plan = write_plan(manifest, staging, job_generation(cfg, manifest.sha256, published.generation),
                              cfg.shared_decode)
            with reporter, held:
                with beam.Pipeline(options=options) as p:
                    build_pipeline(p, plan, cfg)
            index = json.loads(storage.read_bytes(storage.join(staging, PENDING_INDEX)).decode("utf-8"))
            failures = storage.join(cfg.output, index["failures_file"])
            keep = keep | {index["failures_file"]}  # kept when the job is refused: it says why
            check_publishable(index, published, cfg.max_failed_fraction, failures)
            publish(cfg.output, cfg.split, index, lock, published)
            keep = index_files(index)
        except Exception as e:
            full = disk_full(cfg.output, e)
            if full is None:
                held.replay()
                raise
            raise full from None
        finally:
            if lock.held():  # (a job whose lock was taken from it touches nothing more)
                remove_unlisted(cfg.output, cfg.split, keep)
    return summarize(index, index_path(cfg.output, cfg.split), time.time() - start)


def summarize(index: dict[str, Any], path: str, wall_seconds: float) -> dict[str, Any]:
    """The job's summary, from the index it published (the one source of truth)."""
    counts = index["counts"]
    return {
        "rows": counts["rows"], "written": counts["written"], "failed": counts["failed"],
        "failed_by_reason": counts["failed_by_reason"], "media_seconds": index["media_seconds"],
        "bytes": sum(s["bytes"] for fmt in index["shards"].values() for s in fmt),
        "wall_seconds": round(wall_seconds, 2),
        "clips_per_second": round(counts["rows"] / wall_seconds, 2) if wall_seconds > 0 else None,
        "balanced": counts["rows"] == counts["written"] + counts["failed"], "lost": counts.get("lost", 0),
        "fetched_bytes": index.get("fetched_bytes", 0),
        "index": path,
    }


def format_summary(s: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(s["failed_by_reason"].items())) or "none"
    check = "OK" if s["balanced"] else "MISMATCH"
    return (f"ingest: {s['rows']} rows -> {s['written']} written + {s['failed']} failed "
            f"[{check}: rows == written + failed]\n"
            f"  failed by reason: {reasons}\n"
            f"  {s['media_seconds']:.1f} media seconds, {s['bytes'] / 1e6:.1f} MB, "
            f"{s['wall_seconds']:.1f} s wall, {s['clips_per_second']} clips/s\n"
            f"  index: {s['index']}"
            + (f"\n  fetched {s['fetched_bytes'] / 1e6:.1f} MB of remote sources, "
               f"{s['fetched_bytes'] / 1e6 / max(s['written'], 1):.2f} MB per clip" if s["fetched_bytes"] else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.ingest", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Any other --flag is passed to Beam (e.g. --runner=DataflowRunner --project=P).")
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    return run_from_args(args, beam_args)


def run_from_args(args: argparse.Namespace, beam_args: list[str]) -> int:
    """Shared by `mbt ingest` and `python -m pipelines.ingest`."""
    cfg = IngestConfig.from_args(args)
    launch = launch_options(beam_args, cfg)  # bad flags, no worker pool: before reading the manifest
    manifest = read_manifest_from_args(args)
    if not manifest.rows:
        raise IngestError(f"{manifest.source}: the manifest has no rows, so there is nothing to ingest; "
                          f"add one line per clip below its header")
    summary = run(manifest, cfg, launch=launch)
    print(format_summary(summary))
    return 0 if summary["balanced"] else 1


if __name__ == "__main__":
    from shards.format.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:
        sys.exit(f"ingest: error: {e}")
