"""The ffmpeg command that decodes a clip: the filter graphs and the argument list decode_clip runs.

One process, two outputs: the video graph makes 25 fps frames (short side resized, square pixels,
BT.601 full range) that ffmpeg's mjpeg encoder writes to stdout as concatenated JPEGs, the audio graph
makes 16 kHz mono float32 on a second pipe. Each graph has a one-frame showinfo/ashowinfo side
branch whose line on stderr says when the first frame and the first sample came (read by
pipelines.ffmpeg_stderr.read_run). Public so a benchmark can run exactly the same work with bare
ffmpeg.
"""

from __future__ import annotations

import os
import re

from pipelines.ffmpeg_run import ExtraOutput, ffmpeg_version
from pipelines.media_input import input_arg
from shards.format.schema import FPS

SAMPLE_RATE = 16000  # Hz of the audio the command delivers, and so of every DecodedClip


def _fps_mode_args() -> list[str]:
    m = re.match(r"n?(\d+)\.(\d+)", ffmpeg_version())
    if m and (int(m.group(1)), int(m.group(2))) < (5, 1):
        return ["-vsync", "passthrough"]  # -fps_mode appeared in 5.1
    return ["-fps_mode", "passthrough"]


def video_graph(short_side: int, offset: float = 0.0) -> str:
    """The -filter_complex for frames: 25 fps on the grid starting at `offset` s (input time), short
    side -> `short_side` (display aspect kept, square pixels, even dimensions), BT.601 full range as
    JPEG decoders assume. A side branch logs the first decoded frame's timestamp (showinfo on one
    frame) so decode_clip can tell whether the seek landed before the clip start."""
    s = int(short_side)
    landscape = "gte(iw*sar,ih)"
    w = f"if({landscape},2*round({s}*iw*sar/ih/2),{s})"
    h = f"if({landscape},{s},2*round({s}*ih/(iw*sar)/2))"
    # setpts: the 1/25 s grid starts at `offset`; and one tick earlier when a tick is under 0.1 ms, so
    # that a frame starting exactly on a grid point still counts as on screen there after ffmpeg has
    # rounded the seek offset into the stream's time base (else it can slip to the next grid point)
    shift = f"setpts='PTS-{offset:.6f}/TB-if(lt(TB,0.0001),1,0)',"
    return (f"[0:V:0]split=2[v][probe];[probe]trim=end_frame=1,showinfo,nullsink;"
            f"[v]{shift}fps={FPS}:start_time=0:round=up,"
            f"scale=w='{w}':h='{h}':flags=bilinear:out_color_matrix=bt601:out_range=full,"
            f"setsar=1[frames]")


def audio_graph(max_samples: int, offset: float = 0.0) -> str:
    """The -filter_complex part for audio: downmix to mono, resample to 16 kHz with sample 0 at
    `offset` s (input time; earlier samples trimmed, a late start padded with silence), stop after
    `max_samples`. A side branch logs the first audio frame's timestamp after the trim (ashowinfo on
    one sample): that is the silence aresample pads in front, which decode_clip records."""
    # atrim cuts the pre-roll sample-exactly (aresample's first_pts drops long pre-rolls unreliably,
    # and counts a non-zero first_pts in input samples); aresample's first_pts=0 then only pads a
    # stream that starts after the clip start with silence
    shift = f"asetpts=PTS-{offset:.6f}/TB," if offset else ""
    return (f"[0:a:0]atrim=start={offset:.6f},{shift}asplit=2[a][aprobe];"
            f"[aprobe]atrim=end_sample=1,ashowinfo,anullsink;"
            f"[a]aformat=sample_fmts=flt:channel_layouts=mono,"
            f"aresample={SAMPLE_RATE}:min_comp=0.001:first_pts=0,atrim=end_sample={int(max_samples)}"
            f"[audio]")


def decode_args(path: str | os.PathLike, start: float, max_frames: int, max_samples: int, *,
                seek: bool = True, short_side: int = 256, jpeg_quality: int = 3, threads: int = 1,
                with_audio: bool = True, video_out: str = "pipe:1",
                audio_out: str | ExtraOutput = ExtraOutput(0)) -> list[str | ExtraOutput]:
    """The ffmpeg arguments (after `ffmpeg -hide_banner -nostdin -nostats`) that decode_clip runs:
    frames as concatenated JPEGs to `video_out`, audio as raw f32le to `audio_out`. Public so a
    benchmark can run exactly the same work with bare ffmpeg.

    seek=True jumps to the keyframe before `start` (input seeking: clip 500 of a long EPIC video does
    not decode from the file's beginning) and the filters drop the pre-roll exactly; seek=False
    decodes from the file start and the filters drop everything before `start`."""
    offset = 0.0 if seek else start
    args: list[str | ExtraOutput] = []
    if threads:
        args += ["-filter_complex_threads", str(threads), "-filter_threads", str(threads),
                 "-threads", str(threads)]
    if seek and start > 0:
        args += ["-ss", f"{start:.6f}", "-noaccurate_seek"]
    args += ["-i", input_arg(path)]
    graph = video_graph(short_side, offset)
    if with_audio:
        graph += ";" + audio_graph(max_samples, offset)
    args += ["-filter_complex", graph, "-map", "[frames]",
             *_fps_mode_args(), "-frames:v", str(int(max_frames)),
             "-c:v", "mjpeg", "-q:v", str(int(jpeg_quality))]
    if threads:
        args += ["-threads", str(threads)]
    args += ["-f", "image2pipe", video_out]
    if with_audio:
        args += ["-map", "[audio]", "-c:a", "pcm_f32le", "-f", "f32le", audio_out]
    return args
