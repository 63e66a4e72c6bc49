"""`mbt validate` on damaged datasets: checksums, every bad sample listed (and only the bad frame),
non-finite spectrograms, forged sizes; always one line each, never a traceback."""

from __future__ import annotations

import json
import os
import struct
import tarfile

import numpy as np
import pytest

from shards.format.checksum import crc32c_hex, stream_crc32c
from shards.format.errors import ShardError
from shards.format.naming import format_for_path
from shards.format.offsets import encode_offsets, scan_offsets
from shards.format.tfrecord_codec import masked_crc
from tools.cli import main
from tools.dataset_report import validate_dataset


def small_clips(make_clip, n: int):
    return [make_clip(f"c{i:02d}", 1.0, labels=(i % 5,), seed=i, width=16, height=16) for i in range(n)]


def publish(folder: str, checksums: bool = True) -> str:
    """Complete a test dataset's index as `mbt ingest` writes it: counts, the failures file, the frame
    size, and (checksums=True, the index of this version) every file's CRC32C and the offsets sidecars."""
    index_file = os.path.join(folder, "train.index.json")
    index = json.load(open(index_file))
    n = index["num_samples"]
    index["counts"] = {"rows": n, "written": n, "failed": 0, "failed_by_reason": {}}
    index["features"] = {"short_side": 16}
    failures = os.path.join(folder, index["failures_file"])
    open(failures, "wb").close()
    for entries in index["shards"].values():
        for entry in entries:
            path = os.path.join(folder, entry["path"])
            entry["bytes"] = os.path.getsize(path)
            if checksums:
                with open(path, "rb") as f:
                    entry["crc32c"] = stream_crc32c(f)[0]
                try:
                    offsets = encode_offsets(scan_offsets(path, format_for_path(path)))
                except ShardError:  # (a shard a test broke on purpose: validate says what is wrong)
                    continue
                with open(path + ".offsets", "wb") as f:
                    f.write(offsets)
                entry["offsets"], entry["offsets_crc32c"] = entry["path"] + ".offsets", crc32c_hex(offsets)
    if checksums:
        with open(failures, "rb") as f:
            index["failures_crc32c"] = stream_crc32c(f)[0]
    json.dump(index, open(index_file, "w"))
    return folder


def validate(folder, capsys) -> tuple[int, list[str]]:
    """`mbt validate FOLDER`: (exit code, output lines); never a traceback."""
    rc = main(["validate", str(folder)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out.splitlines()


def problems(lines: list[str], *words: str) -> list[str]:
    return [line for line in lines if line.startswith("PROBLEM") and all(w in line for w in words)]


def tar_member(path: str, name: str) -> tarfile.TarInfo:
    with tarfile.open(path) as tar:
        return tar.getmember(name)


def patch(path: str, offset: int, data: bytes) -> None:
    """Overwrite bytes of a file in place (it keeps its size)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def forge_frame(frame: bytes, height: int, width: int) -> bytes:
    """The JPEG with its SOF header claiming height x width."""
    data = bytearray(frame)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def dataset(tmp_path, make_clip, make_dataset):
    """8 one-second clips of 16x16 frames in one tar shard and one TFRecord shard, indexed with checksums."""
    return publish(make_dataset(tmp_path / "data", small_clips(make_clip, 8), num_shards=1))


TAR, TFR = "train-00000-of-00001.tar", "train-00000-of-00001.tfrecord"


def test_a_whole_dataset_with_checksums_is_all_good(dataset, capsys):
    rc, lines = validate(dataset, capsys)
    assert rc == 0 and lines == ["validate: 16 samples in 2 shards read; all good"]


def test_a_flipped_byte_inside_a_jpeg_is_a_checksum_mismatch(dataset, capsys):
    path = os.path.join(dataset, TAR)
    member = tar_member(path, "c03.mjpeg")
    expected = json.load(open(os.path.join(dataset, "train.index.json")))["shards"]["webdataset"][0]["crc32c"]
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\xff\xda", member.offset_data) + 20  # inside a frame's entropy-coded data
    patch(path, at, bytes([data[at] ^ 0x01]))
    with open(path, "rb") as f:
        found = stream_crc32c(f)[0]
    rc, lines = validate(dataset, capsys)
    assert rc == 1
    (line,) = problems(lines, "crc32c")
    assert path in line and expected in line and found in line and "mbt ingest" in line


def test_a_changed_failures_file_is_a_checksum_mismatch(dataset, capsys):
    index = json.load(open(os.path.join(dataset, "train.index.json")))
    open(os.path.join(dataset, index["failures_file"]), "wb").write(b"{}\n")
    rc, lines = validate(dataset, capsys)
    assert rc == 1 and problems(lines, index["failures_file"], "crc32c", index["failures_crc32c"])


def test_an_index_of_an_older_version_says_once_that_it_has_no_checksums(tmp_path, make_clip, make_dataset, capsys):
    folder = publish(make_dataset(tmp_path / "old", small_clips(make_clip, 4), num_shards=2), checksums=False)
    rc, lines = validate(folder, capsys)
    assert rc == 0 and lines[-1] == "validate: 8 samples in 4 shards read; all good"
    notes = [line for line in lines if line.startswith("NOTE")]
    assert len(notes) == 2 and "no checksums recorded (made by an older version)" in notes[0]
    assert "no sample offsets recorded" in notes[1] and "--add-offsets" in notes[1]


def test_every_bad_sample_of_a_shard_is_listed_and_only_the_bad_frame(tmp_path, make_clip, make_dataset, capsys):
    clips = small_clips(make_clip, 8)
    clips[1].frames[12] = forge_frame(clips[1].frames[12], 65000, 65000)  # one frame's header
    clips[6].frames = [forge_frame(f, 2000, 2000) for f in clips[6].frames]  # frames far beyond the dataset's 16 px
    folder = make_dataset(tmp_path / "bad", clips, num_shards=1, formats=("webdataset",))
    path = os.path.join(folder, TAR)
    mel = tar_member(path, "c03.mel.npy")  # a +inf written over a value, in place
    patch(path, mel.offset_data + 128 + 40 * 512 + 7 * 4, np.float32(np.inf).tobytes())
    npy = tar_member(path, "c05.mel.npy")  # a .npy header claiming 10**12 rows, in place
    header = open(path, "rb").read()[npy.offset_data:npy.offset_data + 128]
    forged = header.replace(b"(100, 128)", b"(1000000000000,)").rstrip(b" \n").ljust(127) + b"\n"
    assert len(forged) == 128 and forged != header
    patch(path, npy.offset_data, forged)
    publish(folder)  # damaged before it was indexed: the checksums fit, the samples don't

    report = validate_dataset(folder)
    assert report.samples == 8 and len(report.problems) == 4, report.problems  # it went on past each
    rc, lines = validate(folder, capsys)
    assert rc == 1 and lines[-1] == "validate: 8 samples in 1 shards read; 4 problems"
    (frame,) = problems(lines, "sample c01")
    assert "frame 12 of 25: its JPEG header says 65000x65000 pixels" in frame and path in frame
    (big,) = problems(lines, "sample c06")
    assert "(25 of 25) are too large" in big and "2000x2000 pixels, far larger than this dataset's frames" in big
    (inf,) = problems(lines, "sample c03")
    assert "non-finite values in melspec" in inf and path in inf
    (shape,) = problems(lines, "(c05)")
    assert "c05.mel.npy must be float32 [T, 128], its header says float32 (1000000000000,)" in shape
    assert not problems(lines, "samples read, the index says")


def test_a_tar_member_claiming_more_than_the_file_is_one_problem(dataset, capsys):
    path = os.path.join(dataset, TAR)
    member = tar_member(path, "c04.mjpeg")
    block = bytearray(open(path, "rb").read()[member.offset_data - 512:member.offset_data])
    block[124:136] = b"%011o\x00" % (500 << 20)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    patch(path, member.offset_data - 512, bytes(block))
    rc, lines = validate(dataset, capsys)
    assert rc == 1
    (line,) = problems(lines, "c04.mjpeg")
    assert path in line and "claims 524288000 bytes, the file has" in line
    assert problems(lines, path, "crc32c")  # and the bytes differ from those indexed


def test_tfrecords_a_length_field_of_2_to_the_60_and_a_bad_record_crc(tmp_path, make_clip, make_dataset, capsys):
    folder = make_dataset(tmp_path / "tfr", small_clips(make_clip, 6), num_shards=1, formats=("tfrecord",))
    path = os.path.join(folder, TFR)
    data = bytearray(open(path, "rb").read())
    first = struct.unpack("<Q", data[:8])[0] + 16
    data[first + 12 + 100] ^= 0x40  # record #1's data: its CRC fails, its length still frames record #2
    length = struct.pack("<Q", 2**60)
    open(path, "wb").write(bytes(data) + length + struct.pack("<I", masked_crc(length)) + bytes(64))
    publish(folder)
    rc, lines = validate(folder, capsys)
    assert rc == 1 and lines[-1] == "validate: 6 samples in 1 shards read; 2 problems"
    assert problems(lines, path, "record #1 is corrupt (data crc mismatch)")
    assert problems(lines, path, "record #6", "its length field says 1152921504606846976 bytes")
