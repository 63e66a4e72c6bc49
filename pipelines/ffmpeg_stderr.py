"""Read what ffmpeg says on stderr: the input dump (so no ffprobe is needed) and, once a run is over,
everything the decoder judges it by, parsed once into a RunReport.

The input dump that `ffmpeg -i` prints on stderr is not a stable interface, so the parser is
tolerant: it reads Debian 12's ffmpeg 5.1 and imageio-ffmpeg's 7.x/9.x, and any field it cannot read
is None rather than an error. The decoder reads the same dump out of its own run, so a clip costs one
ffmpeg process, not a probe plus a decode: read_run parses a finished run's stderr once (the dump,
the first video frame's and audio sample's times that the decoder's showinfo probes log, ffmpeg's
last line, and why the run failed) and the decoder reads that record.
"""

from __future__ import annotations

import dataclasses
import os
import re

from pipelines.ffmpeg_run import DecodeError, FFmpegRun, last_error_line, run_ffmpeg
from pipelines.media_input import check_input, input_arg, starts_like_mp4


# ---------------------------------------------------------------------------------------------------
# Probing: parse the input dump of `ffmpeg -i`
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int | None  # coded size, before rotation
    height: int | None
    fps: float | None  # average frame rate ('fps'), else the base rate ('tbr')
    rotation: int  # degrees clockwise to display it (as the `rotate` tag means); 0, 90, 180 or 270
    sar: float  # sample (pixel) aspect ratio; 1.0 when unknown
    start: float | None  # stream start time in seconds, when ffmpeg prints it (7.x+; 5.1 does not)

    @property
    def display_size(self) -> tuple[int | None, int | None]:
        """(width, height) as shown, i.e. after rotation (ffmpeg autorotates when decoding)."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


@dataclasses.dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    sample_rate: int | None
    channels: int | None
    layout: str | None  # 'mono', 'stereo', '5.1(side)', ...
    start: float | None  # as for video: only where ffmpeg prints it


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about an input. Times are in seconds; `duration` counts from `start_time`
    (the container's first timestamp), which is also where our clip times count from."""

    format_name: str | None
    duration: float | None
    start_time: float | None
    video: VideoStreamInfo | None  # first video stream that is not an attached picture (cover art)
    audio: AudioStreamInfo | None  # first audio stream

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4,
             "quad(side)": 4, "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6,
             "6.0": 6, "6.0(front)": 6, "hexagonal": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7,
             "7.0": 7, "7.0(front)": 7, "7.1": 8, "7.1(wide)": 8, "7.1(wide-side)": 8,
             "7.1(top)": 8, "octagonal": 8, "downmix": 2, "22.2": 24}
_STREAM_RE = re.compile(r"^\s*Stream #(\d+):(\d+)\S*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_DURATION_RE = re.compile(r"^\s*Duration:\s*(N/A|(\d+):(\d+):(\d+(?:\.\d+)?))"
                          r"(?:,\s*start:\s*(-?\d+(?:\.\d+)?))?")
_SIZE_RE = re.compile(r"(?:^|[\s,])(\d{1,5})x(\d{1,5})(?=$|[\s,\[])")
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_SAR_RE = re.compile(r"\[SAR (\d+):(\d+) DAR")
_ROT_DISPLAYMATRIX_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_ROT_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$")
_STREAM_START_RE = re.compile(r",\s*start (-?\d+(?:\.\d+)?)")


def parse_info(stderr: str) -> MediaInfo | None:
    """Parse the first input's dump out of ffmpeg's stderr; None if there is no 'Input #0' dump.

    Tolerant by design: unknown lines are ignored and unreadable fields are None."""
    lines = stderr.replace("\r", "\n").splitlines()
    start_idx = next((i for i, l in enumerate(lines) if l.startswith("Input #0")), None)
    if start_idx is None:
        return None
    m = re.match(r"Input #0, (.*?), from ", lines[start_idx])
    format_name = m.group(1) if m else None
    # "Input #0, FMT, from 'PATH':" spans several lines when PATH holds newlines: the dump starts
    # after the line that closes the quote
    end_idx = next((i for i in range(start_idx, len(lines)) if lines[i].endswith("':")), start_idx)
    duration = start_time = None
    streams: list[dict] = []
    for line in lines[end_idx + 1:]:
        if line and not line[0].isspace():  # 'Stream mapping:', 'Output #0', '[in#0 ...]': dump over
            break
        if (dm := _DURATION_RE.match(line)) and duration is None:
            if dm.group(1) != "N/A":
                duration = int(dm.group(2)) * 3600 + int(dm.group(3)) * 60 + float(dm.group(4))
            if dm.group(5) is not None:
                start_time = float(dm.group(5))
            continue
        if sm := _STREAM_RE.match(line):
            if sm.group(1) != "0":
                continue
            streams.append({"kind": sm.group(3), "desc": sm.group(4), "rotation": None})
            continue
        if streams:  # side data and metadata of the last stream (rotation)
            if rm := _ROT_DISPLAYMATRIX_RE.search(line):
                streams[-1]["rotation"] = -float(rm.group(1))  # display matrix: counter-clockwise
            elif (tm := _ROT_TAG_RE.match(line)) and streams[-1]["rotation"] is None:
                streams[-1]["rotation"] = float(tm.group(1))  # legacy tag: clockwise
    video = audio = None
    for s in streams:
        if s["kind"] == "Video" and video is None and "(attached pic)" not in s["desc"]:
            video = _parse_video(s["desc"], s["rotation"])
        elif s["kind"] == "Audio" and audio is None:
            audio = _parse_audio(s["desc"])
    return MediaInfo(format_name=format_name, duration=duration, start_time=start_time,
                     video=video, audio=audio)


def _parse_video(desc: str, rotation_cw: float | None) -> VideoStreamInfo:
    codec = desc.split(None, 1)[0].rstrip(",") if desc.strip() else "unknown"
    size = _SIZE_RE.search(desc)
    rates = {kind: float(v) * (1000 if k else 1) for v, k, kind in _RATE_RE.findall(desc)}
    sar = _SAR_RE.search(desc)
    sar_v = int(sar.group(1)) / int(sar.group(2)) if sar and int(sar.group(2)) and int(sar.group(1)) else 1.0
    start = _STREAM_START_RE.search(desc)
    # clockwise degrees, as the legacy `rotate` tag and phones mean it (a portrait phone video: 90),
    # snapped to a multiple of 90
    rot = 0 if rotation_cw is None else int(round(rotation_cw / 90.0)) * 90 % 360
    return VideoStreamInfo(codec=codec, width=int(size.group(1)) if size else None,
                           height=int(size.group(2)) if size else None,
                           fps=rates.get("fps", rates.get("tbr")), rotation=rot, sar=sar_v,
                           start=float(start.group(1)) if start else None)


def _parse_audio(desc: str) -> AudioStreamInfo:
    codec = desc.split(None, 1)[0].rstrip(",") if desc.strip() else "unknown"
    parts = [p.strip() for p in re.split(r",\s*(?![^()]*\))", desc)]  # commas outside parentheses
    rate = next((int(p.split()[0]) for p in parts if re.fullmatch(r"\d+ Hz", p)), None)
    layout = channels = None
    for p in parts[2:] if rate is not None else parts[1:]:
        if p in _CHANNELS or re.fullmatch(r"\d+ channels.*", p) or re.fullmatch(r"\d+\.\d+(\(.*\))?", p):
            layout = p
            break
    if layout is not None:
        if layout in _CHANNELS:
            channels = _CHANNELS[layout]
        elif cm := re.match(r"(\d+) channels", layout):
            channels = int(cm.group(1))
        elif lm := re.match(r"(\d+)\.(\d+)", layout):
            channels = int(lm.group(1)) + int(lm.group(2))
    start = _STREAM_START_RE.search(desc)
    return AudioStreamInfo(codec=codec, sample_rate=rate, channels=channels, layout=layout,
                           start=float(start.group(1)) if start else None)


# ---------------------------------------------------------------------------------------------------
# A finished run: its stderr parsed once
# ---------------------------------------------------------------------------------------------------

# showinfo's line for frame 0, as every build since 4.x prints it ('[Parsed_showinfo_2 @ 0x..] n:   0
# pts:   1920 pts_time:0.0213333 ...'); 'ashowinfo' is the audio probe's filter, kept apart
_PTS_TIME = r"\]\s*n:\s*0\s+pts:\s*\S+\s+pts_time:\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
_FIRST_PTS_RE = re.compile(r"(?<![a-z])showinfo_\d+ @[^\]]*" + _PTS_TIME)
_FIRST_AUDIO_PTS_RE = re.compile(r"ashowinfo_\d+ @[^\]]*" + _PTS_TIME)


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a finished ffmpeg run said on stderr, parsed once (read_run) for the decoder to read."""

    info: MediaInfo | None  # the input dump; None when ffmpeg printed none
    # input time (s, relative to the seek point) of the first decoded video frame, from showinfo
    first_frame_time: float | None
    # time (s, relative to the clip start) of the first audio sample ffmpeg delivered, from the audio
    # graph's ashowinfo; > 0 when the audio stream starts after the clip start
    first_audio_time: float | None
    partial_file: bool  # the demuxer hit the end of a file cut short ("partial file")
    last_line: str  # ffmpeg's last meaningful line (last_error_line), for failure records
    failure: DecodeError | None  # why the run failed, with a stable reason; None when it decoded


def read_run(run: FFmpegRun, path: str) -> RunReport:
    """Parse a finished run's stderr once; `path` is how failure details name the input. The run
    failed unless ffmpeg exited 0, in time, and its dump shows a video stream."""
    err = run.stderr
    info = parse_info(err)
    last = last_error_line(err)
    first_frame, first_audio = _FIRST_PTS_RE.search(err), _FIRST_AUDIO_PTS_RE.search(err)
    failed = (run.returncode != 0 or run.aborted is not None or run.timed_out or info is None
              or info.video is None)
    return RunReport(info=info, first_frame_time=float(first_frame.group(1)) if first_frame else None,
                     first_audio_time=float(first_audio.group(1)) if first_audio else None,
                     partial_file="partial file" in err, last_line=last,
                     failure=_classify_failure(run, info, last, path) if failed else None)


def _classify_failure(run: FFmpegRun, info: MediaInfo | None, last: str, path: str) -> DecodeError:
    """Turn a failed ffmpeg run into a DecodeError with a stable reason and ffmpeg's last line."""
    detail = f"{path}: {last}" if last else f"{path}: ffmpeg exited with {run.returncode}"
    if run.aborted is not None:
        return run.aborted
    if run.timed_out:
        return DecodeError("timeout", f"{path}: ffmpeg still running after the timeout; last line: {last}")
    err = run.stderr
    if info is None:
        if "moov atom not found" in err and starts_like_mp4(path):
            return DecodeError("truncated", f"{path}: moov atom not found (an MP4 cut short, or still "
                                            f"being written); {last}")
        if "No such file or directory" in err:
            return DecodeError("missing_file", detail)
        if "Permission denied" in err:
            return DecodeError("unreadable", detail)
        if any(s in err for s in ("Invalid data found", "moov atom not found", "could not find codec",
                                  "End of file", "Unknown input format", "unspecified size")):
            return DecodeError("not_media", detail)
        return DecodeError("ffmpeg_error", detail)
    if info.video is None:
        return DecodeError("no_video_stream", f"{path}: the input has no video stream "
                                              f"({info.format_name}); {last}")
    return DecodeError("ffmpeg_error", detail)


def probe(path: str | os.PathLike, *, timeout: float = 30.0) -> MediaInfo:
    """Describe a media file (duration, video and audio streams) by parsing `ffmpeg -i`.

    Raises DecodeError (missing_file, empty_file, unreadable, not_media, timeout, ffmpeg_error)."""
    path = os.fspath(path)
    check_input(path)
    run = run_ffmpeg(["-i", input_arg(path)], timeout=timeout)  # exits 1: "no output file"
    report = read_run(run, path)
    if report.info is None or run.timed_out:
        raise report.failure
    return report.info
