"""WebDataset tar encoding: round trips, deterministic bytes, strict and pickle-free reading."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from shards.format.errors import ShardError
from shards.format.reader import read_shard, read_shard_lazy
from shards.format.schema import SchemaError, check_key, make_key
from shards.format.webdataset_codec import encode_members, iter_webdataset, write_webdataset


def tar_bytes(samples) -> bytes:
    out = io.BytesIO()
    assert write_webdataset(out, samples) == len(samples)
    return out.getvalue()


def raw_tar(members: list[tuple[str, bytes]], format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar written by the standard library, for hand-made (bad) shards."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_all(data: bytes, name: str = "train-00000-of-00001.tar"):
    stream = io.BytesIO(data)
    stream.name = name
    return list(read_shard(stream))


def test_round_trip(samples, tmp_path):
    path = tmp_path / "train-00000-of-00001.tar"
    path.write_bytes(tar_bytes(samples))
    back = list(read_shard(path))
    assert len(back) == len(samples)
    assert all(a.equals(b) for a, b in zip(samples, back))
    assert back[1].verb == 4 and back[1].noun == 11 and back[0].verb is None
    assert back[3].melspec.shape == (1, 128) and back[3].melspec.dtype == np.float32


def test_same_samples_give_identical_bytes(samples):
    first = tar_bytes(samples)
    assert tar_bytes(samples) == first
    assert tar_bytes(read_all(first)) == first  # decode -> encode is the identity on bytes
    assert len(first) % 10240 == 0


def test_writes_to_a_non_seekable_stream(samples, non_seekable):
    out = non_seekable()
    write_webdataset(out, samples)
    assert bytes(out.written) == tar_bytes(samples)
    back = list(read_shard(non_seekable(bytes(out.written)), fmt="webdataset"))
    assert all(a.equals(b) for a, b in zip(samples, back))


def test_members_are_plain_deterministic_files(samples):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(samples))) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos[:3]] == ["a_0.json", "a_0.mjpeg", "a_0.mel.npy"]
        assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode, i.type) for i in infos} == \
            {(0, 0, 0, "", "", 0o644, tarfile.REGTYPE)}
        header = json.loads(tar.extractfile("a_0.json").read())
        mjpeg = tar.extractfile("a_0.mjpeg").read()
    assert set(header) == {"labels", "label_text", "meta", "frame_offsets", "frame_lengths"}
    frames = [mjpeg[o:o + n] for o, n in zip(header["frame_offsets"], header["frame_lengths"])]
    assert frames == samples[0].frames
    assert header["label_text"] == samples[0].label_text


def test_long_keys_use_pax_headers_and_read_back(make_sample):
    sample = make_sample("k" * 200)
    [back] = read_all(tar_bytes([sample]))
    assert back.equals(sample)


@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_tars_written_by_other_tools(make_sample, format):
    sample = make_sample("k" * (200 if format == tarfile.GNU_FORMAT else 80))
    [back] = read_all(raw_tar(encode_members(sample), format=format))
    assert back.equals(sample)


def test_webdataset_package_reads_our_shards(samples, tmp_path):
    from webdataset import tariterators

    path = tmp_path / "train-00000-of-00001.tar"
    path.write_bytes(tar_bytes(samples))
    with open(path, "rb") as f:
        got = list(tariterators.tarfile_samples([{"url": str(path), "stream": f}]))
    assert [g["__key__"] for g in got] == [s.key for s in samples]
    assert all(set(g) >= {"json", "mjpeg", "mel.npy"} for g in got)
    assert np.array_equal(np.load(io.BytesIO(got[0]["mel.npy"]), allow_pickle=False), samples[0].melspec)


def test_lazy_sample_slices_frames_without_decoding_the_rest(samples):
    lazy = list(iter_webdataset(io.BytesIO(tar_bytes(samples)), "s.tar"))
    assert [x.key for x in lazy] == [s.key for s in samples]
    assert lazy[2].num_frames == 7 and lazy[2].labels == []
    assert lazy[2].frames([6, 0]) == [samples[2].frames[6], samples[2].frames[0]]
    assert "melspec" not in vars(lazy[2])  # the spectrogram was not loaded
    with pytest.raises(IndexError):
        lazy[2].frame(7)


@pytest.mark.parametrize("cut", [0, 100, 512, 700, 1024 + 5, -10240])
def test_truncated_tar_raises_naming_the_shard(samples, cut):
    data = tar_bytes(samples)
    if cut < 0:  # exactly the end-of-archive blocks and padding missing: whole members, no end marker
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            cut = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())
    with pytest.raises(ShardError, match=r"train-00000-of-00001\.tar.*truncated"):
        read_all(data[:cut])


def test_corrupt_header_raises(samples):
    data = bytearray(tar_bytes(samples))
    data[3] ^= 0x20  # a byte of the first member's name: the checksum no longer matches
    with pytest.raises(ShardError, match="checksum"):
        read_all(bytes(data))


def test_signed_checksums_of_old_tar_writers_are_accepted(samples):
    data = bytearray(tar_bytes(samples))
    data[265:269] = "zoë".encode()  # a byte > 127 in the owner name, then the checksum as signed bytes
    header = data[:512]
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32
    data[148:156] = b"%06o\x00 " % signed
    assert [s.key for s in read_all(bytes(data))] == [s.key for s in samples]
    data[300] ^= 0x01  # and a header that matches neither sum still fails
    with pytest.raises(ShardError, match="checksum"):
        read_all(bytes(data))


@pytest.mark.parametrize("name", ["../x.json", "-rf.json", "a/b.json", "x.pyd", "x.pkl", "x.npy",
                                  "x..json", "x", "/etc/passwd", "x y.json"])
def test_malicious_member_names_are_refused(name):
    with pytest.raises(ShardError, match=r"bad\.tar.*refusing member"):
        read_all(raw_tar([(name, b"{}")]), name="bad.tar")


def test_non_file_members_are_refused(samples):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo("a_0.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ShardError, match="not a plain file"):
        read_all(out.getvalue())


class Boom:
    """Unpickling this would record it: np.load must never get that far."""

    unpickled = False

    def __setstate__(self, state):
        Boom.unpickled = True


def test_object_array_melspec_is_refused_without_unpickling(samples):
    members = dict(encode_members(samples[0]))
    evil = io.BytesIO()
    np.save(evil, np.array([Boom(), Boom()], dtype=object), allow_pickle=True)
    members["a_0.mel.npy"] = evil.getvalue()
    with pytest.raises(ShardError, match=r"a_0\.mel\.npy is not a plain numpy array"):
        read_all(raw_tar(list(members.items())))
    assert not Boom.unpickled


def test_wrong_melspec_shape_is_refused(samples):
    members = dict(encode_members(samples[0]))
    bad = io.BytesIO()
    np.save(bad, np.zeros((10, 64), np.float32))
    members["a_0.mel.npy"] = bad.getvalue()
    with pytest.raises(ShardError, match=r"float32 \[T, 128\]"):
        read_all(raw_tar(list(members.items())))


def test_incomplete_and_duplicate_samples_are_refused(samples):
    a, b = encode_members(samples[0]), encode_members(samples[1])
    with pytest.raises(ShardError, match=r"sample a_0 is missing a_0\.mel\.npy"):
        read_all(raw_tar(a[:2] + b))
    with pytest.raises(ShardError, match="missing"):
        read_all(raw_tar(b + a[:1]))
    with pytest.raises(ShardError, match="appears twice"):
        read_all(raw_tar(a + b + a))
    with pytest.raises(ShardError, match="appears twice"):
        read_all(raw_tar(a[:1] + a))


def test_frame_table_must_tile_the_mjpeg(samples):
    members = dict(encode_members(samples[0]))
    header = json.loads(members["a_0.json"])
    header["frame_lengths"][0] += 1
    members["a_0.json"] = json.dumps(header).encode()
    with pytest.raises(ShardError, match="do not tile"):
        read_all(raw_tar(list(members.items())))


def test_non_jpeg_frames_are_refused(samples):
    members = dict(encode_members(samples[1]))  # one frame
    members["b-1_2000.mjpeg"] = b"x" * len(members["b-1_2000.mjpeg"])
    with pytest.raises(ShardError, match="JPEG"):
        read_all(raw_tar(list(members.items())))


def test_writer_rejects_invalid_samples(make_sample):
    bad_mel = make_sample()
    bad_mel.melspec = bad_mel.melspec.astype(np.float64)
    numpy_meta = make_sample()
    numpy_meta.meta["start"] = np.float32(1.5)
    for sample in (bad_mel, numpy_meta):
        with pytest.raises(SchemaError, match="vid_0"):
            tar_bytes([sample])


def test_keys_never_start_with_a_dash():
    with pytest.raises(SchemaError):
        check_key("-rf")
    assert make_key("-0Gj8-vB1q4", 30) == "_-0Gj8-vB1q4_30000"
    assert make_key("abc", 1.25) == "abc_1250"


def test_empty_shard_round_trips():
    data = tar_bytes([])
    assert data == bytes(10240)
    assert read_all(data) == []
    assert list(read_shard_lazy(io.BytesIO(data), "webdataset")) == []
