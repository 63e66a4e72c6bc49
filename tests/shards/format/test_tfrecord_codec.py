"""TFRecord encoding: DMVR key names, TensorFlow parses what we write and we read what it writes."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from shards.format import sequence_example as sx
from shards.format.errors import ShardError
from shards.format.reader import read_shard
from shards.format.tfrecord_codec import (encode_sample, iter_records, iter_tfrecord, masked_crc, write_record,
                                   write_tfrecord)

tf = pytest.importorskip("tensorflow")
from tensorflow.core.example import example_pb2  # noqa: E402  (after tensorflow, which it needs)

NAME = "train-00000-of-00001.tfrecord"

# What scenic's MBT / DMVR read, by exactly these names.
DMVR_CONTEXT = {
    "clip/label/index": tf.io.VarLenFeature(tf.int64),
    "clip/label/text": tf.io.VarLenFeature(tf.string),
    "video/filename": tf.io.FixedLenFeature([], tf.string),
    "clip/start/timestamp": tf.io.FixedLenFeature([], tf.int64),
    "clip/end/timestamp": tf.io.FixedLenFeature([], tf.int64),
    "clip/key": tf.io.FixedLenFeature([], tf.string),
    "clip/meta": tf.io.FixedLenFeature([], tf.string),
}
DMVR_SEQUENCE = {
    "image/encoded": tf.io.FixedLenSequenceFeature([], tf.string),
    "melspec/feature/floats": tf.io.FixedLenSequenceFeature([100 * 128], tf.float32),
}


def tfrecord_bytes(samples) -> bytes:
    out = io.BytesIO()
    assert write_tfrecord(out, samples) == len(samples)
    return out.getvalue()


def read_all(data: bytes):
    stream = io.BytesIO(data)
    stream.name = NAME
    return list(read_shard(stream))


def padded_mel(sample) -> np.ndarray:
    seconds = -(-sample.melspec.shape[0] // 100)
    mel = np.zeros((seconds * 100, 128), np.float32)
    mel[:sample.melspec.shape[0]] = sample.melspec
    return mel.reshape(seconds, 100 * 128)


def test_round_trip_and_identical_bytes(samples, tmp_path):
    data = tfrecord_bytes(samples)
    assert tfrecord_bytes(samples) == data
    back = read_all(data)
    assert all(a.equals(b) for a, b in zip(samples, back, strict=True))
    assert tfrecord_bytes(back) == data
    path = tmp_path / NAME
    path.write_bytes(data)
    assert all(a.equals(b) for a, b in zip(samples, read_shard(path), strict=True))


def test_bytes_equal_protobuf_deterministic_serialization(samples):
    for sample in samples:
        ours = encode_sample(sample)
        assert example_pb2.SequenceExample.FromString(ours).SerializeToString(deterministic=True) == ours


def test_tensorflow_parses_our_shard_with_dmvr_key_names(samples, tmp_path):
    path = tmp_path / NAME
    path.write_bytes(tfrecord_bytes(samples))
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())  # TF checks our framing
    assert len(records) == len(samples)
    for record, sample in zip(records, samples):
        context, sequence, lengths = tf.io.parse_sequence_example(
            [record], context_features=DMVR_CONTEXT, sequence_features=DMVR_SEQUENCE)
        assert tf.sparse.to_dense(context["clip/label/index"])[0].numpy().tolist() == sample.labels
        assert [t.decode() for t in tf.sparse.to_dense(context["clip/label/text"])[0].numpy()] == \
            sample.label_text
        assert context["video/filename"][0].numpy().decode() == sample.meta["source"]
        assert context["clip/start/timestamp"][0].numpy() == round(sample.meta["start"] * 1e6)
        assert context["clip/end/timestamp"][0].numpy() == round(sample.meta["end"] * 1e6)
        assert context["clip/key"][0].numpy().decode() == sample.key
        assert json.loads(context["clip/meta"][0].numpy()) == sample.meta
        assert list(sequence["image/encoded"][0].numpy()) == sample.frames
        assert lengths["image/encoded"][0].numpy() == len(sample.frames)
        np.testing.assert_array_equal(sequence["melspec/feature/floats"][0].numpy(), padded_mel(sample))
        # scenic reads the spectrogram as [100, 128] elements; the same bytes, time-major
        _, seq2 = tf.io.parse_single_sequence_example(record, sequence_features={
            "melspec/feature/floats": tf.io.FixedLenSequenceFeature([100, 128], tf.float32)})
        mel = seq2["melspec/feature/floats"].numpy().reshape(-1, 128)
        np.testing.assert_array_equal(mel[:sample.melspec.shape[0]], sample.melspec)


def test_epic_verb_and_noun(samples):
    epic = samples[1]
    context, _ = tf.io.parse_single_sequence_example(encode_sample(epic), context_features={
        "clip/label/verb": tf.io.FixedLenFeature([], tf.int64),
        "clip/label/noun": tf.io.FixedLenFeature([], tf.int64)})
    assert (context["clip/label/verb"].numpy(), context["clip/label/noun"].numpy()) == (4, 11)
    assert "clip/label/verb" not in sx.decode(encode_sample(samples[0]))[0]


def test_reads_records_written_by_tensorflow(samples, tmp_path):
    sample = samples[1]
    seq = example_pb2.SequenceExample()
    ctx = seq.context.feature
    ctx["clip/key"].bytes_list.value.append(sample.key.encode())
    ctx["clip/meta"].bytes_list.value.append(json.dumps(sample.meta).encode())
    ctx["clip/label/index"].int64_list.value.extend(sample.labels)
    ctx["clip/label/text"].bytes_list.value.extend(t.encode() for t in sample.label_text)
    ctx["clip/label/verb"].int64_list.value.append(sample.verb)
    ctx["clip/label/noun"].int64_list.value.append(sample.noun)
    ctx["melspec/num_rows"].int64_list.value.append(sample.melspec.shape[0])
    for frame in sample.frames:
        seq.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value.append(frame)
    for second in padded_mel(sample):
        seq.feature_lists.feature_list["melspec/feature/floats"].feature.add().float_list.value.extend(second)
    path = tmp_path / NAME
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(seq.SerializeToString())
    [back] = read_shard(path)
    assert back.equals(sample)


def test_sequence_example_decoder_matches_tensorflow_on_odd_values():
    seq = example_pb2.SequenceExample()
    seq.context.feature["i"].int64_list.value.extend([-1, 0, 2**63 - 1, -(2**63)])
    seq.context.feature["f"].float_list.value.extend([1.5, -0.0, 3e38])
    seq.context.feature["b"].bytes_list.value.extend([b"", b"\x00\xff"])
    seq.context.feature["empty"].SetInParent()
    context, lists = sx.decode(seq.SerializeToString())
    assert context["i"] == [-1, 0, 2**63 - 1, -(2**63)]
    assert context["f"].tolist() == [1.5, -0.0, np.float32(3e38)]
    assert context["b"] == [b"", b"\x00\xff"] and context["empty"] is None and lists == {}
    ours = sx.encode({"i": sx.int64_feature([-1, 0, 2**63 - 1, -(2**63)])}, {})
    assert example_pb2.SequenceExample.FromString(ours).context.feature["i"].int64_list.value == \
        [-1, 0, 2**63 - 1, -(2**63)]


def test_melspec_padding_is_trimmed_exactly(make_sample):
    for rows in (1, 99, 100, 101, 250):
        sample = make_sample(mel_rows=rows)
        _, lists = sx.decode(encode_sample(sample))
        assert len(lists["melspec/feature/floats"]) == -(-rows // 100)
        [back] = read_all(tfrecord_bytes([sample]))
        assert back.melspec.shape == (rows, 128) and np.array_equal(back.melspec, sample.melspec)


def test_framing_matches_the_tfrecord_spec():
    out = io.BytesIO()
    write_record(out, b"hello")
    data = out.getvalue()
    assert struct.unpack("<Q", data[:8])[0] == 5
    assert struct.unpack("<I", data[8:12])[0] == masked_crc(data[:8])
    assert data[12:17] == b"hello" and struct.unpack("<I", data[17:])[0] == masked_crc(b"hello")
    assert list(iter_records(io.BytesIO(data), "x")) == [b"hello"]


@pytest.mark.parametrize("cut", [5, 12, 30, -3])
def test_truncated_tfrecord_raises_naming_file_and_record(samples, cut):
    data = tfrecord_bytes(samples[:2])
    first = struct.unpack("<Q", data[:8])[0] + 16
    with pytest.raises(ShardError, match=rf"{NAME}.*truncated.*record #(0|1)"):
        read_all(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(ShardError, match=rf"{NAME}.*record #1"):
        read_all(data[:first + 20])


@pytest.mark.parametrize("where", ["length", "data", "crc"])
def test_corrupt_tfrecord_raises(samples, where):
    data = bytearray(tfrecord_bytes(samples[:1]))
    data[{"length": 2, "data": 40, "crc": len(data) - 1}[where]] ^= 0x01
    with pytest.raises(ShardError, match=rf"{NAME}.*record #0.*(corrupt|crc)"):
        read_all(bytes(data))


def test_records_that_are_not_our_samples_are_refused(samples):
    bad_key = sx.encode({"clip/key": sx.bytes_feature([b"../x"])}, {})
    for payload in (b"\xff\xff\xff", sx.encode({}, {}), bad_key):
        out = io.BytesIO()
        write_record(out, payload)
        with pytest.raises(ShardError, match=rf"{NAME}.*sample #0"):
            read_all(out.getvalue())


def test_lazy_sample_reads_only_what_is_asked(samples):
    lazy = list(iter_tfrecord(io.BytesIO(tfrecord_bytes(samples)), NAME))
    assert all(x._parsed is None for x in lazy)  # skipping a sample costs only its read
    assert [x.key for x in lazy] == [s.key for s in samples]
    assert lazy[0].num_frames == 5 and lazy[0].frames([4, 1]) == [samples[0].frames[4], samples[0].frames[1]]
    assert "melspec" not in vars(lazy[0])
