"""Find ffmpeg and run it safely: an argument list (never a shell), every output pipe read at once,
a timeout, and an early look at the input dump.

ffmpeg comes from PATH when there is one, else from the static binary that imageio-ffmpeg ships (no
root needed, works on Dataflow workers too). A run keeps the head and the tail of what ffmpeg says on
stderr; pipelines.ffmpeg_stderr reads it. DecodeError, what every decoding step raises, is defined
here because a run's header check can stop it with one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import selectors
import shutil
import subprocess
import time
from typing import Callable, Sequence


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
