"""Metrics against sklearn and hand-worked cases."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mbt.metrics import average_precision, epic_accuracy, mean_average_precision, topk_accuracy


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random(200) < 0.2
    scores = np.round(rng.random(200) + targets * 0.3, 1)  # rounded: many ties
    assert average_precision(scores, targets) == pytest.approx(average_precision_score(targets, scores))


def test_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.1, 0.3, 0.6]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    m, per_class = mean_average_precision(scores, targets)
    assert m == 1.0 and np.isnan(per_class[2])


def test_topk_and_epic_action():
    logits = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [5.0, 0.0, 1.0]])
    labels = np.array([0, 1, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(1.0)
    r = epic_accuracy(logits, logits, labels, np.array([0, 2, 0]))
    assert r["verb_top1"] == pytest.approx(1 / 3) and r["noun_top1"] == pytest.approx(1.0)
    assert r["action_top1"] == pytest.approx(1 / 3)
