"""The one exception of the shard format: a shard that is corrupt, truncated or not ours."""

from __future__ import annotations


class ShardError(ValueError):
    """A shard (or a sample inside it) cannot be read; the message names the shard, where, and the fix."""


def shard_label(source: object) -> str:
    """A name for error messages: the path, or an open file's `.name`, or '<stream>'."""
    name = getattr(source, "name", source)
    return str(name) if isinstance(name, (str, bytes)) or hasattr(name, "__fspath__") else "<stream>"
