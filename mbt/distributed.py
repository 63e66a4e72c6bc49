"""Multi-process training: join the JAX cluster, and make sure every process runs the same config.

    mbt train ... --coordinator 10.0.0.1:1234 --num-processes 8 --process-id $RANK   # GPU hosts
    mbt train ...                       # TPU pods / SLURM: jax.distributed finds everything itself

On CPU the processes talk through gloo (`jax_cpu_collectives_implementation`), which is how the
2-process test runs on one machine. Every wait is bounded: an unreachable coordinator is an error
naming its address, not a hang.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from shards.format.errors import UserError


class DistributedError(UserError, RuntimeError):
    """Processes that cannot form a cluster or disagree; the message names the address or field."""


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
               timeout_s: int = 60) -> None:
    """jax.distributed.initialize with CPU collectives and a bounded wait."""
    # Only CPU collectives read this; set before the backend starts (touching it here would start it).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator and process_id:
        # JAX aborts the whole process (no exception) when it can't reach the coordinator: look first.
        wait_for_coordinator(coordinator, timeout_s)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - jax raises several types; all mean "no cluster"
        raise DistributedError(
            f"could not join the JAX cluster at coordinator {coordinator} as process {process_id} of "
            f"{num_processes} within {timeout_s} s ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"start process 0 first on that address, or check the port") from None


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Return once HOST:PORT accepts connections; DistributedError after `timeout_s` seconds."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except (OSError, ValueError) as e:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"coordinator {address} did not answer within {timeout_s} s ({e}); start process 0 "
                    f"(--process-id 0) first with the same --coordinator, or check host and port") from None
            time.sleep(0.5)


def check_same_config(config) -> None:
    """Raise DistributedError naming the fields where this process's config differs from process 0's."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = json.dumps(dataclasses.asdict(config), sort_keys=True, default=list).encode()
    size = int(np.max(multihost_utils.process_allgather(np.array([len(mine)]))))
    buf = np.zeros(size, np.uint8)
    buf[: len(mine)] = np.frombuffer(mine, np.uint8)
    first = bytes(multihost_utils.broadcast_one_to_all(buf)).rstrip(b"\0")
    # Every process learns whether any differs, so that all stop (none waits for the others forever).
    differs = multihost_utils.process_allgather(np.array([first != mine]))
    if not differs.any():
        return
    if first != mine:
        from mbt.overrides import flatten

        theirs, ours = flatten(json.loads(first)), flatten(json.loads(mine))
        diff = [f"{k}: process 0 has {theirs.get(k)!r}, process {jax.process_index()} has {ours.get(k)!r}"
                for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        raise DistributedError("processes disagree on the config: " + "; ".join(diff))
    raise DistributedError(f"processes disagree on the config: process(es) "
                           f"{np.nonzero(differs.ravel())[0].tolist()} differ from process 0 (see their errors)")
