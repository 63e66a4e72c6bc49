"""Failpoints: named places where a test can kill this process, to prove a kill there loses nothing.

`MBT_FAILPOINT=NAME` (or `NAME:N`, the N-th time it is reached) makes `failpoint(NAME)` kill the
process with SIGKILL: no cleanup, no `finally`, exactly what a preemption or `kill -9` does. Unset (as
always outside tests), a failpoint costs one dictionary look-up. tests/pipelines/test_publish_faults.py
kills the ingest job at each failpoint of publishing and checks that readers see a whole split.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("MBT_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        target, nth = spec, "1"
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
