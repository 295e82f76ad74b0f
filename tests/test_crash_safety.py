"""Stage outputs survive crashes: fsync before the rename, an atomic swap, and a killed run's
leftovers cleaned up by the next run — shown on the helpers and on a real stage killed mid-write."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines import outputs
from pipelines.outputs import atomic_dir, atomic_file, remove_stale
from tests.conftest import ROOT, write_params


def write_tree(directory: Path, text: str) -> None:
    (directory / "a.txt").write_text(text)
    (directory / "sub").mkdir()
    (directory / "sub" / "b.txt").write_text(text)


def tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def strays(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_every_file_and_folder_is_fsynced_before_the_swap_and_the_parent_after(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v1")
    events: list[tuple[str, str]] = []
    real_fsync, real_exchange = os.fsync, outputs._exchange

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def exchange(a, b):
        events.append(("swap", str(b)))
        return real_exchange(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(outputs, "_exchange", exchange)
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v2")
        staged = {str(tmp / "a.txt"), str(tmp / "sub/b.txt"), str(tmp / "sub"), str(tmp)}
    swap = events.index(("swap", str(out)))
    assert staged <= {path for kind, path in events[:swap] if kind == "fsync"}
    assert ("fsync", str(tmp_path)) in events[swap:]
    assert tree(out) == {"a.txt": "v2", "sub/b.txt": "v2"}
    assert strays(tmp_path, "out") == []


def test_a_failed_block_leaves_the_old_output_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("the stage failed")
    assert tree(out) == {"a.txt": "v1", "sub/b.txt": "v1"}
    assert strays(tmp_path, "out") == []


@pytest.mark.skipif(outputs._RENAMEAT2 is None, reason="no renameat2 on this system")
def test_the_output_path_never_stops_existing_while_it_is_replaced(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v0")
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not (out / "a.txt").exists():
                missing.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(50):
            with atomic_dir(out) as tmp:
                write_tree(tmp, f"v{n + 1}")
    finally:
        stop.set()
        watcher.join()
    assert not missing
    assert tree(out)["a.txt"] == "v50"


def test_without_an_atomic_exchange_a_kill_between_the_renames_is_repaired(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v1")
    with atomic_dir(out) as tmp:  # the fallback swap works
        write_tree(tmp, "v2")
    assert tree(out)["a.txt"] == "v2" and strays(tmp_path, "out") == []
    # the state a SIGKILL right after `rename(out, .out.old)` leaves behind
    os.rename(out, tmp_path / ".out.old")
    assert remove_stale(out) == []  # nothing to delete: the old output is put back
    assert tree(out)["a.txt"] == "v2" and strays(tmp_path, "out") == []


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipelines.outputs import atomic_dir, atomic_file
    out, kind, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    with (atomic_dir if kind == "dir" else atomic_file)(out) as tmp:
        if kind == "dir":
            (tmp / "a.txt").write_text("partial")
        else:
            tmp.write_text("partial")
        ready.touch()
        time.sleep(120)  # killed here, in the middle of writing
    """
)


def run_and_kill(out: Path, kind: str, tmp_path: Path) -> None:
    ready = tmp_path / f"ready-{kind}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), kind, str(ready)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_keeps_the_old_directory_and_the_next_run_clears_the_leftover(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v1")
    run_and_kill(out, "dir", tmp_path)
    assert tree(out) == {"a.txt": "v1", "sub/b.txt": "v1"}
    assert len(strays(tmp_path, "out")) == 1  # the killed writer's temporary
    with atomic_dir(out) as tmp:
        write_tree(tmp, "v2")
    assert tree(out) == {"a.txt": "v2", "sub/b.txt": "v2"}
    assert strays(tmp_path, "out") == []


def test_sigkill_mid_write_keeps_the_old_file_and_the_next_run_clears_the_leftover(tmp_path):
    out = tmp_path / "metrics.json"
    with atomic_file(out) as tmp:
        tmp.write_text("v1")
    run_and_kill(out, "file", tmp_path)
    assert out.read_text() == "v1" and len(strays(tmp_path, "metrics.json")) == 1
    with atomic_file(out) as tmp:
        tmp.write_text("v2")
    assert out.read_text() == "v2" and strays(tmp_path, "metrics.json") == []


def test_a_running_writers_temporary_is_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.tmp-{sleeper.pid}-abc"
        dead = tmp_path / ".out.k3j_x9q2"  # the previous naming scheme: nobody owns it
        live.mkdir()
        dead.mkdir()
        assert remove_stale(tmp_path / "out") == [dead]
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale(tmp_path / "out") == [live]


KILLED_STAGE = textwrap.dedent(
    """
    import runpy, sys, time
    from pathlib import Path
    from pipelines import outputs
    ready = Path(sys.argv[1])
    fsync_tree = outputs._fsync_tree

    def then_stall(root):  # the whole new output is written: stall just before the swap
        fsync_tree(root)
        ready.touch()
        time.sleep(300)

    outputs._fsync_tree = then_stall
    runpy.run_module("pipelines.ingest", run_name="__main__")
    """
)


@pytest.mark.slow  # ~40 s: a real stage, killed and run again
def test_a_stage_killed_while_writing_leaves_its_previous_output(tmp_path):
    """`python -m pipelines.ingest`, SIGKILLed with its new output fully written but not swapped in:
    the previous events stay, and the next run replaces them and leaves no stray directory."""
    small = {"n_users": 40, "n_items": 30, "n_impressions": 2000, "bad_row_fraction": 0.0}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }

    def ingest(seed: int, script: str | None = None) -> subprocess.Popen:
        write_params(tmp_path, {"source": {"synthetic": {**small, "seed": seed}}})
        cmd = ["-m", "pipelines.ingest"] if script is None else ["-c", script, str(ready)]
        return subprocess.Popen([sys.executable, *cmd], cwd=tmp_path, env=env)

    ready = tmp_path / "ready"
    assert ingest(1).wait(300) == 0
    events = tmp_path / "data/ingest/events.parquet"
    first = pl.read_parquet(events)
    proc = ingest(2, KILLED_STAGE)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ingest did not get there"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert pl.read_parquet(events).equals(first)
    assert len(strays(tmp_path / "data", "ingest")) == 1
    assert ingest(2).wait(300) == 0
    assert not pl.read_parquet(events).equals(first)
    assert strays(tmp_path / "data", "ingest") == []
