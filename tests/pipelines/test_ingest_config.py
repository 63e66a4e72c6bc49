"""The job's flags are checked before any work: numeric ranges, unknown flags (the job's and Beam's),
unknown runners, empty manifests; each a one-line error naming the flag and the fix."""

from __future__ import annotations

import pytest

from pipelines.config import IngestConfig, IngestError, beam_options, output_folder_problem
from tools.cli import main


@pytest.mark.parametrize("field,value,match", [
    ("short_side", 0, "--short-side 0"), ("short_side", 255, "even"), ("timeout", 0, "--timeout 0"),
    ("min_seconds", 5.0, "--min-seconds 5"), ("max_pixels", 0, "--max-pixels"),
    ("shared_decode", -1.0, "--shared-decode"), ("shared_decode", float("nan"), "--shared-decode nan"),
    ("shared_decode", float("inf"), "--shared-decode inf"), ("timeout", float("inf"), "--timeout inf"),
    ("max_seconds", float("nan"), "--max-seconds nan"),
])
def test_numeric_flags_out_of_range_are_refused(field, value, match):
    with pytest.raises(IngestError, match=match):
        IngestConfig(output="out", **{field: value, **({"max_seconds": 4.0} if field == "min_seconds" else {})})


@pytest.mark.parametrize("flags,hint", [
    (["--fromat", "tfrecord"], "did you mean --format"),
    (["--num_shards=5"], "did you mean --num-shards"),
    (["--direct_num_worker=2"], "did you mean --direct_num_workers"),
])
def test_unknown_flags_are_refused_with_the_closest_known_name(flags, hint):
    with pytest.raises(IngestError, match=f"unknown flag {flags[0].split('=')[0]}; {hint}"):
        beam_options(flags, "out")


def test_beam_flags_that_beam_knows_pass_and_unknown_runners_do_not():
    assert beam_options(["--direct_num_workers=1"], "out")[1] == "FnApiRunner"
    with pytest.raises(IngestError, match="--runner=Bogus: unknown runner; use one of"):
        beam_options(["--runner=Bogus"], "out")


def test_cli_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("path,start,end,labels\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("path,start,end,labels\n/data/d1/clip.mp4,0,1,a\n/data/d2/clip.mp4,0,1,a\n")
    cases = [
        (["--manifest", str(empty)], "the manifest has no rows"),
        (["--manifest", str(dup)], "--video-root /data with d1/clip.mp4 and d2/clip.mp4"),
        (["--manifest", str(empty), "--fromat", "tfrecord"], "did you mean --format"),
        (["--manifest", str(empty), "--runner=Bogus"], "unknown runner"),
        (["--manifest", str(empty), "--timeout", "0"], "--timeout 0"),
    ]
    for args, message in cases:
        assert main(["ingest", "--output", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_an_output_that_can_not_hold_the_dataset_is_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(IngestError, match=r"--output .*afile: is a file, not a folder"):
        beam_options([], str(afile))
    with pytest.raises(IngestError, match=r"--output .*afile/out: lies under .*afile, which is a file"):
        beam_options([], str(afile / "out"))
    assert output_folder_problem(str(tmp_path / "new" / "out")) is None  # made when the job starts
    assert output_folder_problem("gs://bucket/out") is None
