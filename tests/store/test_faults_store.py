"""A store that fails under a run (a full disk, a filesystem gone read-only): the writer stops
at its first failed commit, every cell is made safe, the run ends 'failed' with its reason when
the store can still take it, and nothing claims a success. Real filesystems (tmpfs), real
SQLite errors."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from protocols.plan import CellSpec
from rig.store import RunWriter, WriterError
from tests.support.protocol_text import GLYME, two_cells
from tests.support.rig_process import (
    ROOT,
    assert_no_traceback,
    count,
    query,
    rig,
    rig_cmd,
    stop,
    wait_for,
)
from tests.support.tiny_fs import fill, remount, tiny_fs

CELL = CellSpec(0, "G1", "symmetric", 1.13, GLYME)


def new_run(w: RunWriter) -> int:
    key = w.create_run(run_id="20261201-000000-abcd", name="ps", kind="plating_stripping",
                       protocol_path="p.toml", protocol_text="", plan_json="{}",
                       station_json="{}", software_version="t", started_at=1e9,
                       clock="virtual")
    w.add_channel(key, CELL, "sim")
    return key


def rows(t0: float, n: int, step: int) -> list[tuple]:
    return [(t0 + k, step, 1, 0.01, 1e-3, 0.0) for k in range(n)]


def test_the_writer_stops_at_its_first_failed_commit_and_never_commits_a_later_checkpoint(
        tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "fs") as fs:
        db = fs / "store.db"
        w = RunWriter(db)
        failures: list[WriterError] = []
        w.on_failure(failures.append)
        key = new_run(w)
        w.samples(key, 0, rows(0, 100, 1))
        w.checkpoint(key, 0, 99, {"step_no": 1})
        w.flush()
        filler = fill(fs)
        for k in range(50):  # the disk is full: these cannot all be stored
            w.samples(key, 0, rows(1000 + k * 2000, 2000, 2))
        w.checkpoint(key, 0, 1e6, {"step_no": 2})
        with pytest.raises(WriterError):
            w.flush(timeout=60)
        assert failures, "the failure listener was told"
        filler.unlink()  # space again: the writer must still not commit what came after
        with pytest.raises(WriterError):
            w.samples(key, 0, rows(2e6, 10, 3))
        with pytest.raises(WriterError):
            w.checkpoint(key, 0, 2e6, {"step_no": 3})
        with pytest.raises(WriterError):
            w.close()
        assert w.unwritten, "what could not be stored is kept"
        state = json.loads(query(db, "SELECT state_json FROM checkpoints")[0][0])
        assert state["step_no"] == 1  # never the checkpoint of the batch that failed, nor later
        assert count(db, "SELECT count(*) FROM samples WHERE step = 3") == 0


def _long_run(tmp_path: Path, db: Path, cycles: int) -> list[str]:
    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells("full disk", q="1 mAh/cm^2", cycles=cycles,
                                  cells=(("G1", GLYME), ("G2", GLYME))))
    return ["run", str(protocol), "--db", str(db)]


def _checkpoints_consistent(db: Path) -> None:
    """No checkpoint is ahead of the steps it claims done (the issue's "step 40 done" with
    steps 32-39 missing)."""
    for ch, state_json in query(db, "SELECT channel, state_json FROM checkpoints") or []:
        st = json.loads(state_json)
        steps = [r[0] for r in query(db, "SELECT step FROM steps WHERE channel = ? ORDER BY "
                                         "step", ch)]
        assert steps == list(range(steps[0], steps[0] + len(steps))), "no step row missing"
        claimed = st["step_no"] if st["step_done"] else st["step_no"] - 1
        assert claimed <= (steps[-1] if steps else 0)


def test_a_full_disk_ends_the_run_failed_with_outputs_off_and_never_reports_success(
        tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "fs", "3m") as fs:
        db = fs / "store.db"
        out = rig(*_long_run(tmp_path, db, cycles=400), timeout=300)
        assert_no_traceback(out)
        assert out.returncode == 3, out.stdout[-800:] + out.stderr[-800:]
        assert "completed" not in out.stdout.splitlines()[-2]  # the finish line
        assert "failed" in out.stdout + out.stderr
        status = query(db, "SELECT status, end_reason FROM runs")[0]
        if status[0] == "failed":  # the store took the end
            assert "store" in status[1]
            event = query(db, "SELECT message FROM events WHERE kind = 'run_failed'")[0][0]
            assert "every output switched off" in event
            assert {r[0] for r in query(db, "SELECT end_reason FROM channels")} == {
                "store_failure"}
        else:  # it could not: the person is told so, and how to mark it later
            assert "could not record this end" in out.stderr
        _checkpoints_consistent(db)
        remount(fs, "size=64m")  # space freed: the run is not resumed into a false success
        run_id = query(db, "SELECT id FROM runs")[0][0]
        if status[0] == "failed":
            again = rig("resume", run_id, "--db", str(db))
            assert again.returncode == 2 and "status failed" in again.stderr
        shown = rig("show", run_id, "--db", str(db))
        assert "completed" not in shown.stdout.splitlines()[0]


def test_a_read_only_store_is_one_clear_line_and_a_dead_run_on_it_is_aborted_once_writable(
        tmp_path: Path) -> None:
    """(Linux refuses to remount a filesystem read-only while a process writes to it, so the
    read-only store is met after its engine was killed; the writer's failure path mid-run is
    the full-disk test's.)"""
    with tiny_fs(tmp_path / "fs", "64m") as fs:
        db = fs / "store.db"
        proc = subprocess.Popen(rig_cmd(*_long_run(tmp_path, db, cycles=5000)), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: count(db, "SELECT count(*) FROM samples") > 200)
            run_id = query(db, "SELECT id FROM runs")[0][0]
        finally:
            proc.kill()
            proc.wait(timeout=10)
        remount(fs, "ro")
        listed = rig("runs", "--db", str(db))  # reading a read-only store still works
        assert listed.returncode == 0 and run_id in listed.stdout
        for args in (("pause", run_id), ("abort", run_id),
                     tuple(_long_run(tmp_path, db, cycles=1))):
            out = rig(*args, *(("--db", str(db)) if args[0] != "run" else ()))
            assert_no_traceback(out)
            assert out.returncode in (2, 3), (args, out.stdout, out.stderr)
            assert len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        remount(fs, "rw")
        # its engine is gone: nothing would act on a command, so abort acts itself
        aborted = rig("abort", run_id, "--db", str(db))
        assert aborted.returncode == 0, aborted.stderr
        assert "outputs switched off" in aborted.stdout
        assert query(db, "SELECT status FROM runs")[0][0] == "aborted"
        assert {r[0] for r in query(db, "SELECT end_reason FROM channels")} == {"aborted"}
        assert count(db, "SELECT count(*) FROM events WHERE kind = 'aborted_dead_run'") == 1
