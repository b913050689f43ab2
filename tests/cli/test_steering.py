"""Honest steering: unknown commands are refused and logged while pause and abort keep
working; a run that ended refuses pause/resume/abort with its status."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from tests.support.protocol_text import GLYME, two_cells
from tests.support.rig_process import ROOT, count, query, rig, rig_cmd, stop, wait_for


def _start(tmp_path: Path, cycles: int) -> tuple[subprocess.Popen, Path]:
    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells("steer", q="1 mAh/cm^2", cycles=cycles,
                                  cells=(("G1", GLYME), ("G2", GLYME))))
    db = tmp_path / "store.db"
    proc = subprocess.Popen(rig_cmd("run", str(protocol), "--db", str(db)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, db


BAD_COMMANDS = ["shutdown", "PAUSE", "", "abort'; DROP TABLE runs; --", b"\x00\xffblob"]


def test_unknown_commands_are_refused_and_logged_and_pause_and_abort_still_work(tmp_path):
    proc, db = _start(tmp_path, cycles=5000)
    try:
        wait_for(lambda: count(db, "SELECT count(*) FROM samples") > 100)
        key, run_id = query(db, "SELECT key, id FROM runs")[0]
        conn = sqlite3.connect(db, timeout=10)
        with conn:
            for text in BAD_COMMANDS:
                conn.execute("INSERT INTO commands (run_key, channel, command, issued_at) "
                             "VALUES (?, NULL, ?, ?)", (key, text, time.time()))
        conn.close()
        wait_for(lambda: count(db, "SELECT count(*) FROM events WHERE kind = "
                                   "'command_refused'") == len(BAD_COMMANDS), timeout=30)
        paused = rig("pause", run_id, "--channel", "0", "--db", str(db))
        assert paused.returncode == 0, paused.stderr
        wait_for(lambda: query(db, "SELECT status FROM channels WHERE channel = 0")[0][0]
                 == "paused", timeout=30)
        aborted = rig("abort", run_id, "--db", str(db))
        assert aborted.returncode == 0, aborted.stderr
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 1  # ended early: aborted, never a quiet "completed"
    assert query(db, "SELECT status FROM runs")[0][0] == "aborted"
    results = [r[0] for r in query(db, "SELECT result FROM commands ORDER BY id")]
    assert all(r.startswith("refused: unknown command") for r in results[:len(BAD_COMMANDS)])
    assert query(db, "SELECT count(*) FROM events WHERE kind = 'engine_error' OR "
                     "kind = 'run_failed'")[0][0] == 0


def test_steering_a_completed_run_is_refused_with_its_status(tmp_path):
    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells("done", cycles=1))
    db = tmp_path / "s.db"
    assert rig("run", str(protocol), "--db", str(db)).returncode == 0
    for command in ("pause", "abort", "resume"):
        out = rig(command, "latest", "--db", str(db))
        assert out.returncode == 2, out.stdout
        assert "status completed" in out.stderr and "acts on it" not in out.stdout
    assert query(db, "SELECT count(*) FROM commands")[0][0] == 0


def test_pausing_a_run_whose_engine_died_says_so(tmp_path):
    proc, db = _start(tmp_path, cycles=5000)
    try:
        wait_for(lambda: count(db, "SELECT count(*) FROM samples") > 100)
        run_id = query(db, "SELECT id FROM runs")[0][0]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    out = rig("pause", run_id, "--db", str(db))
    assert out.returncode == 2
    assert "no live engine" in out.stderr and f"rig resume {run_id}" in out.stderr
    aborted = rig("abort", run_id, "--db", str(db))
    assert aborted.returncode == 0 and "outputs switched off" in aborted.stdout
    assert query(db, "SELECT status FROM runs")[0][0] == "aborted"
