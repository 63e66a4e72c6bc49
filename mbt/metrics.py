"""Evaluation metrics of the paper, in numpy: mAP (AudioSet), top-1/5 (VGGSound), EPIC verb/noun/action.

They run on the host over a whole evaluation set (gathered logits), not inside jit: AP needs a sort
over all examples of a class.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class, as sklearn's average_precision_score: sum_n (R_n - R_{n-1}) P_n
    over the distinct score thresholds (tied scores enter together). NaN when there is no positive."""
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets) > 0
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order]
    tp = np.cumsum(t)
    # Keep the last index of each run of equal scores: a threshold admits all ties at once.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, seen = tp[last], last + 1
    precision = tp / seen
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP over the classes that have a positive, per-class AP with NaN for the others)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [N, C]")
    ap = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean [N]: the true class index is among the k highest logits."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    k = min(k, logits.shape[-1])
    topk = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    return (topk == labels[:, None]).any(-1)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    return float(topk_correct(logits, labels, k).mean()) if len(labels) else float("nan")


def epic_accuracy(verb_logits, noun_logits, verbs, nouns) -> dict[str, float]:
    """EPIC-Kitchens top-1 verb, noun, and action (both right), plus top-5 of verb and noun."""
    v1, n1 = topk_correct(verb_logits, verbs, 1), topk_correct(noun_logits, nouns, 1)
    return {"verb_top1": float(v1.mean()), "noun_top1": float(n1.mean()),
            "action_top1": float((v1 & n1).mean()),
            "verb_top5": topk_accuracy(verb_logits, verbs, 5),
            "noun_top5": topk_accuracy(noun_logits, nouns, 5)}
