"""The job's plan: the manifest's work as a file the workers read, so the graph never holds the rows.

The launcher reads the manifest (rejecting a bad one before any work), then writes one JSON line per
task into the job's staging folder; the pipeline reads it back with `ReadFromText`, which splits the
file across workers. The pipeline graph holds only the plan's path: its size does not grow with the
rows (Dataflow refuses job requests over 20 MB; `beam.Create` of 2 M AudioSet rows would be ~26 MB).

A task is either one manifest row that already failed (`{"failure": {...}}`) or clips to decode
(`{"clips": [...]}`). Clips of a source that ffmpeg can't open itself (gs://, s3://) are grouped, up
to CLIPS_PER_FETCH of them, so the worker that takes the task fetches the source once for all of
them (EPIC-Kitchens: ~130 segments per hour-long video); every other clip is a task of its own, so
the work spreads over all workers.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any, Iterator

from pipelines.manifests import ClipSpec, Manifest, RowFailure
from pipelines.media_input import needs_local_copy
from shards.format import storage

PLAN_NAME = "plan.jsonl"
CLIPS_PER_FETCH = 32  # clips of one remote source per task: one fetch serves them all


def spec_to_json(spec: ClipSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["labels"] = list(spec.labels)
    return d


def spec_from_json(d: dict[str, Any]) -> ClipSpec:
    return ClipSpec(**{**d, "labels": tuple(d["labels"])})


def tasks(manifest: Manifest, shared_decode: float = 0.0) -> Iterator[list[ClipSpec]]:
    """The manifest's clips as tasks, in manifest order: remote sources grouped by path (at most
    CLIPS_PER_FETCH a task); with `shared_decode`, chains of overlapping clips of a local source (see
    `chains`); every other clip alone."""
    groups: dict[str, list[ClipSpec]] = {}
    local: dict[str, list[ClipSpec]] = {}
    for spec in manifest.specs:
        if not needs_local_copy(spec.path):
            if shared_decode:
                local.setdefault(spec.path, []).append(spec)
            else:
                yield [spec]
            continue
        group = groups.setdefault(spec.path, [])
        group.append(spec)
        if len(group) == CLIPS_PER_FETCH:
            yield groups.pop(spec.path)
    yield from groups.values()
    for specs in local.values():
        yield from chains(specs, shared_decode)


def chains(specs: list[ClipSpec], max_span: float) -> list[list[ClipSpec]]:
    """Clips of one source as chains that one ffmpeg run can decode: by start, each clip overlapping
    or touching the chain so far, the chain spanning at most `max_span` seconds. A clip that runs to
    the end of the file stays alone."""
    out: list[list[ClipSpec]] = []
    chain_end = -1.0
    for spec in sorted(specs, key=lambda s: (s.end is None, s.start)):
        if (spec.end is not None and out and out[-1][0].end is not None and spec.start <= chain_end
                and max(chain_end, spec.end) - out[-1][0].start <= max_span):
            out[-1].append(spec)
            chain_end = max(chain_end, spec.end)
        else:
            out.append([spec])
            chain_end = spec.end if spec.end is not None else -1.0
    return out


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """What the pipeline is built from: a path and a few numbers, whatever the manifest's size."""

    path: str  # the plan file
    staging: str  # the job's staging folder (plan, staged samples)
    generation: str  # in the names of the job's shards (pipelines.shard_io.job_generation)
    rows: int  # manifest rows (== clips + row failures)
    clips: int
    vocabulary: list[str]
    manifest_info: dict[str, Any]  # path, sha256 and rows of the manifest, for the index


def failure_record(spec: ClipSpec | RowFailure, reason: str, detail: str) -> dict[str, Any]:
    """One line of failures.jsonl: the manifest row, its key and path, why, and the tool's last word."""
    return {"row": spec.row, "key": spec.key, "path": spec.path, "reason": reason, "detail": detail}


def write_plan(manifest: Manifest, staging: str, generation: str, shared_decode: float = 0.0) -> JobPlan:
    """Write the plan of `manifest` into the staging folder (`shared_decode`: see `tasks`)."""
    path = storage.join(staging, PLAN_NAME)
    lines = itertools.chain(
        ({"clips": [spec_to_json(s) for s in task]} for task in tasks(manifest, shared_decode)),
        ({"failure": failure_record(r, r.reason, r.detail)} for r in manifest.failures))
    with storage.open_atomic(path) as f:
        for line in lines:  # the file objects buffer
            f.write(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n")
    return JobPlan(path=path, staging=staging, generation=generation, rows=manifest.rows,
                   clips=len(manifest.specs), vocabulary=list(manifest.vocabulary),
                   manifest_info={"path": manifest.source, "sha256": manifest.sha256, "rows": manifest.rows})
