"""The one exception of the shard format: a shard that is corrupt, truncated or not ours."""

from __future__ import annotations

import os


class ShardError(ValueError):
    """A shard (or a sample inside it) cannot be read; the message names the shard, where, and the fix."""


def shard_label(source: object) -> str:
    """A name for messages: the path, an open file's `.name`, or '<stream>' for an anonymous stream."""
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return "<stream>"
