"""Where a run's numbers go: metrics.jsonl and TensorBoard event files, and a progress line."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class MetricWriter:
    """Appends {"step": s, name: value, ...} lines to WORKDIR/metrics.jsonl and TensorBoard scalars."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled and tensorboard:
            import tensorflow as tf  # TensorBoard's event format; imported only by a training run

            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

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

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


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
