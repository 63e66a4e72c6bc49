"""The errors of the whole toolkit that a user causes and can fix, and the shard format's own.

`UserError` is the one base class the `mbt` command catches: it prints the message as one line (exit
2), never a traceback. Every package's error for bad input, a bad flag or a bad file derives from it
(ShardError here, StorageError, IngestError, ManifestError, the model and trainer errors, ...), so a
new one needs no list to be added to. This module imports nothing, so every layer may stand on it.
"""

from __future__ import annotations

import os

# what to do about a damaged shard, the end of the codecs' messages
REWRITE_FIX = "re-create the shard (mbt ingest writes shards under a temporary name and renames them when whole)"


class UserError(Exception):
    """Bad input, a bad flag or a bad file: the message names the path and the fix, in one line."""


class ShardError(UserError, ValueError):
    """A shard (or a sample inside it) cannot be read; the message names the shard, where, and the fix."""


def shard_label(source: object) -> str:
    """A name for messages: the path, an open file's `.name`, or '<stream>' for an anonymous stream."""
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return "<stream>"
