"""`mbt report`: per-class AP table and plot, attention overlays, summary — on a run trained for 2 steps.

The multilabel and verb_noun heads are checked on predictions made up here (write_tables), which is
everything the report does differently for them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mbt.config import ModelConfig
from mbt.report import per_class_rows, plot_per_class_ap, unnormalize, write_report, write_tables
from mbt.train_config import TrainConfig
from shards.input import InputConfig

CLASSES = ["red_low", "red_high", "blue_low", "blue_high"]
# A 2-layer model on 2 frames of 32 px and 0.64 s of spectrogram: compiles in seconds.
TINY = ["model.depth=2", "model.width=32", "model.num_heads=2", "model.mlp_dim=64", "model.num_frames=2",
        "model.image_size=32", "model.spectrogram_frames=64", "model.fusion_layer=1", "input.num_frames=2",
        "input.crop_size=32", "input.clip_seconds=0.64", "input.batch_size=4", "input.shuffle_buffer=4",
        "input.time_mask_max=10", "input.freq_mask_max=8", "optim.steps=2", "run.log_every=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_clip, make_dataset) -> tuple[str, str]:
    """(run directory, dataset): 8 clips of 4 classes, one label each; the tiny model trained 2 steps."""
    from mbt.train import train
    from mbt.train_config import get_config

    root = tmp_path_factory.mktemp("report")
    clips = [make_clip(f"k{i}", labels=(i % 4,), seed=i) for i in range(8)]
    data = make_dataset(root / "data", clips, num_shards=1, formats=("webdataset",), classes=CLASSES)
    workdir = str(root / "run")
    train(get_config("tiny", TINY), data, workdir, progress=False)
    return workdir, data


@pytest.mark.slow  # the fixture trains (compiles) a model
def test_report_writes_one_row_per_class_and_valid_pngs(run, tmp_path):
    workdir, data = run
    summary = write_report(workdir, data, "train", out=str(tmp_path), clips=2)
    with open(tmp_path / "per_class_ap.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == CLASSES
    assert list(rows[0]) == ["class", "ap_fused", "ap_spectrogram_head", "ap_rgb_head", "positives"]
    assert [int(r["positives"]) for r in rows] == [2, 2, 2, 2]
    for r in rows:
        assert all(0.0 < float(r[k]) <= 1.0 for k in ("ap_fused", "ap_spectrogram_head", "ap_rgb_head"))

    attention = sorted(tmp_path.glob("attention_*.png"))
    assert len(attention) == 2
    for png in [tmp_path / "per_class_ap.png", *attention]:
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["step"] == 2 and saved["clips"] == 8 and saved["head"] == "multiclass"
    assert set(saved["metrics"]) == {"fused", "rgb", "spectrogram"} and "top1" in saved["metrics"]["fused"]
    assert sorted(saved["files"]) == sorted(["per_class_ap.csv", "per_class_ap.png"] + [p.name for p in attention])
    assert summary["out"] == str(tmp_path)


@pytest.mark.slow
def test_the_command_line_writes_into_the_run(run, capsys):
    from tools.cli import main

    workdir, data = run
    assert main(["report", workdir, "--data", data, "--split", "train", "--clips", "2"]) == 0
    out = capsys.readouterr().out
    assert "report: step 2, 8 clips of train" in out and "fused" in out
    assert (Path(workdir) / "report" / "per_class_ap.csv").exists()


def _cfg(head: str, num_classes: int = 3) -> TrainConfig:
    labels = {"multilabel": "multi_hot", "multiclass": "class_index", "verb_noun": "verb_noun"}[head]
    return TrainConfig(model=ModelConfig(head=head, num_classes=num_classes), input=InputConfig(labels=labels))


def test_multilabel_counts_positives_per_class_and_skips_classes_without(tmp_path):
    rs = np.random.default_rng(0)
    labels = [np.array(v, np.float32) for v in ([1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0])]
    logits = {m: rs.normal(size=(4, 3)) for m in ("fused", "rgb", "spectrogram")}
    pred = {"keys": list("abcd"), "logits": logits, "labels": labels, "windows": 1}
    summary = write_tables(_cfg("multilabel"), pred, str(tmp_path), classes=["dog", "bell", "rain"])
    with open(tmp_path / "per_class_ap.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["class"], r["positives"]) for r in rows] == [("dog", "3"), ("bell", "2"), ("rain", "0")]
    assert rows[2]["ap_fused"] == ""  # no positive: no AP (NaN), an empty cell
    assert "mAP" in summary["metrics"]["fused"]


def test_verb_noun_reports_verb_noun_action_accuracy_without_a_table(tmp_path):
    rs = np.random.default_rng(0)
    cfg = TrainConfig(model=ModelConfig(head="verb_noun", num_verb_classes=3, num_noun_classes=5),
                      input=InputConfig(labels="verb_noun"))
    logits = {m: {"verb": rs.normal(size=(4, 3)), "noun": rs.normal(size=(4, 5))}
              for m in ("fused", "rgb", "spectrogram")}
    pred = {"keys": list("abcd"), "logits": logits, "windows": 1,
            "labels": [{"verb": i % 3, "noun": i % 5} for i in range(4)]}
    summary = write_tables(cfg, pred, str(tmp_path))
    assert summary["files"] == [] and not list(tmp_path.iterdir())
    assert {"verb_top1", "noun_top1", "action_top1"} <= set(summary["metrics"]["fused"])


def test_plot_with_many_classes_shows_the_largest_fusion_gains(tmp_path):
    rs = np.random.default_rng(1)
    n = 100
    ap = {m: rs.uniform(size=n) for m in ("fused", "rgb", "spectrogram")}
    rows = per_class_rows([f"c{i}" for i in range(n)], ap, np.ones(n))
    path = plot_per_class_ap(rows, str(tmp_path / "ap.png"), max_classes=20)
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_unnormalize_inverts_the_input_normalisation():
    from shards.input.augment import normalize_rgb

    frames = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    for how in ("imagenet", "unit", "symmetric"):
        np.testing.assert_array_equal(unnormalize(normalize_rgb(frames, normalization=how), how), frames)


@pytest.mark.slow
def test_unimodal_runs_give_the_papers_comparison(run, tmp_path):
    """--audio-run / --video-run: per-class AP of models trained on one modality beside the fused one,
    and the classes that gain most from fusion over each; a fused run as --audio-run is refused."""
    from mbt.report import ReportError
    from mbt.train import train
    from mbt.train_config import get_config

    workdir, data = run
    runs = {}
    for modality in ("spectrogram", "rgb"):
        runs[modality] = str(tmp_path / modality)
        train(get_config("tiny", [*TINY, f"model.modalities={modality}"]), data, runs[modality], progress=False)
    out = tmp_path / "report"
    summary = write_report(workdir, data, "train", out=str(out), clips=1, audio_run=runs["spectrogram"],
                           video_run=runs["rgb"])
    rows = list(csv.DictReader(open(out / "per_class_ap.csv")))
    assert list(rows[0]) == ["class", "ap_fused", "ap_spectrogram_head", "ap_rgb_head", "ap_audio_model",
                             "ap_video_model", "positives"]
    assert all(0.0 < float(r["ap_audio_model"]) <= 1.0 and 0.0 < float(r["ap_video_model"]) <= 1.0 for r in rows)
    gains = summary["fusion_gain"]
    assert set(gains) == {"over_audio_model", "over_video_model"}
    for over, col in (("over_audio_model", "ap_audio_model"), ("over_video_model", "ap_video_model")):
        best = max(rows, key=lambda r: float(r["ap_fused"]) - float(r[col]))
        assert gains[over][0][0] == best["class"]
    with pytest.raises(ReportError, match="--audio-run .* modalities"):
        write_report(workdir, data, "train", out=str(tmp_path / "bad"), clips=0, audio_run=workdir)
