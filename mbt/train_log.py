"""Where a run's numbers go: metrics.jsonl and TensorBoard event files, and a progress line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from shards.format import storage


class MetricWriter:
    """Appends {"step": s, name: value, ...} lines to WORKDIR/metrics.jsonl and TensorBoard scalars.

    For a WORKDIR in a bucket both are written to a local mirror and uploaded whole by `sync()` (an
    object store has no append): at most every `sync_every` seconds, when the trainer is about to save
    a checkpoint (so a checkpoint never gets ahead of the metrics that led to it), and on close. A
    restarted run first fetches the run's metrics.jsonl and goes on appending to it."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True, sync_every: float = 30.0):
        self.enabled = enabled
        self.remote = workdir if storage.is_url(workdir) and enabled else None
        self.local = tempfile.mkdtemp(prefix="mbt-metrics-") if self.remote else workdir
        self.path = os.path.join(self.local, "metrics.jsonl")
        self.sync_every, self._synced_at, self._uploaded = sync_every, time.monotonic(), {}
        if self.remote:
            try:
                with open(self.path, "wb") as f:
                    f.write(storage.read_bytes(storage.join(self.remote, "metrics.jsonl")))
            except FileNotFoundError:
                pass
        self._tb = None
        if enabled and tensorboard:
            import tensorflow as tf  # TensorBoard's event format; imported only by a training run

            self._tb = tf.summary.create_file_writer(os.path.join(self.local, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        scalars = {f"{prefix}{k}": float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and k != "step"}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}, sort_keys=True) + "\n")
        if self._tb is not None:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2

            # tf.summary.scalar lives in the separate `tensorboard` package; writing the scalar with
            # the scalars plugin's metadata needs only TensorFlow and reads the same in TensorBoard.
            meta = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
            with self._tb.as_default(step=step):
                for k, v in scalars.items():
                    tf.summary.write(k, tf.constant(v, tf.float32), metadata=meta)
            self._tb.flush()
        if self.remote and time.monotonic() - self._synced_at >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        """Upload what changed in the local mirror (nothing for a local run)."""
        if not self.remote:
            return
        names = ["metrics.jsonl"] if os.path.exists(self.path) else []
        tb = os.path.join(self.local, "tensorboard")
        names += [f"tensorboard/{n}" for n in sorted(os.listdir(tb))] if os.path.isdir(tb) else []
        for name in names:
            local = os.path.join(self.local, name)
            size = os.path.getsize(local)
            if self._uploaded.get(name) != size:
                storage.upload(local, storage.join(self.remote, name))
                self._uploaded[name] = size
        self._synced_at = time.monotonic()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.remote:
            self.sync()
            shutil.rmtree(self.local, ignore_errors=True)
            self.remote = None


class ProgressLine:
    """step / total, loss, steps/s, clips/s, ETA, on one line (a new line each update off a terminal)."""

    def __init__(self, total: int, batch_size: int, enabled: bool = True, stream=None):
        self.total, self.batch_size, self.enabled = total, batch_size, enabled
        self.stream = stream or sys.stderr
        self.t0, self.first = time.time(), None

    def update(self, step: int, loss: float, skipped: dict[str, int] | None = None) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.first is None:
            self.first = (step, now)  # the first steps include compilation: rate from here on
            rate = 0.0
        else:
            rate = (step - self.first[0]) / max(now - self.first[1], 1e-9)
        eta = f"{(self.total - step) / rate:.0f}s" if rate > 0 else "-"
        line = (f"step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  "
                f"{rate * self.batch_size:.1f} clips/s  ETA {eta}")
        if skipped and sum(skipped.values()):
            line += "  skipped " + ", ".join(f"{k.removeprefix('skipped_')} {v}" for k, v in skipped.items() if v)
        tty = self.stream.isatty()
        self.stream.write(("\r" + line) if tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.stream.isatty():
            self.stream.write("\n")
