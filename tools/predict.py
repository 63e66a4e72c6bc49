"""Label raw videos with a trained run, through exactly the preprocessing the run was trained on.

    mbt predict clip.mp4 videos/ clips.csv --workdir runs/tiny [--stride 4 | --windows 4] [--png out/]

Each video (a file, every video of a folder, or each row of a manifest: its [start, end)) is cut into
the model's windows of t = input.clip_seconds seconds, slid by `stride` (default t) on the 25 fps
grid. Every window is decoded as `mbt ingest` decodes a clip of [s, s + t) (the same ffmpeg arguments
and JPEG encoding, the same spectrogram (log-mel or AST's Kaldi fbank, as the run's data was
ingested): pipelines.clip), goes through the shard encoding in memory
(shards.input.memory_input.as_stored), and through the evaluation half of the input (centred crop,
normalisation with the training data's mel statistics). So a window's logits equal those `mbt eval`
gives for that clip ingested into shards. With `windows=N` a video is instead decoded whole and read
at N evenly spaced windows, as `mbt eval --test-windows N` reads a clip.

The preprocessing comes from the run: `RUN/data.json`, which `mbt train` writes (the training data's
classes, feature parameters and mel statistics), or the training dataset's index given as `data`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Callable, Iterator

import numpy as np

from pipelines.ffmpeg_run import DecodeError
from shards.format.errors import UserError
from shards.format.schema import FPS

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


class PredictError(UserError, ValueError):
    """The run or the request can't be served; the message names what and the fix."""


@dataclasses.dataclass(frozen=True)
class Video:
    """One video to predict: [start, end) seconds of the file at `path` (end None: to its end)."""

    key: str
    path: str
    start: float = 0.0
    end: float | None = None


@dataclasses.dataclass
class Predictor:
    """A run loaded for prediction: its config, parameters and the preprocessing it was trained on."""

    workdir: str
    cfg: Any  # TrainConfig
    params: Any
    step: int
    ingest: Any  # pipelines.config.IngestConfig with the training data's feature parameters
    classes: list[str]
    mel_mean: Any
    mel_std: Any


# ---------------------------------------------------------------------------------------------------
# What to predict.
# ---------------------------------------------------------------------------------------------------
def videos_of(inputs: list[str], on_failure: Callable[[str, str, str], None]) -> list[Video]:
    """Videos of files, folders (their video files, recursively, sorted) and manifests (one per row;
    a bad row goes to on_failure(what, reason, detail))."""
    from pipelines.manifests import ManifestError, read_manifest
    from pipelines.manifests.folder import VIDEO_EXTENSIONS
    from shards.format.storage import is_url

    videos: list[Video] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(root, n) for root, dirs, names in os.walk(item)
                           for n in names if n.lower().endswith(VIDEO_EXTENSIONS) and not n.startswith("."))
            if not found:
                on_failure(item, "no_videos", f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in the folder")
            videos += [Video(key=os.path.relpath(p, item), path=os.path.abspath(p)) for p in found]
        elif item.lower().endswith(MANIFEST_SUFFIXES):
            try:
                manifest = read_manifest(item)
            except (ManifestError, OSError) as e:
                on_failure(item, "bad_manifest", str(e))
                continue
            for failure in manifest.failures:
                on_failure(f"{item}:{failure.row}", failure.reason, failure.detail)
            videos += [Video(key=s.key, path=s.path, start=s.start, end=s.end) for s in manifest.specs]
        else:
            videos.append(Video(key=os.path.basename(item), path=item if is_url(item) else os.path.abspath(item)))
    return videos


def window_starts(start: float, end: float, span: float, stride: float) -> list[float]:
    """Window starts on the 25 fps grid from `start` while a whole window of `span` s fits before
    `end`; one window at `start` when none does (it is padded as training pads a short clip)."""
    grid = lambda t: math.floor(t * FPS + 0.5 + 1e-9) / FPS  # noqa: E731 - nearest frame, halves up
    first = grid(start)
    count = max(1, int(math.floor((end - first - span) / stride + 1e-6)) + 1)
    return [grid(first + k * stride) for k in range(count)]


# ---------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------
def load_predictor(workdir: str, data: str | None = None, split: str = "train") -> Predictor:
    """The run's latest checkpoint and preprocessing (RUN/data.json, or the index of `data`)."""
    from mbt.run_dir import load_run, read_config, read_data_record
    from shards.input import mel_statistics

    read_config(workdir)  # not a run directory at all: say that, not that its data.json is missing
    if data is not None:
        from shards.format.dataset_index import load_index

        record, where = load_index(data, split), f"the index of {data}"
    else:
        record, where = read_data_record(workdir), f"{workdir}/data.json"
        if record is None:
            raise PredictError(f"{workdir} does not record its training data's preprocessing (data.json; runs "
                               f"of `mbt train` before `mbt predict` existed): pass --data TRAINING_DATASET")
    missing = [k for k in ("features", "classes", "mel_mean", "mel_std") if record.get(k) is None]
    if missing:
        raise PredictError(f"{where} lacks {', '.join(missing)}: the training data's features are unknown; "
                           f"pass --data with the training dataset folder (its SPLIT.index.json)")
    ingest = ingest_config_of(record["features"], where)
    cfg, params, step = load_run(workdir)
    mel_mean, mel_std = mel_statistics(cfg.input, record, where)
    return Predictor(workdir=workdir, cfg=cfg, params=params, step=step, ingest=ingest,
                     classes=list(record["classes"]), mel_mean=mel_mean, mel_std=mel_std)


def ingest_config_of(features: dict, where: str = "the run"):
    """The IngestConfig that computes the recorded `features` (an index's or data.json's: its kind,
    log_mel when unrecorded, and parameters); PredictError when this version computes other ones."""
    from pipelines.config import IngestConfig
    from shards.format.schema import FEATURE_KINDS, feature_kind, spectrogram_params

    kind = feature_kind(features)
    if kind not in FEATURE_KINDS:
        raise PredictError(f"{where}: the run was trained on {kind!r} features, which this version can't "
                           f"compute (it computes {', '.join(FEATURE_KINDS)}); predict with the version of the "
                           f"toolkit that ingested the data")
    try:
        ingest = IngestConfig(output="-", short_side=int(features["short_side"]),
                              jpeg_quality=int(features["jpeg_quality"]), features=kind,
                              mel=spectrogram_params(kind, features["mel"]))
    except (KeyError, TypeError, ValueError) as e:  # (SchemaError, IngestError: ValueErrors)
        raise PredictError(f"{where}: {kind} parameters this version can't compute ({e}); predict with the "
                           f"version of the toolkit that ingested the data") from None
    computed, recorded = ingest.feature_params(), {"kind": kind, **features}
    differ = [k for k in sorted(set(computed) | set(recorded)) if computed.get(k) != recorded.get(k)]
    if differ:
        raise PredictError(f"{where}: the run was trained on features predict does not compute ("
                           + "; ".join(f"{k}: trained {recorded.get(k)!r}, predict {computed.get(k)!r}"
                                       for k in differ) + ")")
    return ingest


# ---------------------------------------------------------------------------------------------------
# Prediction.
# ---------------------------------------------------------------------------------------------------
def check_outputs(output: str | None, png: str | None) -> None:
    """PredictError when --output (F.json or F.csv) or --png (a folder) could not be written: a file
    where a folder belongs, a folder where the file goes, a read-only folder."""
    from pipelines.config import output_folder_problem

    if output:
        if not output.lower().endswith((".json", ".csv")):
            raise PredictError(f"--output {output}: name a .json or a .csv file")
        if os.path.isdir(output):
            raise PredictError(f"--output {output}: is a folder; name a .json or a .csv file in it")
        folder = os.path.dirname(os.path.abspath(output))
        if problem := output_folder_problem(folder):
            raise PredictError(f"--output {output}: {folder} {problem}")
    if png and (problem := output_folder_problem(png)):
        raise PredictError(f"--png {png}: {problem}")


def check_request(*, stride: float | None = None, windows: int | None = None, top_k: int = 5,
                  batch_size: int | None = None) -> None:
    """PredictError naming the first setting that can't work (before any run is loaded)."""
    if stride is not None and not (stride > 0 and math.isfinite(stride)):
        raise PredictError(f"--stride {stride}: use a number of seconds > 0")
    for flag, value in (("--windows", windows), ("--top-k", top_k), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise PredictError(f"{flag} {value}: use 1 or more")


def predict(p: Predictor, videos: list[Video], *, stride: float | None = None, windows: int | None = None,
            top_k: int = 5, batch_size: int | None = None,
            on_failure: Callable[[str, str, str], None] = lambda *a: None) -> list[dict[str, Any]]:
    """One result per video that decoded (see `video_result`); the others go to on_failure(path,
    reason, detail) and the rest go on. Windows of all videos share batches."""
    check_request(stride=stride, windows=windows, top_k=top_k, batch_size=batch_size)
    import jax

    from mbt.evaluate import logits_of
    from shards.input.memory_input import eval_batches

    span = p.cfg.input.clip_seconds
    icfg = dataclasses.replace(p.cfg.input, test_windows=windows or 1, labels="multi_hot", rgb_uint8=False,
                               num_workers=0, batch_size=batch_size or p.cfg.input.batch_size)
    state: dict[int, dict] = {}  # video number -> what its windows made so far
    failed: set[int] = set()
    logits_by_window: dict[tuple[int, int], dict] = {}

    def lazies() -> Iterator:
        for j, v in enumerate(videos):
            info = {"video": v, "windows": [], "has_audio": True}
            state[j] = info
            try:
                for lazy, cut, has_audio in _samples(p, v, f"v{j}", span, stride or span, windows):
                    info["windows"] += cut
                    info["has_audio"] &= has_audio
                    yield lazy
            except DecodeError as e:
                failed.add(j)
                on_failure(v.path, e.reason, e.detail)

    for batch in eval_batches(lazies(), icfg, num_classes=p.cfg.model.num_classes or 1,
                              mel_mean=p.mel_mean, mel_std=p.mel_std):
        inputs = {m: batch[m] for m in p.cfg.model.modalities}
        logits = jax.device_get(logits_of(p.params, inputs, p.cfg.model))
        for i in np.nonzero(batch["mask"] > 0)[0]:
            video, _, number = str(batch["key"][i])[1:].partition("_w")  # v<video>_w<window> | v<video>
            window = int(number) if number else int(batch["window"][i])
            logits_by_window[(int(video), window)] = jax.tree.map(lambda x: np.asarray(x[i], np.float64), logits)
    results = []
    for j in range(len(videos)):
        if j in failed or j not in state:
            continue
        info = state[j]
        per_window = [logits_by_window[(j, i)] for i in range(len(info["windows"]))]
        results.append(video_result(p, info, per_window, top_k))
    return results


def _samples(p: Predictor, v: Video, key: str, span: float, stride: float, count: int | None):
    """(stored sample, [{start s, end s, thumbnail} of each window it gives], has audio) for
    `v`: a sample per window of `span` s slid by `stride`, or (count=N) one sample of the whole video
    read at N evenly spaced windows (shards.input.sampling.choose_windows, as evaluation reads a clip)."""
    from pipelines.media_input import local_copy, needs_local_copy

    # a video in a bucket is copied here once (ffmpeg can't read gs://), and serves all its windows
    with (local_copy(v.path) if needs_local_copy(v.path) else contextlib.nullcontext(v.path)) as local:
        try:
            yield from _cut(p, v, local, key, span, stride, count)
        except DecodeError as e:
            raise DecodeError(e.reason, e.detail.replace(local, v.path)) from None


def _cut(p: Predictor, v: Video, local: str, key: str, span: float, stride: float, count: int | None):
    from pipelines.clip import decode, sample_of
    from pipelines.ffmpeg_stderr import probe
    from pipelines.manifests import ClipSpec
    from shards.input.memory_input import as_stored
    from shards.input.sampling import choose_windows

    end = v.end if v.end is not None else probe(local).duration
    if end is None:
        raise DecodeError("unreadable", f"{v.path}: ffmpeg reports no duration")
    spans = [(v.start, end)] if count else [(s, s + span) for s in window_starts(v.start, end, span, stride)]
    icfg = p.cfg.input
    for i, (s, e) in enumerate(spans):
        clip = decode(local, s, e, p.ingest)
        spec = ClipSpec(row=i + 1, key=key if count else f"{key}_w{i}", path=v.path, start=s, end=e)
        lazy = as_stored(sample_of(spec, [], p.ingest, clip))
        cut = choose_windows(lazy.num_frames, len(lazy.melspec), num_frames=icfg.num_frames, clip_seconds=span,
                             frame_stride=icfg.frame_stride, mode="spaced", count=count or 1)
        starts = [clip.start + w.frames[0] / FPS for w in cut]
        yield lazy, [{"start": t, "end": t + span, **_thumbnail(lazy, w)} for t, w in zip(starts, cut)], \
            clip.has_audio


def _thumbnail(lazy, window) -> dict:
    """What the timeline picture keeps of a window: its middle frame (JPEG) and its spectrogram pooled
    to 10 rows a second."""
    mel = np.asarray(lazy.melspec)[window.spec_start:window.spec_start + window.spec_rows]
    pooled = mel[: len(mel) // 10 * 10].reshape(-1, 10, mel.shape[1]).mean(1) if len(mel) >= 10 else mel
    return {"frame": lazy.frame(window.frames[len(window.frames) // 2]), "mel": pooled.astype(np.float32)}


def probabilities(logits: Any, head: str) -> Any:
    if head == "multilabel":
        return 1 / (1 + np.exp(-logits))
    if head == "multiclass":
        return _softmax(logits)
    return {k: _softmax(v) for k, v in logits.items()}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def top(probs: Any, classes: list[str], k: int) -> list[list]:
    """[[label, probability], ...] best first; EPIC's two heads as verb:i / noun:j."""
    if isinstance(probs, dict):
        return [[f"{head}:{i}", round(float(ph[i]), 6)] for head, ph in probs.items()
                for i in np.argsort(-ph)[:k]]
    name = lambda i: classes[i] if i < len(classes) else str(i)  # noqa: E731
    return [[name(int(i)), round(float(probs[i]), 6)] for i in np.argsort(-probs)[:k]]


def video_result(p: Predictor, info: dict, per_window: list[dict], top_k: int) -> dict[str, Any]:
    """Per window and per video (logits averaged over the windows, as `mbt eval` averages a clip's):
    top-k labels of the model's fused prediction and of each modality."""
    import jax

    head, mods = p.cfg.model.head, p.cfg.model.modalities

    def fuse(row: dict) -> dict:  # the model's own fused logits first (mbt.evaluate.logits_of)
        return {"fused": row["fused"], **{m: row[m] for m in mods}}

    windows = []
    for w, row in zip(info["windows"], per_window):
        probs = {name: probabilities(x, head) for name, x in fuse(row).items()}
        windows.append({"start": round(w["start"], 3), "end": round(w["end"], 3),
                        "top": {name: top(pr, p.classes, top_k) for name, pr in probs.items()},
                        "logits": fuse(row), "probabilities": probs["fused"], "frame": w["frame"],
                        "mel": w["mel"]})
    mean = {m: jax.tree.map(lambda *xs: sum(xs) / len(xs), *[row[m] for row in per_window])
            for m in ("fused", *mods)}
    video = {name: probabilities(x, head) for name, x in fuse(mean).items()}
    v = info["video"]
    return {"video": v.path, "key": v.key, "start": v.start, "end": v.end, "has_audio": info["has_audio"],
            "windows": windows, "top": {name: top(pr, p.classes, top_k) for name, pr in video.items()},
            "probabilities": video, "classes": p.classes}
