"""Decode one clip [start, end) of a video into 25 fps JPEG frames and 16 kHz mono float32 audio.

One ffmpeg process per clip produces both streams: JPEGs straight out of ffmpeg's mjpeg encoder on
stdout (no decode -> numpy -> encode round trip in Python), the audio as raw float32 on a second
pipe, and on stderr the input dump that tells us the source's duration, streams and rotation (no
separate probe). Measured on this 2-core machine, 720p h264 + 5.1 AAC, one thread per clip: one
process with two outputs costs ~5-7% less CPU than a video process plus an audio process (the file
is opened, probed, seeked and demuxed once), and decode_clip costs ~2-4% more than bare ffmpeg
running the same arguments (`decode_args`), mostly splitting the JPEG stream.

The timeline (DESIGN.md, "One timeline"): times count from the container's first timestamp (what
`ffmpeg -ss` means). Frame i is the source frame on screen at start + i/25 s: the fps filter rounds
input timestamps *up* to the 1/25 s grid and keeps, for each grid point, the last frame at or before
it. For that to hold at frame 0 too we seek with `-noaccurate_seek` (ffmpeg's accurate seek drops the
frame that started just before `start` and is still on screen) and the filters drop the pre-roll
themselves. Audio sample k is at start + k/16000 s: atrim cuts the pre-roll, aresample's first_pts=0
pads a late-starting audio stream with silence. Input seeking lands on the keyframe before `start` in
indexed containers (MP4/MOV, MKV), so clip 500 of an hour-long EPIC video does not decode from the
file's start; containers without an index (MPEG-TS) can land after the keyframe needed, which a
one-frame showinfo probe detects, and then the clip is decoded from the file start instead
(`decoded_from_start`). A clip of d seconds has exactly round(25 d) frames and round(16000 d)
samples (halves up): ffmpeg's own counts differ by a frame or a few hundred samples across sources
and builds, so we cap and pad (repeat the last frame, append silence) and record both.

Builds differ in what they print (Debian 12's 5.1 and imageio-ffmpeg's 9.x both must work): 5.1's
input dump has no per-stream start times, so what decode_clip records about a late-starting stream
comes from the run itself (the first video frame's and first audio sample's times, logged by
one-frame showinfo/ashowinfo branches), never from the dump.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from pipelines.decode_args import SAMPLE_RATE, decode_args
from pipelines.ffmpeg_run import DecodeError, ffmpeg_version, run_ffmpeg
from pipelines.ffmpeg_stderr import RunReport, parse_info, read_run
from pipelines.media_input import check_input, local_copy, needs_local_copy
from shards.format.jpeg import jpeg_size, split_jpegs
from shards.format.schema import FPS

__all__ = ["DecodeError", "DecodedClip", "decode_clip", "slice_clip", "FPS", "SAMPLE_RATE"]

_TRUNCATION_SLACK_FRAMES = 2  # a video this many frames short of a "partial file" is truncated
_ONE_FRAME = 0.5 / FPS  # a clip shorter than half a frame has round(25 d) = 0 frames: too short always


def _no_frame(duration: float) -> str:
    """What a too_short message adds when min_seconds is not what refused the clip."""
    return f" (under half a frame, {_ONE_FRAME:g} s, it has no frame at all)" if duration < _ONE_FRAME else ""


def round_half_up(x: float) -> int:
    """round() as people mean it (2.5 -> 3), robust to float noise in end - start."""
    return int(math.floor(x + 0.5 + 1e-9))


@dataclasses.dataclass
class DecodedClip:
    """One decoded clip: len(frames) == round(25 * duration), len(audio) == round(16000 * duration)."""

    frames: list[bytes]  # JPEG per frame, 25 fps, short side resized, even dimensions
    audio: np.ndarray  # float32 [round(16000 * duration)], mono; zeros when has_audio is False
    has_audio: bool
    start: float  # seconds from the container start
    end: float  # the real end: requested end, or the source end if that came first
    requested_end: float | None  # as asked (None = to the end of the source)
    source_duration: float | None  # container duration as ffmpeg reports it (None if unknown)
    width: int  # of the JPEG frames (after rotation and resize)
    height: int
    source_width: int | None  # as displayed, i.e. after rotation
    source_height: int | None
    rotation: int  # degrees clockwise the source asks to be rotated for display (already applied)
    source_fps: float | None
    frames_padded: int  # frames that repeat a neighbour because the video started late / ended early
    frames_dropped: int  # frames ffmpeg gave beyond round(25 * duration)
    audio_padded: int  # zero samples added (audio started late / ended early)
    audio_dropped: int  # samples ffmpeg gave beyond round(16000 * duration)
    ffmpeg_version: str
    decoded_from_start: bool = False  # input seeking missed (e.g. MPEG-TS): decoded from the file start
    requested_start: float | None = None  # sliced from a shared decode: the start asked for (`start` is snapped)
    shared_span: tuple[float, float] | None = None  # sliced from one decode of this span of the source

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def shortened(self) -> bool:
        """The requested end was past the end of the source, so the clip ends earlier."""
        return self.requested_end is not None and self.end < self.requested_end

    @property
    def num_mel_rows(self) -> int:
        """round(100 * duration): the spectrogram rows of this clip (== log_mel's T for `audio`)."""
        return round_half_up(100 * self.duration)

    def meta(self) -> dict[str, Any]:
        """The json-able facts a sample's meta records about its decoding."""
        return {
            "start": self.start, "end": self.end, "requested_end": self.requested_end,
            "duration": self.duration, "shortened": self.shortened,
            "source_duration": self.source_duration, "fps": FPS, "num_frames": len(self.frames),
            "sample_rate": SAMPLE_RATE, "num_samples": int(self.audio.shape[0]),
            "has_audio": self.has_audio, "width": self.width, "height": self.height,
            "source_width": self.source_width, "source_height": self.source_height,
            "rotation": self.rotation, "source_fps": self.source_fps,
            "frames_padded": self.frames_padded, "frames_dropped": self.frames_dropped,
            "audio_padded": self.audio_padded, "audio_dropped": self.audio_dropped,
            "ffmpeg_version": self.ffmpeg_version, "decoded_from_start": self.decoded_from_start,
            **({"requested_start": self.requested_start, "shared_decode": list(self.shared_span)}
               if self.shared_span is not None else {}),
        }

# ---------------------------------------------------------------------------------------------------
# Decoding a clip
# ---------------------------------------------------------------------------------------------------

def _header_check(path: str, start: float, end: float | None, max_seconds: float, max_pixels: int):
    """Refuse early, as soon as ffmpeg has printed the input dump (before decoding the bulk)."""
    def check(stderr: str) -> None:
        info = parse_info(stderr)
        if info is None:
            return
        if info.video is None:
            raise DecodeError("no_video_stream", f"{path}: no video stream ({info.format_name})")
        w, h = info.video.width, info.video.height
        if w and h and w * h > max_pixels:
            raise DecodeError("too_large", f"{path}: {w}x{h} video is over the limit of "
                                           f"{max_pixels} pixels (max_pixels)")
        if info.duration is not None:
            if start >= info.duration:
                raise DecodeError("start_past_end", f"{path}: clip starts at {start:.3f} s but the "
                                                    f"source is {info.duration:.3f} s long")
            if end is None and info.duration - start > max_seconds:
                raise DecodeError("too_long", f"{path}: clip from {start:.3f} s to the end is "
                                              f"{info.duration - start:.3f} s, over max_seconds="
                                              f"{max_seconds}")
    return check


def decode_clip(path: str | os.PathLike, start: float = 0.0, end: float | None = None, *,
                short_side: int = 256, jpeg_quality: int = 3, max_seconds: float = 600.0,
                max_pixels: int = 7680 * 4320, timeout: float = 300.0, min_seconds: float = 0.1,
                threads: int = 1) -> DecodedClip:
    """Decode [start, end) seconds of `path` (end=None: to the end of the source).

    Frames: 25 fps, frame i = the source frame on screen at start + i/25 s (rotation applied), short
    side resized to `short_side` keeping the display aspect (even dimensions), JPEG at ffmpeg's
    `-q:v jpeg_quality` (2 = best .. 31 = worst). Audio: 16 kHz mono float32 (any channel layout
    downmixed); a source without audio gives silence and has_audio=False. An end past the source end
    shortens the clip (recorded); `threads` is ffmpeg's decoder/filter/encoder threads per clip (1 suits
    a job that already runs one clip per core). `path` may be a URL: ffmpeg reads http(s) itself,
    other schemes (gs://, s3://) are copied to a temporary local file through shards.format.storage.

    Raises DecodeError with reason missing_file, empty_file, unreadable, not_media, truncated,
    no_video_stream, no_video_frames, bad_range, start_past_end, too_short, too_long, too_large,
    timeout or ffmpeg_error.
    """
    path = os.fspath(path)
    if not 2 <= int(jpeg_quality) <= 31:
        raise ValueError(f"jpeg_quality is ffmpeg's mjpeg -q:v, 2 (best) .. 31 (worst); got {jpeg_quality}")
    if short_side < 2 or short_side % 2:
        raise ValueError(f"short_side must be a positive even number of pixels; got {short_side}")
    if not (start >= 0 and math.isfinite(start)) or (end is not None and not end > start):
        raise DecodeError("bad_range", f"{path}: clip [{start}, {end}) is empty or negative")
    if end is not None and end - start > max_seconds:
        raise DecodeError("too_long", f"{path}: clip of {end - start:.3f} s is over max_seconds={max_seconds}")
    if end is not None and end - start < max(min_seconds, _ONE_FRAME):  # checked before ffmpeg runs
        raise DecodeError("too_short", f"{path}: clip [{start:.3f}, {end:.3f}) is {end - start:.4f} s, "
                                       f"under min_seconds={min_seconds}" + _no_frame(end - start))
    if needs_local_copy(path):  # gs://, s3://: ffmpeg can't open it, shards.format.storage can
        with local_copy(path) as local:
            try:
                return decode_clip(local, start, end, short_side=short_side, jpeg_quality=jpeg_quality,
                                   max_seconds=max_seconds, max_pixels=max_pixels, timeout=timeout,
                                   min_seconds=min_seconds, threads=threads)
            except DecodeError as e:  # name the source, not the temporary copy
                raise DecodeError(e.reason, e.detail.replace(local, path)) from None
    check_input(path)

    # ffmpeg stops after the requested length; to the end of the file, after max_seconds (+1 frame)
    span = (end - start) if end is not None else max_seconds + 1.0 / FPS
    max_frames, max_samples = round_half_up(FPS * span), round_half_up(SAMPLE_RATE * span)
    check = _header_check(path, start, end, max_seconds, max_pixels)
    with_audio, seek = True, start > 0
    remaining = timeout
    while True:
        args = decode_args(path, start, max_frames, max_samples, seek=seek, short_side=short_side,
                           jpeg_quality=jpeg_quality, threads=threads, with_audio=with_audio)
        run = run_ffmpeg(args, timeout=max(remaining, 0.001), header_check=check)
        remaining -= run.wall_s
        report = read_run(run, path)  # the run's stderr, parsed once
        info = report.info
        if run.aborted is not None or run.timed_out or info is None or info.video is None:
            raise report.failure
        if run.returncode != 0 and with_audio and info.audio is None:
            with_audio = False  # no audio stream: ffmpeg refuses an empty output, so video only
            continue
        if (run.returncode != 0 and with_audio and report.first_audio_time is None
                and report.first_frame_time is not None):
            # an audio stream that ended before the clip (trailers often end in silence-less video):
            # no audio packet reached the output, which ffmpeg refuses; the clip is video only, silent
            with_audio = False
            continue
        if seek and _seek_missed(report, start):
            # the demuxer landed after the keyframe we needed (MPEG-TS and other formats without an
            # index seek by timestamp, not to a keyframe): decode from the file start instead.
            # (With no frame at all, ffmpeg also failed: mjpeg can't open without a first frame.)
            seek = False
            continue
        if run.returncode != 0:
            if report.first_frame_time is None and start < (info.duration or math.inf):
                raise DecodeError("no_video_frames", f"{path}: no video frame decoded from "
                                                     f"{start:.3f} s on; {report.last_line}")
            raise report.failure
        break
    clip = _assemble(path, start, end, run, report, with_audio, min_seconds, max_seconds,
                     offset=0.0 if seek else start)
    clip.decoded_from_start = start > 0 and not seek
    return clip


def _seek_missed(report: RunReport, start: float) -> bool:
    """True when the first decoded frame came after `start` although the video stream had begun."""
    first, info = report.first_frame_time, report.info
    # a video stream that starts after `start` legitimately has its first frame later. Only builds
    # that print per-stream start times (7.x+, not Debian 12's 5.1) tell us; without it such a clip
    # counts as missed and is decoded from the file start, which gives the same frames, slower.
    lead = 0.0
    if info is not None and info.video is not None and info.video.start is not None:
        lead = max(0.0, info.video.start - (info.start_time or 0.0) - start)
    if first is None:  # no frame at all: missed, unless the clip is past the end
        return info is None or info.duration is None or start < info.duration
    return first > lead + 1e-3


def _assemble(path: str, start: float, end: float | None, run, report: RunReport,
              has_audio: bool, min_seconds: float, max_seconds: float, offset: float) -> DecodedClip:
    """Cap and pad ffmpeg's output to the clip's exact length, recording what was changed. `offset`
    is the clip start in the run's input time (0 after a seek, `start` when decoded from the file
    start)."""
    frames = split_jpegs(run.stdout)
    raw = run.extra[0] if has_audio else b""
    audio = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4").astype(np.float32)  # a writable copy
    info = report.info
    src_dur = info.duration if info is not None else None
    video = info.video if info is not None else None

    if not frames:
        if src_dur is not None and start >= src_dur:
            raise DecodeError("start_past_end", f"{path}: clip starts at {start:.3f} s but the source "
                                                f"is {src_dur:.3f} s long")
        raise DecodeError("no_video_frames", f"{path}: ffmpeg decoded no video frames from "
                                             f"{start:.3f} s; {report.last_line}")
    # the real end: the requested one, cut at the source's end (unknown duration: the video's end)
    real_end = end if end is not None else (src_dur if src_dur is not None else start + len(frames) / FPS)
    if src_dur is not None:
        real_end = min(real_end, src_dur)
    elif end is not None:
        real_end = min(real_end, start + len(frames) / FPS)
    duration = real_end - start
    if duration < max(min_seconds, _ONE_FRAME):
        raise DecodeError("too_short", f"{path}: clip [{start:.3f}, {real_end:.3f}) is {duration:.3f} s "
                                       f"(requested end {end}, source {src_dur} s), under "
                                       f"min_seconds={min_seconds}" + _no_frame(duration))
    if duration > max_seconds + 1e-6:
        raise DecodeError("too_long", f"{path}: clip of {duration:.3f} s is over max_seconds={max_seconds}")
    n_frames, n_samples = round_half_up(FPS * duration), round_half_up(SAMPLE_RATE * duration)
    if report.partial_file and len(frames) < n_frames - _TRUNCATION_SLACK_FRAMES:
        raise DecodeError("truncated", f"{path}: the file ends early (ffmpeg: partial file); "
                                       f"{len(frames)} of {n_frames} frames decoded")

    # a stream that starts after the clip start was padded by ffmpeg (first frame repeated, silence
    # in front). The run itself says by how much: the first video frame's and the first audio
    # sample's times (showinfo/ashowinfo), on every build (the input dump's per-stream start times
    # are missing on some, e.g. Debian 12's 5.1)
    lead_frames = lead_samples = 0
    if (t := report.first_frame_time) is not None:
        lead_frames = min(n_frames, max(0, math.ceil((t - offset) * FPS - 1e-6)))
    if has_audio and (t := report.first_audio_time) is not None:
        lead_samples = min(n_samples, max(0, round_half_up(t * SAMPLE_RATE)))

    frames_dropped = max(0, len(frames) - n_frames)
    frames_padded = max(0, n_frames - len(frames))
    frames = frames[:n_frames] + [frames[-1]] * frames_padded
    if has_audio:
        audio_dropped = max(0, audio.shape[0] - n_samples)
        audio_padded = max(0, n_samples - audio.shape[0])
        if audio_padded:
            audio = np.concatenate([audio, np.zeros(audio_padded, np.float32)])
        audio = audio[:n_samples]
    else:
        audio_dropped = audio_padded = lead_samples = 0
        audio = np.zeros(n_samples, np.float32)
    height, width = jpeg_size(frames[0])
    sw, sh = video.display_size if video is not None else (None, None)
    return DecodedClip(
        frames=frames, audio=audio, has_audio=has_audio, start=float(start), end=float(real_end),
        requested_end=None if end is None else float(end), source_duration=src_dur,
        width=width, height=height, source_width=sw, source_height=sh,
        rotation=video.rotation if video is not None else 0,
        source_fps=video.fps if video is not None else None,
        frames_padded=frames_padded + lead_frames, frames_dropped=frames_dropped,
        audio_padded=audio_padded + lead_samples, audio_dropped=audio_dropped,
        ffmpeg_version=ffmpeg_version())


def slice_clip(run: DecodedClip, start: float, end: float, min_seconds: float = 0.1) -> DecodedClip:
    """Clip [start, end) cut out of `run`, a decode of a longer span of the same source: the start
    snapped to the run's 25 fps grid (at most 20 ms earlier or later; frame i then shows
    start' + i/25 and audio sample k is start' + k/16000 exactly, 640 samples a frame), the length
    kept, cut where the run (the source) ends. Raises DecodeError too_short like decode_clip."""
    k0 = max(0, round_half_up((start - run.start) * FPS))
    snapped = run.start + k0 / FPS
    duration = min(end - start, run.end - snapped)  # the length asked for, unless the source ends first
    real_end = snapped + duration
    if duration < max(min_seconds, _ONE_FRAME):
        raise DecodeError("too_short", f"clip [{snapped:.3f}, {real_end:.3f}) is {duration:.3f} s "
                                       f"(requested [{start}, {end}), source ends at {run.end:.3f} s), "
                                       f"under min_seconds={min_seconds}" + _no_frame(duration))
    n_frames, n_samples = round_half_up(FPS * duration), round_half_up(SAMPLE_RATE * duration)
    frames = run.frames[k0:k0 + n_frames]
    padded = n_frames - len(frames)
    frames += [frames[-1]] * padded
    a0 = k0 * (SAMPLE_RATE // FPS)
    audio = run.audio[a0:a0 + n_samples]
    audio_padded = n_samples - audio.shape[0]
    if audio_padded:
        audio = np.concatenate([audio, np.zeros(audio_padded, np.float32)])
    return dataclasses.replace(
        run, frames=frames, audio=audio.copy(), start=snapped, end=real_end, requested_end=end,
        frames_padded=padded, frames_dropped=0, audio_padded=audio_padded, audio_dropped=0,
        decoded_from_start=False, requested_start=start, shared_span=(run.start, run.end))
