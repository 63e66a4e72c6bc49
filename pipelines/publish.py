"""Publishing a split: the one step that makes a job's shards the dataset, and the cleanup around it.

At every instant a reader sees the old split whole or the new one whole, never a mix and never none:
- a job writes only names of its own generation (shards, `SPLIT-gGEN.failures.jsonl`), and its
  generation is never the published one (pipelines.shard_io.job_generation), so nothing the
  published index names is touched while the job runs;
- the index names every file of its split with size and CRC32C, and it is replaced in one step:
  a rename over the old index on a local disk (never an unlink first), on gs:// one upload with
  ifGenerationMatch set to the generation of the index this job found, so a publication by anyone
  else meanwhile makes this one fail instead of overwriting it;
- only after that are the files that no index names any more removed.

A job publishes only if it still holds the split's lock, its counts balance, it wrote at least one
sample, and, when it would replace a published split, no more than `max_failed_fraction` of its rows
failed (a wrong --video-root must not turn a good split into an empty one). Otherwise the published
split stays as it was and the job's files are removed, but for its failures file, which says why.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from pipelines.config import IngestError
from pipelines.split_lock import SplitLock
from pipelines.staging import STAGING_PREFIX
from shards.format import storage
from shards.format.dataset_index import INDEX_SUFFIX
from shards.format.failpoints import failpoint
from shards.format.naming import parse_shard_name
from shards.format.offsets import OFFSETS_SUFFIX


@dataclasses.dataclass(frozen=True)
class Published:
    """The split as a job found it when it took the lock."""

    index: dict[str, Any] | None  # the published index, None when the split has none
    object_generation: int = 0  # gs://: the index object's generation (0: none), for the precondition

    @property
    def generation(self) -> str | None:
        return (self.index or {}).get("generation")

    def files(self) -> set[str]:
        """The names the published index owns (shards and failures file)."""
        return index_files(self.index) if self.index else set()


def index_files(index: dict[str, Any]) -> set[str]:
    """The names an index owns: its shards, their offsets sidecars and its failures file."""
    names = {s[field] for entries in index.get("shards", {}).values() for s in entries
             for field in ("path", "offsets") if field in s}
    if index.get("failures_file"):
        names.add(index["failures_file"])
    return names


def index_path(output: str, split: str) -> str:
    return storage.join(output, split + INDEX_SUFFIX)


def read_published(output: str, split: str) -> Published:
    path = index_path(output, split)
    if storage.is_gcs(path):
        found = storage.read_generation(path)
        data, generation = found if found is not None else (None, 0)
    else:
        data, generation = (storage.read_bytes(path) if storage.size(path) is not None else None), 0
    if data is None:
        return Published(None, 0)
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        index = None  # unreadable: nothing to keep, and the new index replaces it
    return Published(index if isinstance(index, dict) else None, generation)


def check_publishable(index: dict[str, Any], published: Published, max_failed_fraction: float,
                      failures_path: str) -> None:
    """IngestError (the published split kept) unless the job's index may replace the published one."""
    c = index["counts"]
    reasons = ", ".join(f"{k}={v}" for k, v in c["failed_by_reason"].items()) or "none"
    done = f"{c['rows']} rows -> {c['written']} written + {c['failed']} failed ({reasons})"
    kept = (f"the published split ({published.index.get('num_samples')} samples) is unchanged"
            if published.index else "nothing was published")
    if c.get("lost") or c["rows"] != c["written"] + c["failed"]:
        raise IngestError(f"{done}, and {c['rows'] - c['written'] - c['failed']} rows reached "
                          f"neither a shard nor the failures (the runner lost them); {kept}; run the same "
                          f"command again")
    if c["written"] == 0:
        raise IngestError(f"{done}: every row failed, so {kept}; the reasons are in {failures_path}")
    failed = c["failed"] / max(c["rows"], 1)
    if published.index and failed > max_failed_fraction:
        raise IngestError(f"{done}: {failed:.0%} of the rows failed, over --max-failed-fraction "
                          f"{max_failed_fraction:g}, so {kept}; the reasons are in {failures_path}; "
                          f"pass --max-failed-fraction 1 to replace it anyway")


def publish(output: str, split: str, index: dict[str, Any], lock: SplitLock, published: Published) -> None:
    """Make `index` the split's index in one step, if this job still holds the lock."""
    lock.check()
    text = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode("utf-8")
    path = index_path(output, split)
    failpoint("publish:before_index")
    if storage.is_gcs(path):
        if not storage.write_if_generation(path, text, published.object_generation):
            raise IngestError(f"{path} was replaced by another job while this one ran, so this job does "
                              f"not publish; run one job per split at a time")
    else:
        storage.write_atomic(path, text)
    failpoint("publish:after_index")


def _ours(name: str, split: str) -> bool:
    """Whether a file name in the output folder belongs to `split`: its shards and their offsets
    sidecars, failures files, the temporary files of its writes and its jobs' staging folders (never
    another split's)."""
    shard = name[: -len(OFFSETS_SUFFIX)] if name.endswith(OFFSETS_SUFFIX) else name
    try:
        if parse_shard_name(shard)[0] == split:
            return True
    except ValueError:
        pass
    return bool(re.match(rf"^(?:{re.escape(split)}(?:-g[0-9a-f]{{8}})?\.failures\.jsonl"
                         rf"|{re.escape(storage.TMP_PREFIX)}{re.escape(split)}[-.].*"
                         rf"|{re.escape(STAGING_PREFIX)}{re.escape(split)}-.*)$", name))


def remove_unlisted(output: str, split: str, keep: set[str]) -> list[str]:
    """Remove the split's files that are not in `keep` (the names an index owns): what older
    generations, failed and killed jobs left. Only its lock holder may call this. Returns the names."""
    names = sorted(n for n in storage.listdir(output) if _ours(n, split) and n not in keep)
    for name in names:
        failpoint("publish:cleanup")
        storage.delete([storage.join(output, name)])
    return names
