"""pipelines.ffmpeg_run: locating ffmpeg and running it safely."""

import pickle
import time

from pipelines import ffmpeg_run
from pipelines.ffmpeg_run import DecodeError, ExtraOutput, run_ffmpeg
from pipelines.ffmpeg_stderr import parse_info


# --- locating ---------------------------------------------------------------------------------------

def test_ffmpeg_exe_prefers_path_then_imageio(tmp_path, monkeypatch):
    import imageio_ffmpeg

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ffmpeg").symlink_to(bundled)
    try:
        ffmpeg_run.ffmpeg_exe.cache_clear()
        monkeypatch.setenv("PATH", str(fake_bin))
        assert ffmpeg_run.ffmpeg_exe() == str(fake_bin / "ffmpeg")
        ffmpeg_run.ffmpeg_exe.cache_clear()
        monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
        assert ffmpeg_run.ffmpeg_exe() == bundled
    finally:
        ffmpeg_run.ffmpeg_exe.cache_clear()


def test_version_is_read():
    assert ffmpeg_run.ffmpeg_version() != "unknown"
    assert ffmpeg_run.ffmpeg_major_version() >= 4 or ffmpeg_run.ffmpeg_version().startswith("N-")


# --- running ------------------------------------------------------------------------------------------

def test_run_collects_stdout_and_extra_pipe_concurrently():
    # both outputs are far bigger than a pipe buffer: reading them one after the other would deadlock
    run = run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2",
                      "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2",
                      "-map", "0:v", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
                      "-map", "1:a", "-f", "f32le", ExtraOutput(0)], timeout=60)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout) == 50 * 320 * 240 * 3
    assert len(run.extra) == 1 and len(run.extra[0]) == 2 * 16000 * 4
    assert "Input #0" in run.stderr


def test_run_kills_on_timeout():
    t0 = time.monotonic()
    run = run_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc", "-f", "null", "-"], timeout=0.5)
    assert run.timed_out and run.returncode is None
    assert time.monotonic() - t0 < 10


def test_header_check_aborts_early():
    def refuse(stderr):
        info = parse_info(stderr)
        raise DecodeError("too_large", f"{info.video.width}x{info.video.height}")

    run = run_ffmpeg(["-re", "-f", "lavfi", "-i", "testsrc=size=320x240", "-f", "null", "-"],
                     timeout=30, header_check=refuse)
    assert run.aborted is not None and run.aborted.reason == "too_large"
    assert run.aborted.detail == "320x240" and run.wall_s < 10


def test_decode_error_pickles():
    e = pickle.loads(pickle.dumps(DecodeError("timeout", "x.mp4: slow")))
    assert (e.reason, e.detail) == ("timeout", "x.mp4: slow")


def test_last_error_line_skips_progress():
    err = "Input #0...\n[mov @ 0x1] moov atom not found\nframe=  10 fps=0.0 q=0.0 size=N/A\n"
    assert ffmpeg_run.last_error_line(err) == "[mov @ 0x1] moov atom not found"

