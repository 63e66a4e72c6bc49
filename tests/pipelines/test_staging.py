"""Staged samples: the shard streamed from staged pieces is the shard the codecs write whole."""

from __future__ import annotations

import io
import os

import pytest

from pipelines.publish import remove_unlisted
from pipelines.staging import copy_staged, remove_staged, shard_size, stage_sample, staging_dir
from shards.format.tfrecord_codec import write_tfrecord
from shards.format.webdataset_codec import write_webdataset
from tests.conftest import clip_sample

FORMATS = ("webdataset", "tfrecord")
WRITERS = {"webdataset": write_webdataset, "tfrecord": write_tfrecord}


@pytest.fixture
def staged(tmp_path):
    samples = [clip_sample(f"clip_{i}", seconds=0.4 + 0.2 * i, seed=i) for i in range(3)]
    folder = staging_dir(str(tmp_path), "train", "job1")
    records = [stage_sample(folder, s, FORMATS) for s in samples]
    return tmp_path, samples, records


@pytest.mark.parametrize("position,fmt", list(enumerate(FORMATS)))
def test_streamed_shard_equals_the_codec_written_shard(staged, position, fmt):
    _, samples, records = staged
    whole, streamed = io.BytesIO(), io.BytesIO()
    WRITERS[fmt](whole, samples)
    copy_staged(records, fmt, position, streamed)
    assert streamed.getvalue() == whole.getvalue()
    assert shard_size(records, fmt, position) == len(whole.getvalue())


def test_records_are_small_and_name_their_staged_file(staged):
    _, _, records = staged
    for r in records:
        assert os.path.getsize(r["staged"]) == sum(r["sizes"])
        assert len(repr(r)) < 300  # what crosses the shuffle: a few hundred bytes, not the payload


def test_staging_is_removed_whole(staged):
    out, _, records = staged
    remove_staged(records[:1])
    assert not os.path.exists(records[0]["staged"]) and os.path.exists(records[1]["staged"])
    stale = staging_dir(str(out), "train", "killedjob")  # what a killed job left
    os.makedirs(stale)
    open(os.path.join(stale, "x.sample"), "wb").close()
    other = staging_dir(str(out), "valid", "job2")  # another split's: not ours to remove
    os.makedirs(other)
    open(os.path.join(other, "y.sample"), "wb").close()
    (out / "train_x.failures.jsonl").write_text("")  # another split's, whose name begins like ours
    (out / ".tmp-train_x.index.json-0badc0de").write_text("")
    removed = remove_unlisted(str(out), "train", keep=set())
    assert sorted(removed) == [os.path.basename(staging_dir(str(out), "train", "job1")), os.path.basename(stale)]
    assert sorted(os.listdir(out)) == sorted([os.path.basename(other), "train_x.failures.jsonl",
                                              ".tmp-train_x.index.json-0badc0de"])
