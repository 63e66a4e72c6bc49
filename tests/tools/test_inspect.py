"""`mbt inspect` on damaged shards: a forged frame size or spectrogram shape is one line (exit 2), never
Pillow's DecompressionBombError or a MemoryError; a damaged sample does not hide the ones after it."""

from __future__ import annotations

import os
import struct

import pytest

from tools.cli import main


def forge_frame(frame: bytes, height: int, width: int) -> bytes:
    """The JPEG with its SOF header claiming height x width."""
    data = bytearray(frame)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def inspect(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["inspect", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err.strip()


@pytest.fixture
def forged(tmp_path, make_clip, make_dataset):
    """Three clips in each format, sample 1's frame 0 claiming 65000x65000 pixels (no index beside)."""
    clips = [make_clip(f"c{i}", 1.0, seed=i, width=16, height=16) for i in range(3)]
    clips[1].frames[0] = forge_frame(clips[1].frames[0], 65000, 65000)
    folder = make_dataset(tmp_path / "forged", clips, num_shards=1)
    os.remove(os.path.join(folder, "train.index.json"))  # the caps without a dataset's frame size
    return folder


@pytest.mark.parametrize("ext", ["tar", "tfrecord"])
def test_a_frame_header_claiming_65000x65000_is_one_line_not_a_decompression_bomb(forged, tmp_path, capsys, ext):
    shard = os.path.join(forged, f"train-00000-of-00001.{ext}")
    png = tmp_path / "s.png"
    rc, out, err = inspect([shard, "--index", "1", "--png", str(png)], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and not png.exists()
    assert shard in err and "sample c1: frame 0 of 25: its JPEG header says 65000x65000 pixels" in err
    assert "re-create it (mbt ingest)" in err
    rc, out, err = inspect([shard, "--index", "1"], capsys)  # the text summary reads headers only
    assert rc == 0 and "25 x 65000x65000 JPEG" in out
    rc, out, err = inspect([shard, "--index", "2", "--png", str(png)], capsys)  # the sample after it
    assert rc == 0 and png.stat().st_size > 1000


def test_a_spectrogram_header_claiming_10_to_the_12_rows_is_one_line(tmp_path, make_clip, make_dataset, capsys):
    import tarfile

    clips = [make_clip(f"c{i}", 1.0, seed=i, width=16, height=16) for i in range(3)]
    folder = make_dataset(tmp_path / "npy", clips, num_shards=1, formats=("webdataset",))
    shard = os.path.join(folder, "train-00000-of-00001.tar")
    with tarfile.open(shard) as tar:
        start = tar.getmember("c1.mel.npy").offset_data
    data = bytearray(open(shard, "rb").read())
    header = bytes(data[start:start + 128])
    data[start:start + 128] = header.replace(b"(100, 128)", b"(1000000000000,)").rstrip(b" \n").ljust(127) + b"\n"
    open(shard, "wb").write(bytes(data))
    rc, out, err = inspect([shard, "--index", "1"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert shard in err and "(c1)" in err and "c1.mel.npy" in err and "(1000000000000,)" in err
    rc, out, err = inspect([shard, "--key", "c2"], capsys)  # the samples around it are still there
    assert rc == 0 and "key        c2" in out
    rc, out, err = inspect([shard, "--list"], capsys)
    assert rc == 0 and out.split() == ["c0", "c1", "c2"]
