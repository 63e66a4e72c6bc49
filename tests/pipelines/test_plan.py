"""The plan file: the manifest's work reaches the workers as a file, so the graph does not grow."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import build_pipeline
from pipelines.manifests import ClipSpec, read_manifest
from pipelines.manifests.spec import Manifest
from pipelines.plan import CLIPS_PER_FETCH, spec_from_json, spec_to_json, tasks, write_plan


def manifest_of(paths: list[str]) -> Manifest:
    specs = [ClipSpec(row=i + 2, key=f"k_{i}", path=p, start=float(i), end=i + 1.0, labels=("a",))
             for i, p in enumerate(paths)]
    return Manifest(source="m.csv", kind="generic", sha256="0", rows=len(specs), specs=specs,
                    failures=[], vocabulary=["a"])


def test_remote_clips_of_one_source_share_a_task_and_local_ones_spread():
    paths = ["gs://b/long.mp4"] * (CLIPS_PER_FETCH + 3) + ["/v/a.mp4", "/v/a.mp4", "gs://b/other.mp4"]
    got = [[s.key for s in t] for t in tasks(manifest_of(paths))]
    sizes = sorted(len(t) for t in got)
    assert sizes == [1, 1, 1, 3, CLIPS_PER_FETCH]  # one fetch per 32 clips of a remote source
    assert sorted(k for t in got for k in t) == sorted(f"k_{i}" for i in range(len(paths)))


def test_specs_survive_the_plan_file():
    spec = ClipSpec(row=3, key="P01_01_120", path="/v/P01_01.MP4", start=1.5, end=None,
                    labels=("take", "cup"), video_id="P01_01", verb=2, noun=7)
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def graph_bytes(plan, cfg) -> int:
    p = beam.Pipeline(runner="FnApiRunner")
    build_pipeline(p, plan, cfg)
    return p.to_runner_api().ByteSize()


@pytest.mark.slow
def test_graph_of_a_two_million_row_audioset_manifest_stays_under_a_megabyte(tmp_path):
    classes = tmp_path / "class_labels_indices.csv"
    classes.write_text("index,mid,display_name\n" + "".join(f'{i},/m/{i:05d},"Class {i}"\n' for i in range(527)))

    def audioset(rows: int):
        seg = tmp_path / f"seg{rows}.csv"
        with open(seg, "w") as f:
            f.write("# Segments csv created\n# num_ytids\n# YTID, start_seconds, end_seconds, positive_labels\n")
            f.writelines(f'Y{i:010d}, {i % 300}.000, {i % 300 + 10}.000, "/m/{i % 527:05d}"\n' for i in range(rows))
        m = read_manifest(str(seg), classes=str(classes))
        cfg = IngestConfig(output=str(tmp_path / f"out{rows}"))
        return graph_bytes(write_plan(m, str(tmp_path / f"staging{rows}"), "0123abcd"), cfg)

    small, large = audioset(20), audioset(2_000_000)
    assert large < 1_000_000
    assert large - small < 2_000  # only the shard count's digits differ, never the rows


def test_shared_decode_chains_overlapping_local_clips_within_the_span_limit():
    specs = [ClipSpec(row=i + 2, key=f"k_{i}", path="/v/long.mp4", start=s, end=e, labels=("a",))
             for i, (s, e) in enumerate([(0, 3), (2, 5), (4.5, 7), (20, 22), (6, 40), (1, None)])]
    m = Manifest(source="m.csv", kind="generic", sha256="0", rows=len(specs), specs=specs, failures=[],
                 vocabulary=["a"])
    got = sorted(sorted(s.key for s in t) for t in tasks(m, shared_decode=10))
    # (0,3)-(2,5)-(4.5,7) chain; (6,40) would make the chain 40 s long; (20,22) overlaps nothing
    # before it; a clip to the end of the file stays alone
    assert got == [["k_0", "k_1", "k_2"], ["k_3"], ["k_4"], ["k_5"]]
    assert [len(t) for t in tasks(m)] == [1] * 6  # off by default: every local clip alone
