"""Dataset statistics combined across workers: counts, seconds, label histogram, mel mean/std.

The mel mean/std (over all rows of all clips that have audio) normalises spectrograms in training,
as AST and MBT do; clips without audio are left out so that their silence doesn't bias it. Sums are
kept as integers (fixed point, 1e-4) so that the result does not depend on the order in which
workers combine: the same clips give the same index bytes on every runner.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np

from shards.format.schema import NUM_MEL_BINS, Sample


_SCALE = 1e4  # fixed-point scale of the mel sums


def sample_stats(sample: Sample, fetched_bytes: int = 0) -> dict[str, Any]:
    """The small summary of one sample that the combiner adds up; `fetched_bytes` is what was fetched
    of a remote source for it (the whole fetch is counted with the first clip it served)."""
    mel = sample.melspec.astype(np.float64)
    has_audio = bool(sample.meta.get("has_audio", True))
    fixed = lambda x: np.round(x * _SCALE).astype(np.int64)  # noqa: E731
    return {
        "samples": 1,
        "milliseconds": int(round(sample.duration * 1000)),
        "frames": len(sample.frames),
        "labels": list(sample.labels),
        "mel_rows": mel.shape[0] if has_audio else 0,
        "mel_sum": fixed(mel.sum(0)) if has_audio else None,
        "mel_sumsq": fixed((mel * mel).sum(0)) if has_audio else None,
        "no_audio": int(not has_audio),
        "fetched_bytes": fetched_bytes,
    }


class DatasetStatsFn(beam.CombineFn):
    """Adds up `sample_stats` dicts; extract_output gives plain JSON-able numbers."""

    def create_accumulator(self) -> dict[str, Any]:
        zeros = np.zeros(NUM_MEL_BINS, np.int64)
        return {"samples": 0, "milliseconds": 0, "frames": 0, "label_counts": {}, "mel_rows": 0,
                "mel_sum": zeros, "mel_sumsq": zeros.copy(), "no_audio": 0, "fetched_bytes": 0}

    def add_input(self, acc: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
        acc["samples"] += s["samples"]
        acc["milliseconds"] += s["milliseconds"]
        acc["frames"] += s["frames"]
        acc["no_audio"] += s["no_audio"]
        acc["fetched_bytes"] += s["fetched_bytes"]
        for label in s["labels"]:
            acc["label_counts"][label] = acc["label_counts"].get(label, 0) + 1
        if s["mel_rows"]:
            acc["mel_rows"] += s["mel_rows"]
            acc["mel_sum"] = acc["mel_sum"] + s["mel_sum"]
            acc["mel_sumsq"] = acc["mel_sumsq"] + s["mel_sumsq"]
        return acc

    def merge_accumulators(self, accs) -> dict[str, Any]:
        out = self.create_accumulator()
        for a in accs:
            for k in ("samples", "milliseconds", "frames", "no_audio", "mel_rows", "fetched_bytes"):
                out[k] += a[k]
            out["mel_sum"] = out["mel_sum"] + a["mel_sum"]
            out["mel_sumsq"] = out["mel_sumsq"] + a["mel_sumsq"]
            for label, n in a["label_counts"].items():
                out["label_counts"][label] = out["label_counts"].get(label, 0) + n
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        n = max(acc["mel_rows"], 1)
        total_sum, total_sumsq = (int(acc[k].sum()) / _SCALE for k in ("mel_sum", "mel_sumsq"))
        mean_bin = acc["mel_sum"] / _SCALE / n
        std_bin = np.sqrt(np.maximum(acc["mel_sumsq"] / _SCALE / n - mean_bin ** 2, 0.0))
        total = total_sum / (n * NUM_MEL_BINS)
        std = np.sqrt(max(total_sumsq / (n * NUM_MEL_BINS) - total ** 2, 0.0))
        r = lambda x: float(round(float(x), 6))  # noqa: E731 - stable, readable JSON
        return {
            "samples": acc["samples"], "seconds": acc["milliseconds"] / 1000, "frames": acc["frames"],
            "no_audio": acc["no_audio"], "fetched_bytes": acc["fetched_bytes"],
            "label_counts": {str(k): v for k, v in sorted(acc["label_counts"].items())},
            "mel_rows": acc["mel_rows"], "mel_mean": r(total), "mel_std": r(std),
            "mel_mean_per_bin": [r(x) for x in mean_bin], "mel_std_per_bin": [r(x) for x in std_bin],
        }
