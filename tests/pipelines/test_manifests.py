"""Manifest readers on small files in each corpus's real format (written into tmp_path)."""

from __future__ import annotations

import json
import os

import pytest

from pipelines.manifests import (ClipSpec, Manifest, ManifestError, RowFailure, detect_kind, label_indices,
                                 read_audioset, read_classes, read_epic, read_folder, read_generic,
                                 read_manifest, read_vggsound)
from pipelines.manifests.spec import MAX_LINE_BYTES, read_bounded
from shards.format.schema import check_key, make_key


def accounted(m: Manifest) -> Manifest:
    """Every row became exactly one spec or one failure; keys are valid and unique; specs are sane."""
    assert m.rows == len(m.specs) + len(m.failures)
    rows = sorted([s.row for s in m.specs] + [f.row for f in m.failures])
    assert len(set(rows)) == len(rows)
    keys = [s.key for s in m.specs]
    assert len(set(keys)) == len(keys)
    for s in m.specs:
        check_key(s.key)
        assert s.end is None or s.end > s.start >= 0
        assert all(name in m.vocabulary for name in s.labels)
    assert len(m.sha256) == 64
    return m


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def failures_by_row(m: Manifest) -> dict[int, RowFailure]:
    return {f.row: f for f in m.failures}


# ---------------------------------------------------------------------------------------------------
# Generic CSV / JSONL
# ---------------------------------------------------------------------------------------------------
def test_generic_csv_resolves_paths_and_reads_spans(tmp_path):
    m = accounted(read_generic(write(tmp_path / "m" / "train.csv",
        "path,start,end,labels\n"
        "videos/dog park.mp4,0,10,dog;bark\n"
        "/data/cat.mkv,,,cat\n"
        "gs://bucket/v/x.mp4,12.5,,music\n"
        "./videos/dog park.mp4,10,20.25,dog\n")))
    a, b, c, d = m.specs
    assert a == ClipSpec(row=2, key="videos-dog-park_0", path=str(tmp_path / "m/videos/dog park.mp4"),
                         start=0.0, end=10.0, labels=("dog", "bark"), video_id="videos/dog park")
    assert (b.path, b.start, b.end, b.key, b.labels) == ("/data/cat.mkv", 0.0, None, "cat_0", ("cat",))
    assert (c.path, c.start, c.end, c.key) == ("gs://bucket/v/x.mp4", 12.5, None, "x_12500")
    assert (d.key, d.path, d.end, d.duration) == ("videos-dog-park_10000", a.path, 20.25, 10.25)
    assert m.vocabulary == ["bark", "cat", "dog", "music"]
    assert (m.kind, m.rows, m.source) == ("generic", 4, str(tmp_path / "m" / "train.csv"))


def test_generic_video_root_and_dash_path(tmp_path):
    manifest = write(tmp_path / "m.csv", "path,start,end,labels\n-rf.mp4,,,a\nsub/-x.mp4,1,2,b\n")
    m = accounted(read_generic(manifest, video_root=str(tmp_path / "root")))
    assert [s.path for s in m.specs] == [str(tmp_path / "root" / "-rf.mp4"),
                                         str(tmp_path / "root" / "sub" / "-x.mp4")]
    assert all(os.path.isabs(s.path) and not s.path.startswith("-") for s in m.specs)
    assert [s.key for s in m.specs] == [make_key("-rf", 0), "sub--x_1000"]  # no key starts with "-"
    # a URL video root is joined, not made local
    m = read_generic(manifest, video_root="gs://b/videos/")
    assert m.specs[0].path == "gs://b/videos/-rf.mp4"


def test_generic_jsonl(tmp_path):
    lines = [
        {"path": "a.mp4", "start": 1, "end": 3.5, "labels": ["dog", "cat"]},
        {"path": "b.mp4", "start": None, "labels": "cat;;bird", "caption": "ignored"},
        {"path": "c.mp4", "start": "x", "end": 2, "labels": []},
        {"path": "d.mp4", "lables": ["dog"]},
        ["not", "an", "object"],
    ]
    text = "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + \
        "\n".join(json.dumps(x) for x in lines[2:]) + "\n{broken\n"
    m = accounted(read_generic(write(tmp_path / "m.jsonl", text)))
    assert [(s.row, s.key, s.start, s.end, s.labels) for s in m.specs] == [
        (1, "a_1000", 1.0, 3.5, ("dog", "cat")), (2, "b_0", 0.0, None, ("cat", "bird"))]
    f = failures_by_row(m)
    assert sorted(f) == [4, 5, 6, 7]  # line 3 is blank: not a row
    assert all(x.reason == "malformed_row" for x in f.values())
    assert "start 'x'" in f[4].detail and f[4].path == "c.mp4"
    assert "'labels' is missing" in f[5].detail
    assert "JSON object" in f[6].detail and "not valid JSON" in f[7].detail
    assert m.rows == 6


def test_generic_malformed_rows_become_failures_with_row_numbers(tmp_path):
    m = accounted(read_generic(write(tmp_path / "m.csv",
        "path,start,end,labels\n"
        "ok.mp4,0,5,a\n"
        "bad_start.mp4,abc,5,a\n"
        "backwards.mp4,8,3,a\n"
        "short_row.mp4,0,5\n"
        ",0,5,a\n"
        "neg.mp4,-1,5,a\n"
        "nan.mp4,nan,,a\n"
        '"multi\nline.mp4",0,1,a\n'
        "after.mp4,1,2,a\n")))
    assert [(s.row, s.key) for s in m.specs] == [(2, "ok_0"), (9, "multi-line_0"), (11, "after_1000")]
    f = failures_by_row(m)
    assert sorted(f) == [3, 4, 5, 6, 7, 8]
    assert {x.reason for x in f.values()} == {"malformed_row"}
    assert "start 'abc' is not a number" in f[3].detail and f[3].path == "bad_start.mp4"
    assert "not after start" in f[4].detail and f[4].key == "backwards_8000"
    assert "expected 4 fields" in f[5].detail and f[5].path == "short_row.mp4"
    assert "path is empty" in f[6].detail
    assert ">= 0" in f[7].detail and "finite" in f[8].detail


def test_generic_header_and_file_errors(tmp_path):
    with pytest.raises(ManifestError, match=r"m\.csv.*header 'path,start,end,labels'.*'video,label'"):
        read_generic(write(tmp_path / "m.csv", "video,label\nx.mp4,a\n"))
    with pytest.raises(ManifestError, match=r"\.jsonl extension"):
        read_generic(write(tmp_path / "j.csv", '{"path": "x.mp4", "labels": []}\n'))
    with pytest.raises(ManifestError, match=r"nope\.csv.*not found"):
        read_generic(str(tmp_path / "nope.csv"))
    (tmp_path / "bin.csv").write_bytes(b"path,start,end,labels\n\xff\xfe,1,2,a\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_generic(str(tmp_path / "bin.csv"))


def test_duplicate_keys_name_both_rows(tmp_path):
    path = write(tmp_path / "m.csv", "path,start,end,labels\na.mp4,0,5,x\nb.mp4,0,5,x\na.mp4,0.0001,4,y\n")
    with pytest.raises(ManifestError, match=r"m\.csv: rows 2 \(.*/a\.mp4\) and 4 \(.*/a\.mp4\) .*'a_0'"):
        read_generic(path)


def test_crlf_and_byte_order_mark(tmp_path):
    (tmp_path / "win.csv").write_bytes(
        b"\xef\xbb\xbfpath,start,end,labels\r\na.mp4,1,2,x\r\n\r\nb.mp4,x,2,y\r\n")
    m = accounted(read_manifest(str(tmp_path / "win.csv")))
    assert [(s.row, s.key, s.labels) for s in m.specs] == [(2, "a_1000", ("x",))]
    assert [(f.row, f.path) for f in m.failures] == [(4, "b.mp4")]
    with pytest.raises(ManifestError, match=r"looks like JSONL"):
        detect_kind(write(tmp_path / "lines.json", '{"path": "a.mp4", "labels": []}\n'))


def test_unknown_label_against_classes_file(tmp_path):
    classes = write(tmp_path / "classes.txt", "dog\ncat\n\nbird\n")
    assert read_classes(classes) == ["dog", "cat", "bird"]
    m = accounted(read_manifest(write(tmp_path / "m.csv",
        "path,start,end,labels\na.mp4,,,dog\nb.mp4,,,dgo;cat\nc.mp4,,,\n"), classes=classes))
    assert m.vocabulary == ["dog", "cat", "bird"]  # the file's order, not sorted
    assert [s.key for s in m.specs] == ["a_0", "c_0"] and m.specs[1].labels == ()
    (f,) = m.failures
    assert (f.row, f.key, f.reason) == (3, "b_0", "unknown_label")
    assert "'dgo'" in f.detail and "did you mean 'dog'" in f.detail
    assert label_indices(m.specs[0], m.vocabulary) == [0]
    spec = ClipSpec(1, "k_0", "p", 0.0, labels=("bird", "dog"))
    assert label_indices(spec, {"dog": 0, "bird": 2}) == [2, 0]
    with pytest.raises(ManifestError, match="'cat' is listed twice"):
        read_classes(write(tmp_path / "dup.txt", "cat\ndog\ncat\n"))


def test_keys_are_stable_and_sanitized(tmp_path):
    path = write(tmp_path / "m.csv", "path,start,end,labels\n"
                 "clips/my.video (1).mp4,1.2345,3,a\nhttps://h.org/x%20y.webm?dl=1,0,1,a\n")
    m1, m2 = read_generic(path), read_generic(path)
    assert m1 == m2  # same specs, failures, digest
    assert [s.key for s in m1.specs] == ["clips-my-video--1-_1234", "x-20y_0"]
    assert all(check_key(s.key) for s in m1.specs)


# ---------------------------------------------------------------------------------------------------
# AudioSet
# ---------------------------------------------------------------------------------------------------
AUDIOSET_SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
--aE2O5G5WE, 0.000, 10.000, "/m/03fwl,/m/04rlf,/m/09x0r"
--aO5cdqSAg, 30.000, 40.000, "/m/not_a_mid"
--bad-start, thirty, 40.000, "/m/09x0r"
"""
CLASS_INDICES = """\
index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/012xff,"Toothbrush"
3,/m/03fwl,"Goat"
4,/m/04rlf,"Music"
5,/t/dd00088,"Gush"
"""


def test_audioset(tmp_path):
    segments = write(tmp_path / "balanced_train_segments.csv", AUDIOSET_SEGMENTS)
    indices = write(tmp_path / "class_labels_indices.csv", CLASS_INDICES)
    m = accounted(read_audioset(segments, indices, str(tmp_path / "videos")))
    assert m.vocabulary == ["Speech", "Male speech, man speaking", "Toothbrush", "Goat", "Music", "Gush"]
    a, b, c = m.specs
    assert a == ClipSpec(row=4, key=make_key("--PJHxphWEs", 30),
                         path=str(tmp_path / "videos/--PJHxphWEs_30000.mp4"),
                         start=0.0, end=10.0, labels=("Speech", "Gush"), video_id="--PJHxphWEs")
    assert b.labels == ("Toothbrush",) and c.labels == ("Goat", "Music", "Speech")
    assert label_indices(c, m.vocabulary) == [3, 4, 0]
    f = failures_by_row(m)
    assert (f[7].reason, f[7].key) == ("unknown_label", make_key("--aO5cdqSAg", 30))
    assert "/m/not_a_mid" in f[7].detail
    assert f[8].reason == "malformed_row" and "start_seconds 'thirty'" in f[8].detail
    assert read_classes(indices) == m.vocabulary


def test_audioset_full_videos_pattern_and_read_manifest(tmp_path):
    segments = write(tmp_path / "eval_segments.csv", AUDIOSET_SEGMENTS)
    indices = write(tmp_path / "class_labels_indices.csv", CLASS_INDICES)
    m = read_manifest(segments, classes=indices, pattern="Y{ytid}_{start:.3f}_{end:.3f}.mkv", trimmed=False)
    assert m.kind == "audioset"
    s = m.specs[0]
    assert (s.start, s.end, os.path.basename(s.path)) == (30.0, 40.0, "Y--PJHxphWEs_30.000_40.000.mkv")
    with pytest.raises(ManifestError, match="needs --classes"):
        read_manifest(segments)
    with pytest.raises(ManifestError, match=r"unknown placeholder \{id\}.*\{ytid\}"):
        read_manifest(segments, classes=indices, pattern="{id}.mp4")
    with pytest.raises(ManifestError, match="header must be 'index,mid,display_name'"):
        read_audioset(segments, write(tmp_path / "names.txt", "Speech\nMusic\n"))


# ---------------------------------------------------------------------------------------------------
# VGGSound
# ---------------------------------------------------------------------------------------------------
VGGSOUND = """\
---g-f_I2yQ,1,people marching,test
--0PQM4-hqg,30,waterfall burbling,train
-0BIyqJj9ZU,30,"playing steel guitar, slide guitar",train
--56QUhyDQM,185,playing tennis,train
--5OkAjCI7g,40.5,dog barking,train
"""


def test_vggsound(tmp_path):
    path = write(tmp_path / "vggsound.csv", VGGSOUND)
    m = accounted(read_vggsound(path, str(tmp_path / "clips")))
    assert m.vocabulary == sorted(["people marching", "waterfall burbling", "playing tennis",
                                   "playing steel guitar, slide guitar", "dog barking"])
    first = m.specs[0]
    assert first == ClipSpec(row=1, key=make_key("---g-f_I2yQ", 1),
                             path=str(tmp_path / "clips/---g-f_I2yQ_000001.mp4"),
                             start=0.0, end=10.0, labels=("people marching",), video_id="---g-f_I2yQ")
    assert m.specs[2].labels == ("playing steel guitar, slide guitar",)
    (f,) = m.failures  # 40.5 s doesn't fit the default pattern's {start:06d}
    assert f.row == 5 and f.reason == "malformed_row" and "--pattern" in f.detail


def test_vggsound_split_filter_keeps_the_full_vocabulary(tmp_path):
    path = write(tmp_path / "vggsound.csv", "YTID,start,label,split\n" + VGGSOUND)
    test = accounted(read_manifest(path, kind="vggsound", split="test",
                                   pattern="{split}/{ytid}_{start_ms}.mp4"))
    train = accounted(read_manifest(path, kind="vggsound", split="train", trimmed=False,
                                    pattern="{ytid}_{start_ms}.mp4"))
    assert (test.rows, test.skipped, train.rows, train.skipped) == (1, 4, 4, 1)
    assert test.vocabulary == train.vocabulary and len(test.vocabulary) == 5
    assert test.specs[0].path.endswith("/test/---g-f_I2yQ_1000.mp4")
    assert [(s.start, s.end) for s in train.specs][-1] == (40.5, 50.5)
    assert detect_kind(write(tmp_path / "v2.csv", VGGSOUND)) == "vggsound"


# ---------------------------------------------------------------------------------------------------
# EPIC-Kitchens-100
# ---------------------------------------------------------------------------------------------------
EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
               "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
               "all_nouns,all_noun_classes\n")
EPIC_ROWS = """\
P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,3,['door'],[3]
P01_01_1,P01,P01_01,00:00:02.629,00:00:04.37,00:00:06.17,262,370,turn on light,turn-on,6,light,114,['light'],[114]
P01_01_2,P01,P01_01,00:00:02.629,00:00:04.37,00:00:05.00,262,300,"put down pan, lid",put-down,1,pan,10,"['pan', 'lid']","[10, 12]"
P22_107_12,P22,P22_107,00:01:02.250,00:01:02.37,01:00:04.5,3742,216270,wash cup,wash,2,cup,13,['cup'],[13]
P01_01_4,P01,P01_01,00:00:09.000,00:00:09.5,00:00:08.00,570,480,take plate,take,0,plate,2,['plate'],[2]
P01_01_5,P01,P01_01,00:00:10.000,10.5,00:00:12.00,630,720,take cup,take,0,cup,13,['cup'],[13]
P01_01_6,P01,P01_01,00:00:12.000,00:00:12.50,00:00:13.00,750,780,take cup,take,zero,cup,13,['cup'],[13]
"""


def test_epic(tmp_path):
    path = write(tmp_path / "EPIC_100_train.csv", EPIC_HEADER + EPIC_ROWS)
    m = accounted(read_epic(path, "/data/EPIC-KITCHENS"))
    a, b, c, d = m.specs
    assert a == ClipSpec(row=2, key="P01_01_0_140", path="/data/EPIC-KITCHENS/P01/videos/P01_01.MP4",
                         start=0.14, end=3.37, labels=("open", "door"), video_id="P01_01", verb=3, noun=3)
    assert (b.key, c.key, b.start, c.start) == ("P01_01_1_4370", "P01_01_2_4370", 4.37, 4.37)  # same start
    assert (c.labels, c.verb, c.noun) == (("put-down", "pan"), 1, 10)
    assert (d.start, d.end, d.path) == (62.37, 3604.5, "/data/EPIC-KITCHENS/P22/videos/P22_107.MP4")
    f = failures_by_row(m)
    assert sorted(f) == [6, 7, 8]
    assert "not after start" in f[6].detail and f[6].key == "P01_01_4_9500"
    assert "start_timestamp '10.5'" in f[7].detail and "00:01:02.37" in f[7].detail
    assert "verb_class 'zero'" in f[8].detail
    assert detect_kind(path) == "epic"
    assert read_manifest(path, video_root="/v").specs[0].path == "/v/P01/videos/P01_01.MP4"


def test_epic_test_timestamps_without_labels_and_bad_header(tmp_path):
    path = write(tmp_path / "EPIC_100_test_timestamps.csv",
                 "narration_id,participant_id,video_id,start_timestamp,stop_timestamp,"
                 "start_frame,stop_frame\n"
                 "P01_101_0,P01,P01_101,00:00:00.64,00:00:02.13,32,106\n")
    (s,) = accounted(read_epic(path, pattern="{video_id}/{narration_id}.mp4")).specs
    assert (s.labels, s.verb, s.noun, s.path) == ((), None, None, str(tmp_path / "P01_101/P01_101_0.mp4"))
    with pytest.raises(ManifestError, match="header lacks stop_timestamp"):
        read_epic(write(tmp_path / "bad.csv", "narration_id,participant_id,video_id,start_timestamp\n"))


# ---------------------------------------------------------------------------------------------------
# Folder per class
# ---------------------------------------------------------------------------------------------------
def make_tree(root, files):
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # the reader never opens videos


def test_folder_whole_videos(tmp_path):
    root = tmp_path / "data"
    make_tree(root, ["dog/park.mp4", "dog/2023/beach.MKV", "cat/park.mp4", "cat/notes.txt",
                     "cat/.hidden.mp4", ".git/x.mp4", "stray.mp4", "-dash/-x.mp4"])
    m = accounted(read_folder(str(root)))
    assert [(s.key, s.labels, s.end) for s in m.specs] == [
        (make_key("-dash/-x", 0), ("-dash",), None), ("cat-park_0", ("cat",), None),
        ("dog-2023-beach_0", ("dog",), None), ("dog-park_0", ("dog",), None)]
    assert m.specs[0].path == str(root / "-dash" / "-x.mp4")
    (f,) = m.failures
    assert (f.reason, f.path) == ("malformed_row", str(root / "stray.mp4")) and "class folder" in f.detail
    assert m.vocabulary == ["-dash", "cat", "dog"] and m.rows == 5
    assert read_manifest(str(root)) == m


def test_folder_fixed_length_clips(tmp_path):
    root = tmp_path / "data"
    make_tree(root, ["a/long.mp4", "a/short.mp4", "b/broken.mp4", "b/none.mp4", "b/exact.mp4"])
    durations = {"long.mp4": 25.3, "short.mp4": 4.0, "exact.mp4": 29.99999999, "none.mp4": None}

    def duration_fn(path):
        return durations[os.path.basename(path)]  # KeyError for broken.mp4: a probe that fails

    m = accounted(read_manifest(str(root), clip_seconds=10, duration_fn=duration_fn))
    spans = [(s.key, s.start, s.end) for s in m.specs]
    assert spans == [("a-long_0", 0.0, 10.0), ("a-long_10000", 10.0, 20.0), ("a-short_0", 0.0, None),
                     ("b-exact_0", 0.0, 10.0), ("b-exact_10000", 10.0, 20.0), ("b-exact_20000", 20.0, 30.0)]
    assert {f.reason for f in m.failures} == {"probe_failed"}
    assert sorted(os.path.basename(f.path) for f in m.failures) == ["broken.mp4", "none.mp4"]
    assert m.rows == 8 and sorted(s.row for s in m.specs + m.failures) == list(range(1, 9))
    with pytest.raises(ManifestError, match="needs each video's duration"):
        read_folder(str(root), clip_seconds=10)


# ---------------------------------------------------------------------------------------------------
# read_manifest: detection and options
# ---------------------------------------------------------------------------------------------------
def test_detect_kind_and_option_mistakes(tmp_path):
    assert detect_kind(write(tmp_path / "a.csv", "path,start,end,labels\n")) == "generic"
    assert detect_kind(write(tmp_path / "a.jsonl", "")) == "generic"
    assert detect_kind(write(tmp_path / "s.csv", AUDIOSET_SEGMENTS)) == "audioset"
    bare = AUDIOSET_SEGMENTS.split("\n", 3)[3]  # no comment lines
    assert detect_kind(write(tmp_path / "s2.csv", bare)) == "audioset"
    with pytest.raises(ManifestError, match="--manifest-kind"):
        read_manifest(write(tmp_path / "x.tsv", "file\tlabel\n"))
    with pytest.raises(ManifestError, match="unknown manifest kind 'csv'"):
        read_manifest(str(tmp_path / "a.csv"), kind="csv")
    with pytest.raises(ManifestError, match="--clip-seconds applies to folder"):
        read_manifest(str(tmp_path / "a.csv"), clip_seconds=5)
    with pytest.raises(ManifestError, match="--pattern applies"):
        read_manifest(str(tmp_path / "a.csv"), pattern="{ytid}.mp4")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "missing.csv"))
    empty = accounted(read_manifest(str(tmp_path / "a.csv")))
    assert (empty.rows, empty.specs, empty.vocabulary) == (0, [], [])


# ---------------------------------------------------------------------------------------------------
# Times read strictly; files that are not manifests refused at once
# ---------------------------------------------------------------------------------------------------
def test_times_are_decimal_numbers_only(tmp_path):
    m = accounted(read_generic(write(tmp_path / "m.csv",
        "path,start,end,labels\n"
        "a.mp4,1_0,20,x\n"  # float() reads 10
        "b.mp4,0,0x10,x\n"
        "c.mp4, 1.5 ,1e1,x\n"
        "d.mp4,.5,2.,x\n")))
    f = failures_by_row(m)
    assert sorted(f) == [2, 3] and "start '1_0' is not a number of seconds" in f[2].detail
    assert "end '0x10' is not a number" in f[3].detail
    assert [(s.start, s.end) for s in m.specs] == [(1.5, 10.0), (0.5, 2.0)]
    # AudioSet's and VGGSound's times go through the same parser
    m = read_vggsound(write(tmp_path / "v.csv", "abc,1_0,dog,train\n"), video_root=str(tmp_path))
    assert m.failures[0].reason == "malformed_row" and "1_0" in m.failures[0].detail


@pytest.mark.parametrize("kind", ["auto", "generic"])
def test_a_device_is_refused_at_once(kind):
    with pytest.raises(ManifestError, match="'/dev/zero' is a device or socket, not a file"):
        read_manifest("/dev/zero", kind=kind)
    with pytest.raises(ManifestError, match="classes file '/dev/zero' is a device"):
        read_classes("/dev/zero")


def test_binary_files_and_endless_lines_are_refused_without_reading_them_whole(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"path,start,end,labels\n\0\0\0")
    with pytest.raises(ManifestError, match=r"not a text file \(a NUL byte at offset 22\)"):
        read_generic(str(tmp_path / "bin.csv"))
    long = tmp_path / "long.csv"
    with open(long, "w") as f:
        f.write("path,start,end,labels\n" + "x" * (MAX_LINE_BYTES + 10) + "\n")
    with pytest.raises(ManifestError, match="has a line over 64 KiB long"):
        read_generic(str(long))
    with pytest.raises(ManifestError, match="has a line over 64 KiB long"):
        detect_kind(write(tmp_path / "long2.csv", "x" * (3 * MAX_LINE_BYTES)))
    with pytest.raises(ManifestError, match=r"quote\.csv: the record from line 2 on: field larger than field limit"):
        read_generic(write(tmp_path / "quote.csv", 'path,start,end,labels\n"a.mp4' + "\nx" * 70_000))
    write(tmp_path / "m.csv", "path,start,end,labels\n" + "a.mp4,0,1,x\n" * 100)  # the size bound
    with open(tmp_path / "m.csv", "rb") as f, pytest.raises(ManifestError, match="is over"):
        read_bounded(f, str(tmp_path / "m.csv"), limit=1 << 10)


def test_a_manifest_can_come_through_a_pipe(tmp_path):
    r, w = os.pipe()
    os.write(w, b"path,start,end,labels\n/v/a.mp4,0,1,x\n")
    os.close(w)
    m = read_generic(f"/dev/fd/{r}")
    os.close(r)
    assert [s.key for s in m.specs] == ["a_0"]
