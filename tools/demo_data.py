"""The demo dataset: short clips synthesised with ffmpeg, where neither modality alone decides the class.

Each clip shows a coloured square moving over a grey background and plays a tone. The class is the
pair (colour, pitch): `red_low`, `red_high`, `blue_low`, `blue_high`. Video alone tells the colour
(two candidates), audio alone the pitch (two candidates); only both together decide, which is what an
audio-visual model must learn. A fraction of clips has one modality replaced by noise (a grey square,
or noise instead of a tone), so that the other one must carry the decision on its own.
Everything is drawn from a seeded RNG: the same seed gives the same files.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COLOURS = {"red": "0xD03020", "blue": "0x2040D0"}
PITCHES = {"low": 330.0, "high": 1320.0}
CLASSES = [f"{c}_{p}" for c in COLOURS for p in PITCHES]


@dataclasses.dataclass(frozen=True)
class DemoClip:
    name: str
    label: str
    seconds: float
    colour: str  # hex colour of the square, or grey when the video is the noisy modality
    pitch: float | None  # tone in Hz, None when the audio is the noisy modality
    speed: tuple[float, float]  # pixels per second
    origin: tuple[int, int]
    size: int
    volume: float


def plan(num_per_class: int, seed: int = 0, noise_fraction: float = 0.2, prefix: str = "") -> list[DemoClip]:
    """The clips to make, deterministic in `seed`."""
    rng = random.Random(seed)
    clips = []
    for label in CLASSES:
        colour, pitch = label.split("_")
        for i in range(num_per_class):
            noisy = rng.random() < noise_fraction
            which = rng.choice(["video", "audio"]) if noisy else None
            clips.append(DemoClip(
                name=f"{prefix}{label}_{i:03d}", label=label, seconds=round(rng.uniform(2.0, 3.0), 2),
                colour="0x808080" if which == "video" else COLOURS[colour],
                pitch=None if which == "audio" else PITCHES[pitch] * rng.uniform(0.94, 1.06),
                speed=(rng.uniform(-60, 60), rng.uniform(-40, 40)),
                origin=(rng.randrange(40, 240), rng.randrange(40, 160)), size=rng.randrange(36, 64),
                volume=rng.uniform(0.3, 0.8)))
    return clips


def ffmpeg_args(clip: DemoClip, out: Path, ffmpeg: str) -> list[str]:
    """One ffmpeg call: lavfi background + square + tone (or noise) -> h264/AAC mp4."""
    d = clip.seconds
    seed = sum(map(ord, clip.name)) % 10007  # per clip, stable
    (x0, y0), (vx, vy) = clip.origin, clip.speed
    # A quiet noise floor under every clip, as real recordings have; the noisy-audio clips get loud
    # noise and no tone.
    audio = (f"sine=frequency={clip.pitch:.1f}:sample_rate=44100:duration={d}" if clip.pitch else
             f"anoisesrc=color=pink:sample_rate=44100:duration={d}:amplitude=0.5:seed={seed}")
    floor = f"anoisesrc=color=brown:sample_rate=44100:duration={d}:amplitude=0.02:seed={seed + 1}"
    move = (f"[0][1]overlay=x='mod({x0}+{vx:.1f}*t+320,320-{clip.size})'"
            f":y='mod({y0}+{vy:.1f}*t+240,240-{clip.size})'[v];"
            f"[2]volume={clip.volume:.2f}[tone];[3][tone]amix=inputs=2:normalize=0[a]")
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"color=c=0x606060:s=320x240:r=25:d={d}",
            "-f", "lavfi", "-i", f"color=c={clip.colour}:s={clip.size}x{clip.size}:r=25:d={d}",
            "-f", "lavfi", "-i", audio, "-f", "lavfi", "-i", floor,
            "-filter_complex", move, "-map", "[v]", "-map", "[a]",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
            "-c:a", "aac", "-b:a", "64k", "-t", str(d), "-fflags", "+bitexact",
            "-map_metadata", "-1", str(out)]


def make_demo_videos(folder: str | os.PathLike, num_per_class: int = 8, seed: int = 0,
                     workers: int | None = None, split: str = "train") -> Path:
    """Write the clips and `SPLIT.csv` (path,start,end,labels) into `folder`; return the manifest.

    Splits differ by seed and by file-name prefix (`validation_red_low_000.mp4`), so they never share
    a clip; the train split keeps plain names and `manifest.csv`."""
    from pipelines.ffmpeg_run import ffmpeg_exe

    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    prefix = "" if split == "train" else f"{split}_"
    clips = plan(num_per_class, seed, prefix=prefix)
    exe = ffmpeg_exe()

    def make(clip: DemoClip) -> None:
        out = folder / "videos" / f"{clip.name}.mp4"
        if not out.exists():
            tmp = out.with_name(f".tmp-{out.name}")
            subprocess.run(ffmpeg_args(clip, tmp, exe), check=True, timeout=120)
            tmp.replace(out)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(make, clips))
    manifest = folder / ("manifest.csv" if split == "train" else f"{split}.csv")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        for clip in clips:
            w.writerow([f"videos/{clip.name}.mp4", "", "", clip.label])
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return manifest
