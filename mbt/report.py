"""The report of a trained run: per-class AP of its fused prediction and of its two stream heads, and
(given models trained on one modality alone) the paper's comparison; attention maps.

    mbt report runs/tiny --data demo_out/shards --split validation
    mbt report runs/table1/bottleneck --data D --audio-run runs/table1/audio_only --video-run runs/table1/video_only

writes into RUN/report/ (or --out; either may be a bucket, where the files are drawn locally and uploaded):
- `per_class_ap.csv`: class, AP of the fused logits, of the model's spectrogram head and of its RGB
  head, of the audio-only and video-only models when given, and the number of positives; multiclass
  labels count as one-hot.
- `per_class_ap.png`: those APs per class, sorted by fused AP (the paper's per-class analysis). With
  more than `max_classes` classes it shows the ones where fusion gains most over audio alone.
- `attention_<key>.png`: the CLS -> RGB attention of each modality over the clip's frames (paper, Fig. 6),
  by rollout (under bottleneck fusion the spectrogram CLS reaches the frames only through other tokens).
- `summary.json`: step, split, clips, the headline metrics of every prediction, the classes that gain
  most from fusion over each unimodal model, and the files written.

A stream head is not a unimodal model: under bottleneck or cross-attention fusion the RGB head has
seen the audio through the fusion layers, so "RGB head" can score well on classes the picture alone
can't separate. The paper's Figs. 3-4 compare against separately trained models: pass them as
`audio_run` / `video_run` (e.g. `mbt table1`'s audio_only and video_only runs).
A verb_noun (EPIC) run gets verb / noun / action accuracy per prediction and no per-class AP.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from typing import Any

import numpy as np

from mbt.train_config import TrainConfig
from shards.format.errors import UserError

# Column name in the CSV for each prediction: the run's fused logits, its two stream heads, and
# separately trained unimodal models.
COLUMNS = {"fused": "ap_fused", "spectrogram": "ap_spectrogram_head", "rgb": "ap_rgb_head",
           "audio_model": "ap_audio_model", "video_model": "ap_video_model"}
LABELS = {"fused": "fused (this model)", "spectrogram": "its spectrogram head", "rgb": "its RGB head",
          "audio_model": "audio-only model", "video_model": "video-only model"}
STREAMS = {"rgb": "RGB", "spectrogram": "spectrogram"}
COLOURS = {"fused": "#2b6cb0", "spectrogram": "#f6d38b", "rgb": "#f2a7a7", "audio_model": "#b7791f",
           "video_model": "#9b2c2c"}
UNIMODAL = {"audio_model": "spectrogram", "video_model": "rgb"}  # prediction -> the one modality it needs


def write_report(workdir: str, data: str, split: str = "validation", *, out: str | None = None,
                 clips: int = 4, method: str = "rollout", test_windows: int | None = None,
                 max_classes: int = 40, audio_run: str | None = None,
                 video_run: str | None = None) -> dict[str, Any]:
    """Evaluate the run's latest checkpoint on `data`/`split` and write the report; returns the summary."""
    from mbt.evaluate import predict
    from mbt.run_dir import load_run
    from shards.format import storage
    from shards.input import source

    out = out or storage.join(workdir, "report")
    if storage.is_url(out):  # drawn here, then uploaded file by file
        with tempfile.TemporaryDirectory(prefix="mbt-report-") as local:
            summary = write_report(workdir, data, split, out=local, clips=clips, method=method,
                                   test_windows=test_windows, max_classes=max_classes, audio_run=audio_run,
                                   video_run=video_run)
            for name in [*summary["files"], "summary.json"]:
                storage.upload(os.path.join(local, name), storage.join(out, name))
        summary["out"] = out
        return summary
    cfg, params, step = load_run(workdir)
    os.makedirs(out, exist_ok=True)
    pred = predict(cfg, params, data, split, test_windows=test_windows)
    for name, run in (("audio_model", audio_run), ("video_model", video_run)):
        if run:
            pred["logits"][name] = unimodal_logits(run, UNIMODAL[name], cfg, data, split, pred["keys"],
                                                   test_windows=test_windows)
    index = source.resolve(data, split=split, fmt=cfg.input.format).index
    summary = {"run": workdir, "step": step, "data": data, "split": split,
               **write_tables(cfg, pred, out, classes=(index or {}).get("classes"), max_classes=max_classes,
                              title=_title(cfg, step, split))}
    if "rgb" in cfg.model.modalities:
        summary["files"] += attention_figures(cfg, params, data, split, out, clips=clips, method=method,
                                              classes=summary.get("classes"), prediction=pred)
    else:
        summary["attention"] = "skipped: the model has no rgb stream"
    summary["files"] = [os.path.basename(f) for f in summary["files"]]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(_no_nan(summary), f, indent=1, default=_json_default)
    summary["out"] = out
    return summary


class ReportError(UserError, ValueError):
    """A comparison run that does not fit the report's run; the message says which and why."""


def unimodal_logits(run: str, modality: str, cfg: TrainConfig, data: str, split: str, keys: list[str],
                    *, test_windows: int | None = None) -> Any:
    """The logits of a run trained on `modality` alone, for the same clips as the report's run."""
    from mbt.evaluate import predict
    from mbt.run_dir import load_run

    flag = "--audio-run" if modality == "spectrogram" else "--video-run"
    other, params, _ = load_run(run)
    if tuple(other.model.modalities) != (modality,):
        raise ReportError(f"{flag} {run}: its model has modalities {list(other.model.modalities)}; pass a run "
                         f"trained with --model.modalities={modality} (mbt table1's audio_only/video_only)")
    if (other.model.head, other.model.num_classes) != (cfg.model.head, cfg.model.num_classes):
        raise ReportError(f"{flag} {run}: head {other.model.head} with {other.model.num_classes} classes, the "
                         f"report's run {cfg.model.head} with {cfg.model.num_classes}: train both on the same data")
    pred = predict(other, params, data, split, test_windows=test_windows)
    if pred["keys"] != keys:
        raise ReportError(f"{flag} {run}: predicted {len(pred['keys'])} clips of {data}, the report's run "
                         f"{len(keys)}; some clips were skipped by one of them")
    return pred["logits"]["fused"]


def fusion_gains(rows: list[dict], top: int = 5) -> dict[str, list]:
    """The classes whose AP gains most from fusion over each unimodal model given: {over: [[class, gain]]}."""
    out = {}
    for name in UNIMODAL:
        col = COLUMNS[name]
        scored = [(r["class"], r["ap_fused"] - r[col]) for r in rows
                  if col in r and r["positives"] and not np.isnan(r[col]) and not np.isnan(r["ap_fused"])]
        if scored:
            out[f"over_{name}"] = [[c, round(float(g), 4)] for c, g in sorted(scored, key=lambda x: -x[1])[:top]]
    return out


def write_tables(cfg: TrainConfig, pred: dict[str, Any], out: str, *, classes: list[str] | None = None,
                 max_classes: int = 40, title: str = "") -> dict[str, Any]:
    """Score a prediction (mbt.evaluate.predict's dict) and write the per-class AP CSV and plot.

    Returns the summary's fields: head, clips, windows, modalities, metrics per prediction, mean AP,
    class names and the files written (none for verb_noun, whose numbers go to the summary only)."""
    from mbt.evaluate import score

    head = cfg.model.head
    scores = {name: score(logits, pred["labels"], head) for name, logits in pred["logits"].items()}
    summary: dict[str, Any] = {"head": head, "clips": len(pred["keys"]), "windows": pred["windows"],
                               "modalities": list(cfg.model.modalities), "files": [],
                               "metrics": {name: {k: v for k, v in s.items() if isinstance(v, float)}
                                           for name, s in scores.items()}}
    if head == "verb_noun":
        return summary
    classes = _class_names(classes, cfg.model.num_classes)
    targets = _targets(pred["labels"], head, cfg.model.num_classes)
    ap = {name: np.asarray(s["per_class_ap"], np.float64) for name, s in scores.items()}
    rows = per_class_rows(classes, ap, targets.sum(0))
    summary["files"].append(write_csv(rows, os.path.join(out, "per_class_ap.csv")))
    summary["files"].append(plot_per_class_ap(rows, os.path.join(out, "per_class_ap.png"),
                                              max_classes=max_classes, title=title))
    summary["mean_ap"] = {name: _nanmean(a) for name, a in ap.items()}
    gains = fusion_gains(rows)
    if gains:
        summary["fusion_gain"] = gains
    summary["classes"] = classes
    return summary


# ---------------------------------------------------------------------------------------------------
# Per-class AP.
# ---------------------------------------------------------------------------------------------------
def per_class_rows(classes: list[str], ap: dict[str, np.ndarray], positives: np.ndarray) -> list[dict]:
    """One dict per class: name, AP of each prediction (NaN: no positive, or modality absent), positives."""
    rows = []
    for c, name in enumerate(classes):
        row: dict[str, Any] = {"class": name}
        for pred, column in COLUMNS.items():
            if pred in UNIMODAL and pred not in ap:
                continue  # (columns of unimodal runs only when given)
            row[column] = float(ap[pred][c]) if pred in ap else float("nan")
        row["positives"] = int(positives[c])
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["class", *COLUMNS.values(), "positives"])
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else
                            f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def plot_per_class_ap(rows: list[dict], path: str, *, max_classes: int = 40, title: str = "") -> str:
    """Per-class AP of each prediction as grouped horizontal bars, sorted by fused AP (best on top)."""
    plt = _pyplot()
    rows = [r for r in rows if r["positives"] > 0]
    preds = [p for p, col in COLUMNS.items() if any(not np.isnan(r.get(col, np.nan)) for r in rows)]
    note = ""
    if len(rows) > max_classes:  # the paper's view: where adding video helps the audio model most
        over = "ap_audio_model" if "audio_model" in preds else "ap_spectrogram_head"
        gain = lambda r: np.nan_to_num(r["ap_fused"] - r.get(over, np.nan), nan=-1.0)  # noqa: E731
        rows = sorted(rows, key=gain, reverse=True)[:max_classes]
        note = (f" ({max_classes} classes with the largest gain over "
                f"{'the audio-only model' if over == 'ap_audio_model' else 'its spectrogram head'})")
    rows = sorted(rows, key=lambda r: np.nan_to_num(r["ap_fused"], nan=-1.0))
    n, width = len(rows), 0.8 / max(len(preds), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * n * max(1, len(preds)) ** 0.5))
    y = np.arange(n)
    for i, p in enumerate(preds):
        vals = [np.nan_to_num(r[COLUMNS[p]]) for r in rows]
        ax.barh(y + (i - (len(preds) - 1) / 2) * width, vals, height=width, color=COLOURS[p], label=LABELS[p])
    ax.set_yticks(y, [r["class"] for r in rows], fontsize=8)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("average precision")
    ax.set_title((title + note) or "per-class AP", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 2.0 / (n + 8)), ncol=len(preds), fontsize=8,
              frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# Attention maps (Fig. 6).
# ---------------------------------------------------------------------------------------------------
def attention_figures(cfg: TrainConfig, params, data: str, split: str, out: str, *, clips: int = 4,
                      method: str = "rollout", classes: list[str] | None = None,
                      prediction: dict | None = None) -> list[str]:
    """One PNG per clip: its frames (the eval input's centred crop), overlaid with each modality's
    CLS -> RGB attention. Clips are picked to cover as many labels as possible."""
    from mbt.attention_maps import cls_attention_to_rgb

    chosen = _pick_clips(cfg, data, split, clips)
    if not chosen:
        return []
    inputs = {m: np.stack([c[m] for c in chosen]) for m in cfg.model.modalities}
    maps = cls_attention_to_rgb(cfg.model, {"params": params}, inputs, method)
    fused = None
    if prediction is not None and cfg.model.head != "verb_noun":
        rows = {k: i for i, k in enumerate(prediction["keys"])}
        fused = prediction["logits"]["fused"]
    paths = []
    for i, clip in enumerate(chosen):
        frames = unnormalize(clip["rgb"], cfg.input.rgb_normalization)
        truth = _label_text(clip["label"], classes)
        guess = None
        if fused is not None and clip["key"] in rows:
            guess = _label_text(int(np.argmax(fused[rows[clip["key"]]])), classes)
        path = os.path.join(out, f"attention_{_safe(clip['key'])}.png")
        plot_attention(frames, {m: maps[m][i] for m in maps}, path,
                       title=f"{clip['key']}   label: {truth}" + (f"   predicted: {guess}" if guess else "")
                       + f"   ({method})")
        paths.append(path)
    return paths


def plot_attention(frames: np.ndarray, maps: dict[str, np.ndarray], path: str, title: str = "") -> str:
    """frames uint8 [F, S, S, 3]; maps {modality: [F, h, w]} -> a grid: frames, then one row per map."""
    plt = _pyplot()
    f = frames.shape[0]
    fig, axes = plt.subplots(1 + len(maps), f, figsize=(1.9 * f, 2.0 * (1 + len(maps))), squeeze=False)
    for j in range(f):
        axes[0, j].imshow(frames[j])
        axes[0, j].set_title(f"frame {j}", fontsize=8)
        for r, (m, a) in enumerate(maps.items(), start=1):
            # One scale per clip and modality, min to max: rollout's maps sit on a large uniform floor.
            lo, hi = float(a.min()), float(a.max())
            heat = upsample((a[j] - lo) / max(hi - lo, 1e-12), frames.shape[1])
            axes[r, j].imshow(frames[j])
            axes[r, j].imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if j == 0:
                axes[r, j].set_ylabel(f"{STREAMS[m]} CLS", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def unnormalize(rgb: np.ndarray, normalization: str = "imagenet") -> np.ndarray:
    """The input's normalised float frames back to uint8 for display (inverse of shards.input.augment's
    rgb_affine for InputConfig.rgb_normalization)."""
    from shards.input.augment import rgb_affine

    scale, offset = rgb_affine(normalization)
    return np.clip(np.round((rgb - offset) / scale), 0, 255).astype(np.uint8)


def upsample(a: np.ndarray, size: int) -> np.ndarray:
    """[h, w] patch map -> [size, size], each patch a block (the patches are what the model saw)."""
    k = size // a.shape[0]
    out = np.kron(a, np.ones((k, k)))
    return np.pad(out, ((0, size - out.shape[0]), (0, size - out.shape[1])), mode="edge")


def _pick_clips(cfg: TrainConfig, data: str, split: str, n: int) -> list[dict]:
    """Up to n clips of the eval input (centred window): one per distinct label among the first clips
    (at most max(8n, 64) are looked at), then any."""
    from mbt.evaluate import EvalInput

    picked: list[dict] = []
    spare: list[dict] = []
    seen: set = set()
    looked = 0
    clips = EvalInput(cfg, data, split, test_windows=1, batch_size=max(n, 1))
    for batch, rows in clips:
        looked += clips.batch_size
        for i, key, label in rows:
            label = _shown_label(label)
            clip = {"key": key, "label": label, **{m: np.asarray(batch[m][i]) for m in cfg.model.modalities}}
            hashable = json.dumps(label, default=_json_default)
            (spare if hashable in seen else picked).append(clip)
            seen.add(hashable)
        if len(picked) >= n or looked >= max(8 * n, 64):
            break
    return (picked + spare)[:n]


def _shown_label(label: Any) -> Any:
    """An evaluation label as the report shows it: a class index, the classes of a multi-hot vector,
    or EPIC's verb and noun."""
    if isinstance(label, dict):
        return label
    return int(label) if label.ndim == 0 else [int(c) for c in np.nonzero(label > 0)[0]]


def _label_text(label: Any, classes: list[str] | None) -> str:
    name = lambda c: classes[c] if classes and c < len(classes) else str(c)  # noqa: E731
    if isinstance(label, dict):
        return f"verb {label['verb']} noun {label['noun']}"
    if isinstance(label, list):
        return ", ".join(name(c) for c in label[:3]) + (" ..." if len(label) > 3 else "") or "(none)"
    return name(int(label))


# ---------------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------------
def _targets(labels: list, head: str, num_classes: int) -> np.ndarray:
    if head == "multilabel":
        return np.stack(labels).astype(np.float64)
    return np.eye(num_classes)[np.array([int(label) for label in labels])]


def _class_names(names: list[str] | None, num_classes: int) -> list[str]:
    names = list(names or [])
    return names if len(names) == num_classes else [f"class {c}" for c in range(num_classes)]


def _title(cfg: TrainConfig, step: int, split: str) -> str:
    m = cfg.model
    fusion = m.fusion if m.fused_layers else "late"
    return f"{'+'.join(m.modalities)}, {fusion} L_f={m.fusion_layer}, step {step}, {split}"


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.any(~np.isnan(a)) else float("nan")


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)


def _no_nan(x):
    """NaN (a class without positives) as null: summary.json stays strict JSON."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return None if isinstance(x, float) and np.isnan(x) else x


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt
