"""The timeline picture of one predicted video: frames, spectrogram, and the top classes over time."""

from __future__ import annotations

import io

import numpy as np


def timeline(result: dict, path: str, top: int = 5, max_frames: int = 12) -> str:
    """Three rows on one time axis: the middle frame of up to `max_frames` windows, each window's
    log-mel spectrogram, and the fused probability of the `top` classes (by their highest window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    windows = result["windows"]
    t0, t1 = windows[0]["start"], max(w["end"] for w in windows)
    fig, (ax_frames, ax_mel, ax_prob) = plt.subplots(
        3, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [1.2, 1.2, 2]})
    picks = np.unique(np.linspace(0, len(windows) - 1, min(max_frames, len(windows))).round().astype(int))
    width = (t1 - t0) / max(len(picks), 1)
    for n, i in enumerate(picks):
        img = np.asarray(Image.open(io.BytesIO(windows[i]["frame"])).convert("RGB"))
        left = t0 + n * width
        ax_frames.imshow(img, extent=(left, left + width * 0.96, 0, 1), aspect="auto")
    ax_frames.set_ylim(0, 1)
    ax_frames.set_yticks([])
    ax_frames.set_title(f"{result['video']}" + ("" if result["has_audio"] else "  (no audio track)"), fontsize=9)
    for w in windows:
        mel = w["mel"]  # the window's clip, 10 rows a second
        ax_mel.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
                      extent=(w["start"], w["start"] + len(mel) / 10, 0, mel.shape[1]))
    ax_mel.set_ylabel("mel bin")
    probs = np.stack([w["probabilities"] for w in windows]) if not isinstance(windows[0]["probabilities"], dict) \
        else None
    if probs is not None:
        centres = [(w["start"] + w["end"]) / 2 for w in windows]
        classes = result["classes"]
        for c in np.argsort(-probs.max(0))[:top]:
            name = classes[c] if c < len(classes) else str(c)
            ax_prob.plot(centres, probs[:, c], marker="o", ms=3, label=name)
        ax_prob.legend(loc="upper right", fontsize=8)
    ax_prob.set_ylim(0, 1.02)
    ax_prob.set_ylabel("probability (fused)")
    ax_prob.set_xlabel("seconds")
    ax_prob.set_xlim(t0, t1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
