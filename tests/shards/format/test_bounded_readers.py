"""Sizes read from headers are checked against the file before anything is allocated, and a damaged
sample that the container still frames costs that sample only (strict=False)."""

from __future__ import annotations

import io
import struct
import tarfile
import tracemalloc

import numpy as np
import pytest

from shards.format import jpeg
from shards.format.errors import ShardError
from shards.format.limits import MAX_JSON_BYTES
from shards.format.reader import read_shard, read_shard_lazy
from shards.format.tfrecord_codec import masked_crc, write_tfrecord
from shards.format.webdataset_codec import _member_header, encode_members, write_webdataset

TAR, TFR = "train-00000-of-00001.tar", "train-00000-of-00001.tfrecord"


def shard_bytes(samples, fmt="webdataset") -> bytearray:
    out = io.BytesIO()
    (write_webdataset if fmt == "webdataset" else write_tfrecord)(out, samples)
    return bytearray(out.getvalue())


def named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(bytes(data))
    stream.name = name
    return stream


def members(data: bytes) -> dict[str, tuple[int, int]]:
    """{member name: (offset of its ustar header, size)}, as the standard library reads the tar."""
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        return {m.name: (m.offset_data - 512, m.size) for m in tar.getmembers()}


def set_member_size(data: bytearray, header: int, size: int) -> None:
    """Write `size` into the ustar header at `header`, with a valid header checksum (a forged size)."""
    block = data[header:header + 512]
    block[124:136] = b"%011o\x00" % size
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    data[header:header + 512] = block


def claim_mel_shape(data: bytearray, key: str, shape: bytes) -> None:
    """Rewrite KEY.mel.npy's header in place to claim `shape` (the header keeps its length)."""
    start, _ = members(data)[f"{key}.mel.npy"]
    i = data.index(b"{'descr'", start + 512)
    j = data.index(b"\n", i)
    old = bytes(data[i:j])
    new = old.split(b"'shape': ")[0] + b"'shape': " + shape + b", }"
    assert len(new) <= len(old)
    data[i:j] = new.ljust(len(old), b" ")


def peak_mib(fn) -> tuple[float, Exception | None]:
    """(MiB allocated at the peak while fn() ran, the exception it raised); numpy's and bytes'
    allocations are traced."""
    tracemalloc.start()
    error = None
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - returned to the test, which says what it expects
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20, error


def read_each(source, fmt=None, strict=False) -> list:
    """Each sample of a shard read whole, or the ShardError it raised, going on past bad ones."""
    out = []
    for lazy in read_shard_lazy(source, fmt, strict=strict):
        try:
            out.append(lazy.to_sample())
        except ShardError as e:
            out.append(e)
    return out


@pytest.mark.parametrize("shape", [b"(1000000000000,)", b"(1000000000000, 128)", b"(150, 64)"])
def test_mel_npy_header_shapes_are_checked_against_the_member_before_allocating(samples, shape):
    data = shard_bytes(samples)
    claim_mel_shape(data, "a_0", shape)
    got = []
    peak, error = peak_mib(lambda: got.extend(read_each(named(data, TAR))))
    assert peak < 20 and error is None
    assert isinstance(got[0], ShardError) and "a_0.mel.npy" in str(got[0]) and TAR in str(got[0])
    assert "header says" in str(got[0]) and len(str(got[0]).splitlines()) == 1
    assert [s.key for s in got[1:]] == [s.key for s in samples[1:]]  # the next samples are read


def test_a_tar_member_claiming_more_than_the_file_holds_is_refused_before_reading(samples, non_seekable):
    data = shard_bytes(samples)
    header, _ = members(data)["b-1_2000.mjpeg"]
    set_member_size(data, header, 100 << 20)  # 100 MiB in a shard of a few KiB
    for source, cut in ((named(data, TAR), "truncated or corrupt"), (non_seekable(bytes(data)), "truncated inside")):
        peak, error = peak_mib(lambda: list(read_shard(source, fmt="webdataset")))
        assert peak < 40 and isinstance(error, ShardError)  # (a stream of unknown length: read a chunk at a time)
        assert "b-1_2000.mjpeg" in str(error) and cut in str(error) and len(str(error).splitlines()) == 1
    with pytest.raises(ShardError, match=rf"{TAR}: truncated or corrupt .* claims 104857600 bytes, the file has"):
        list(read_shard(named(data, TAR)))
    set_member_size(data, header, 8**11 - 1)  # the largest the field holds: beyond any member
    with pytest.raises(ShardError, match="more than the 1073741824 bytes a member can have"):
        list(read_shard(named(data, TAR)))


def test_a_json_member_beyond_its_limit_is_passed_over_and_the_next_sample_read(samples, tmp_path):
    a, b, c = (encode_members(s) for s in samples[:3])
    huge = (b[0][0], b" " * (MAX_JSON_BYTES + 1))  # framed by its header, larger than any sample's JSON
    path = tmp_path / TAR
    with open(path, "wb") as f:
        for name, data in [*a, huge, *b[1:], *c]:
            f.write(_member_header(name, len(data)) + data + bytes(-len(data) % 512))
        f.write(bytes(1024))
    got = []
    peak, error = peak_mib(lambda: got.extend(read_each(path)))
    assert peak < 20 and error is None  # passed over by a seek, never read
    assert got[0].key == "a_0" and got[2].key == "c_3"
    assert isinstance(got[1], ShardError) and "b-1_2000.json has 67108865 bytes, more than" in str(got[1])
    with pytest.raises(ShardError, match="b-1_2000.json has 67108865 bytes"):
        list(read_shard(path))  # strict: the same error, at that sample


def test_a_tfrecord_length_field_beyond_the_file_is_refused_before_reading(samples, non_seekable):
    length = struct.pack("<Q", 2**60)
    data = shard_bytes(samples[:1], "tfrecord") + length + struct.pack("<I", masked_crc(length)) + bytes(100)
    for source in (named(data, TFR), non_seekable(bytes(data))):
        out = []
        lazies = read_shard_lazy(source, "tfrecord", strict=False)
        peak, error = peak_mib(lambda: out.extend(lazy.to_sample() for lazy in lazies))
        assert peak < 20 and isinstance(error, ShardError)
        assert "record #1" in str(error) and "its length field says 1152921504606846976 bytes" in str(error)
        assert [s.key for s in out] == ["a_0"]  # the record before it was read


def test_a_tfrecord_failing_its_data_crc_costs_one_sample(samples):
    data = shard_bytes(samples[:3], "tfrecord")
    first = struct.unpack("<Q", data[:8])[0] + 16
    data[first + 12 + 50] ^= 0x01  # a byte inside record #1's data
    got = read_each(named(data, TFR))
    assert got[0].key == "a_0" and got[2].key == "c_3"
    assert isinstance(got[1], ShardError) and "record #1 is corrupt (data crc mismatch)" in str(got[1])
    with pytest.raises(ShardError, match=r"record #1 is corrupt"):
        list(read_shard(named(data, TFR)))  # strict (the default) stops there


def test_every_damaged_tar_sample_is_reported_and_the_rest_read(samples):
    data = shard_bytes(samples)
    claim_mel_shape(data, "a_0", b"(7, 128)")
    claim_mel_shape(data, "c_3", b"(1000000000000,)")
    got = read_each(named(data, TAR))
    assert [type(x).__name__ for x in got] == ["ShardError", "Sample", "ShardError", "Sample"]
    assert "(a_0)" in str(got[0]) and "(c_3)" in str(got[2])  # errors name the key where it is known


def test_frame_bounds_come_from_the_dataset_and_caps_hold_without_one():
    assert jpeg.FrameBounds.of_index({"features": {"short_side": 256}}).limits() == (512, 4096)
    assert jpeg.FrameBounds.of_index(None) == jpeg.FrameBounds() and jpeg.FrameBounds().limits() == (16384, 16384)
    assert jpeg.FrameBounds(256).check((256, 455)) == (256, 455)
    with pytest.raises(jpeg.FrameSizeError, match="16000x16000 pixels, far larger than this dataset's frames"):
        jpeg.FrameBounds(256).check((16000, 16000))
    with pytest.raises(jpeg.FrameSizeError, match="65000x65000 pixels, more than any frame is read at"):
        jpeg.FrameBounds().check((65000, 65000))
    with pytest.raises(jpeg.FrameSizeError):
        jpeg.FrameBounds().check((10000, 10000))  # within a side, beyond Pillow's MAX_IMAGE_PIXELS


def claim_size(frame: bytes, height: int, width: int) -> bytes:
    """A JPEG whose SOF header claims height x width (its data stays that of the real frame)."""
    data = bytearray(frame)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decoding_a_forged_header_allocates_nothing_of_its_size(samples):
    bomb = claim_size(samples[0].frames[0], 65000, 65000)
    assert jpeg.jpeg_size(bomb) == (65000, 65000)
    peak, error = peak_mib(lambda: jpeg.decode_jpeg(bomb))
    assert peak < 20 and isinstance(error, jpeg.FrameSizeError)
    scratch = np.empty(16 * 24 * 3, np.uint8)  # a buffer given: never a new one of the header's size
    peak, error = peak_mib(lambda: jpeg.decode_jpeg(bomb, out=scratch, frame_size=(16, 24)))
    assert peak < 20 and isinstance(error, ValueError)
