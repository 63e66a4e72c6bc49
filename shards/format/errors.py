"""The one exception of the shard format: a shard that is corrupt, truncated or not ours."""

from __future__ import annotations

import os

# what to do about a damaged shard, the end of the codecs' messages
REWRITE_FIX = "re-create the shard (mbt ingest writes shards under a temporary name and renames them when whole)"


class ShardError(ValueError):
    """A shard (or a sample inside it) cannot be read; the message names the shard, where, and the fix."""


def shard_label(source: object) -> str:
    """A name for messages: the path, an open file's `.name`, or '<stream>' for an anonymous stream."""
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return "<stream>"
