"""Find ffmpeg, run it safely, and read what it says about an input (no ffprobe needed).

ffmpeg comes from PATH when there is one, else from the static binary that imageio-ffmpeg ships (no
root needed, works on Dataflow workers too). It is always run with an argument list, never a shell,
with a timeout, and with input paths passed as `file:/absolute/path` so that a name beginning with
'-' (or containing ':') can't be read as an option or a protocol.

Probing parses the input dump that `ffmpeg -i` prints on stderr. That dump is not a stable interface,
so the parser is tolerant: it reads Debian 12's ffmpeg 5.1 and imageio-ffmpeg's 7.x/9.x, and any
field it cannot read is None rather than an error. The decoder reuses the same parser on the stderr
of its own run, so a clip costs one ffmpeg process, not a probe plus a decode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Iterator, Sequence

from shards.format.storage import is_url


class DecodeError(Exception):
    """A clip could not be decoded. `reason` is a short stable slug (a counter name), `detail` says why,
    including ffmpeg's last stderr line when ffmpeg was involved.

    Reasons: missing_file, empty_file, unreadable, not_media, no_video_stream, no_video_frames,
    bad_range, start_past_end, too_short, too_long, too_large, truncated, timeout, ffmpeg_error.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable, so a Beam worker can send it back
        return (DecodeError, (self.reason, self.detail))


# ---------------------------------------------------------------------------------------------------
# Locating ffmpeg
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: `ffmpeg` on PATH when present, else imageio-ffmpeg's static build."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # only needed where the system has no ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=None)
def ffmpeg_version() -> str:
    """The version string of ffmpeg_exe(), e.g. '5.1.6-0+deb12u1' or 'n9.0.2-17-g2a571b6068-20260930'."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=30, check=False)
    m = re.search(r"ffmpeg version (\S+)", out.stdout.decode("utf-8", "replace"))
    return m.group(1) if m else "unknown"


def ffmpeg_major_version() -> int:
    """Major version number (e.g. 5, 7, 9); 0 when it can't be read (git builds say 'N-xxxxx')."""
    m = re.match(r"n?(\d+)\.", ffmpeg_version())
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------

def input_arg(path: str | os.PathLike) -> str:
    """How to name `path` on ffmpeg's command line: `file:` + absolute path for local files (so '-x.mp4'
    is never an option and 'a:b.mp4' never a protocol), URLs unchanged."""
    path = os.fspath(path)
    if is_url(path):
        return path
    return "file:" + os.path.abspath(path)


# URL schemes ffmpeg opens itself (and seeks in, over HTTP range requests); any other (gs://, s3://,
# hdfs://) is read through Beam's FileSystems into a local copy first
FFMPEG_SCHEMES = ("http", "https", "file")


def needs_local_copy(path: str | os.PathLike) -> bool:
    """True for a URL ffmpeg can't open itself, e.g. a video in a bucket that a Dataflow worker reads."""
    path = os.fspath(path)
    return is_url(path) and path.split("://", 1)[0].lower() not in FFMPEG_SCHEMES


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Copy `path` (gs://, s3://, any scheme Beam's FileSystems knows) to a temporary local file for
    the duration of the `with`; DecodeError missing_file / unreadable when it can't be read.

    One copy per clip: right for clip-sized sources (AudioSet, VGGSound); many clips of one long
    video (EPIC) each fetch it whole, so stage such corpora on the workers' disk or an HTTP(S) URL."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        exists = FileSystems.exists(path)
    except Exception as e:  # noqa: BLE001 - no file system for the scheme (e.g. gs:// without GCP extras)
        raise DecodeError("unreadable", f"{path}: {type(e).__name__}: {e}".splitlines()[0][:500]) from None
    if not exists:
        raise DecodeError("missing_file", f"{path}: no such object")
    fd, tmp = tempfile.mkstemp(prefix="mbt-src-", suffix=os.path.splitext(path)[1][:16])
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            except Exception as e:  # noqa: BLE001 - any storage error is this clip's failure
                raise DecodeError("unreadable", f"{path}: {type(e).__name__}: {e}".splitlines()[0][:500]) \
                    from None
        yield tmp
    finally:
        os.unlink(tmp)


def check_input(path: str | os.PathLike) -> None:
    """Raise DecodeError (missing_file, empty_file, unreadable, not_media) for a local path that ffmpeg
    can't possibly read, before starting a process."""
    path = os.fspath(path)
    if is_url(path):
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError("missing_file", f"{path}: no such file") from None
    except OSError as e:
        raise DecodeError("unreadable", f"{path}: {e}") from None
    if os.path.isdir(path):
        raise DecodeError("not_media", f"{path}: is a directory")
    if st.st_size == 0 and os.path.isfile(path):
        raise DecodeError("empty_file", f"{path}: zero bytes")
    if not os.access(path, os.R_OK):
        raise DecodeError("unreadable", f"{path}: permission denied")


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExtraOutput:
    """Placeholder in an argument list for an extra output pipe; run_ffmpeg replaces it by `pipe:N`."""

    index: int


@dataclasses.dataclass
class FFmpegRun:
    """What one ffmpeg process did."""

    args: list[str]
    returncode: int | None  # None when it was killed (timeout or abort)
    stdout: bytes
    extra: list[bytes]  # bytes written to each ExtraOutput, in index order
    stderr: str  # the head and the tail (a runaway stream of decode errors is cut in the middle)
    timed_out: bool = False
    aborted: DecodeError | None = None  # what header_check raised, if it stopped the run
    wall_s: float = 0.0

    @property
    def last_line(self) -> str:
        return last_error_line(self.stderr)


_STDERR_HEAD = 64 * 1024
_STDERR_TAIL = 16 * 1024
_HEADER_DONE = ("Stream mapping:", "Output #0")


def run_ffmpeg(args: Sequence[str | ExtraOutput], *, timeout: float,
               header_check: Callable[[str], None] | None = None) -> FFmpegRun:
    """Run `ffmpeg -hide_banner -nostdin -nostats <args>` (no shell), collecting stdout, every
    ExtraOutput pipe and stderr concurrently, killing it after `timeout` seconds.

    `header_check(stderr_so_far)` is called once, as soon as ffmpeg has printed its input dump and
    stream mapping (before the bulk of the decoding); if it raises DecodeError the process is killed
    and the error returned in `aborted` (used to refuse too-large or too-long inputs early).
    Never raises for ffmpeg's own failures: callers read returncode and stderr.
    """
    n_extra = 1 + max((a.index for a in args if isinstance(a, ExtraOutput)), default=-1)
    pipes = [os.pipe() for _ in range(n_extra)]
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats"]
    argv += [f"pipe:{pipes[a.index][1]}" if isinstance(a, ExtraOutput) else str(a) for a in args]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=[w for _, w in pipes])
    except BaseException:
        for r, _ in pipes:
            os.close(r)
        raise
    finally:
        for _, w in pipes:  # the child holds its own copies; ours must close so EOF arrives
            os.close(w)
    sel = selectors.DefaultSelector()
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    out: dict[int, list[bytes]] = {}
    for fd in [out_fd, err_fd] + [r for r, _ in pipes]:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
        out[fd] = []
    head, tail, cut = bytearray(), bytearray(), False
    header_seen = header_check is None
    timed_out, aborted = False, None
    try:
        while sel.get_map():
            remaining = timeout - (time.monotonic() - t0)
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd != err_fd:
                    out[fd].append(chunk)
                    continue
                # stderr: keep the head for parsing and the tail for the error message
                if len(head) < _STDERR_HEAD:
                    head += chunk
                else:
                    tail += chunk
                    if len(tail) > 2 * _STDERR_TAIL:
                        del tail[:-_STDERR_TAIL]
                        cut = True
                if not header_seen:
                    text = head.decode("utf-8", "replace")
                    if any(s in text for s in _HEADER_DONE):
                        header_seen = True
                        try:
                            header_check(text)
                        except DecodeError as e:
                            aborted = e
                            break
            if aborted is not None:
                break
    except BaseException:
        proc.kill()
        raise
    finally:
        if not (timed_out or aborted is not None):
            try:  # all pipes are closed; a process that still won't exit counts as timed out
                proc.wait(timeout=max(0.1, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out or aborted is not None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        for r, _ in pipes:
            os.close(r)
        sel.close()
    err = head.decode("utf-8", "replace")
    if tail:
        err += ("\n[...]\n" if cut else "") + bytes(tail[-_STDERR_TAIL:] if cut else tail).decode(
            "utf-8", "replace")
    return FFmpegRun(
        args=argv, returncode=None if (timed_out or aborted) else proc.returncode,
        stdout=b"".join(out[out_fd]),
        extra=[b"".join(out[r]) for r, _ in pipes], stderr=err, timed_out=timed_out, aborted=aborted,
        wall_s=time.monotonic() - t0)


def last_error_line(stderr: str) -> str:
    """ffmpeg's last meaningful stderr line (skipping progress and summary lines), for failure records."""
    skip = ("frame=", "size=", "video:", "Press [q]", "[out#", "Exiting normally")
    for line in reversed(stderr.replace("\r", "\n").splitlines()):
        s = line.strip()
        if s and not s.startswith(skip) and "muxing overhead" not in s:
            return s[:500]
    return ""


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
    duration = start_time = None
    streams: list[dict] = []
    for line in lines[start_idx + 1:]:
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


def classify_failure(run: FFmpegRun, info: MediaInfo | None, path: str) -> DecodeError:
    """Turn a failed ffmpeg run into a DecodeError with a stable reason and ffmpeg's last line."""
    last = run.last_line
    detail = f"{path}: {last}" if last else f"{path}: ffmpeg exited with {run.returncode}"
    if run.aborted is not None:
        return run.aborted
    if run.timed_out:
        return DecodeError("timeout", f"{path}: ffmpeg still running after the timeout; last line: {last}")
    err = run.stderr
    if info is None:
        if "moov atom not found" in err and _starts_like_mp4(path):
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


def _starts_like_mp4(path: str) -> bool:
    """An ISO-BMFF 'ftyp' box at the start: a real MP4/MOV (so a missing moov means it was cut)."""
    if is_url(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


def probe(path: str | os.PathLike, *, timeout: float = 30.0) -> MediaInfo:
    """Describe a media file (duration, video and audio streams) by parsing `ffmpeg -i`.

    Raises DecodeError (missing_file, empty_file, unreadable, not_media, timeout, ffmpeg_error)."""
    path = os.fspath(path)
    check_input(path)
    run = run_ffmpeg(["-i", input_arg(path)], timeout=timeout)  # exits 1: "no output file"
    info = parse_info(run.stderr)
    if info is None or run.timed_out:
        raise classify_failure(run, None if run.timed_out else info, path)
    return info
