"""Steering a run from another process (pause, resume, abort through the store's commands
table) and surviving a crash (SIGKILL, then `rig resume`)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rig.analysis.cycles import per_cycle
from rig.store import get_channels, get_events, get_steps, open_reader
from tests.support.rig_process import control_protocol, rig_cmd, start_run, wait_for

ROOT = Path(__file__).resolve().parents[2]

def query(db: Path, sql: str, *params):
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def channel_status(db: Path, channel: int) -> str | None:
    rows = query(db, "SELECT status FROM channels WHERE channel = ?", channel)
    return rows[0][0] if rows else None


def test_pause_resume_abort_from_another_process(tmp_path):
    proc, db = start_run(tmp_path, cycles=5000)
    try:
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples") or [[0]])[0][0] > 100)
        run_id = query(db, "SELECT id FROM runs")[0][0]
        env = {**os.environ}
        out = subprocess.run(rig_cmd("pause", run_id, "--channel", "0", "--db", str(db)),
                             cwd=ROOT, capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: channel_status(db, 0) == "paused", timeout=10)
        assert channel_status(db, 1) == "running"  # the other channel carries on
        # paused: held at open circuit, and data keeps flowing
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples WHERE channel = 0 AND i = 0")
                          or [[0]])[0][0] > 5, timeout=10)
        out = subprocess.run(rig_cmd("resume", run_id, "--channel", "0", "--db", str(db)),
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: channel_status(db, 0) == "running", timeout=10)
        out = subprocess.run(rig_cmd("abort", run_id, "--db", str(db)), cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1  # ended early: aborted
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        assert {c["end_reason"] for c in get_channels(conn, key)} == {"aborted"}
        kinds = [(e["kind"], e["message"]) for e in get_events(conn, key)]
    commands = [m for k, m in kinds if k == "command"]
    assert len(commands) == 3
    assert commands[0].startswith("pause (channel 0)") and commands[2].startswith("abort (run)")
    assert any(k == "paused" for k, _ in kinds) and any(k == "resumed" for k, _ in kinds)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_run_killed_at_a_random_moment_resumes_and_completes(tmp_path, seed):
    # 72,000 samples: the writer commits every 20,000 rows or 0.5 s, so the kill lands after a
    # commit somewhere in the first half of the run, with ~1 s of the engine's work still to do
    cycles = 100
    proc, db = start_run(tmp_path, cycles=cycles, q="0.5 mAh/cm^2")
    rng = random.Random(seed)
    threshold = rng.randint(5_000, 35_000)  # samples committed before the kill
    try:
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples") or [[0]])[0][0] > threshold,
                 timeout=60, every=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before = query(db, "SELECT channel, t, e, i, q FROM samples ORDER BY channel, t")
    assert before, "nothing was committed before the kill"
    run_id = query(db, "SELECT id FROM runs")[0][0]

    out = subprocess.run(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr

    after = set(query(db, "SELECT channel, t, e, i, q FROM samples"))
    assert set(before) <= after  # nothing committed before the kill is lost
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    planned_mAh = 0.5 * 1.13
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "completed"
        for ch in (0, 1):
            cycles_done = per_cycle(get_steps(conn, key, ch))
            assert [c["cycle"] for c in cycles_done] == list(range(1, cycles + 1))
            for c in cycles_done:  # an interrupted half-cycle still passed what it owed
                assert c["plated_C"] / 3.6 == pytest.approx(planned_mAh, rel=0.01)
                assert c["stripped_C"] / 3.6 == pytest.approx(planned_mAh, rel=0.01)
        assert any(e["kind"] == "resumed_after_crash" for e in get_events(conn, key))


def test_resume_of_a_live_run_is_refused_for_takeover_and_sent_as_unpause(tmp_path):
    proc, db = start_run(tmp_path, cycles=5000)
    try:
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples") or [[0]])[0][0] > 10)
        run_id = query(db, "SELECT id FROM runs")[0][0]
        out = subprocess.run(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "resume sent" in out.stdout  # a live run: un-pause only
        assert "is alive" in out.stdout and "not taking it over" in out.stdout
        subprocess.run(rig_cmd("abort", run_id, "--db", str(db)), cwd=ROOT, timeout=30)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = subprocess.run(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not running" in out.stderr


def test_a_run_on_a_station_file_is_taken_over_on_the_same_instruments(tmp_path):
    """Hardware-like: the instruments live in another process (`rig sim serve`) and outlive
    the engine. After kill -9, `rig resume` reopens the run's station file, forces the outputs
    off and completes the plan on the same cells."""
    protocol = tmp_path / "p.toml"
    protocol.write_text(control_protocol(3, "0.2 mAh/cm^2"))
    station_file, db = tmp_path / "st.toml", tmp_path / "store.db"
    server = subprocess.Popen(rig_cmd("sim", "serve", "--protocol", str(protocol), "--out",
                                      str(station_file), "--clock", "x600"),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(station_file.exists, timeout=30)
        proc = subprocess.Popen(rig_cmd("run", str(protocol), "--station", str(station_file),
                                        "--db", str(db), "--clock", "x600"),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples") or [[0]])[0][0] > 60,
                 timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        run_id = query(db, "SELECT id FROM runs")[0][0]
        out = subprocess.run(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        for ch in (0, 1):
            assert [c["cycle"] for c in per_cycle(get_steps(conn, key, ch))] == [1, 2, 3]
        assert any(e["kind"] == "resumed_after_crash" for e in get_events(conn, key))


def test_a_crash_during_a_pause_resumes_with_the_charge_the_step_had_passed(tmp_path):
    proc, db = start_run(tmp_path, cycles=5000, q="1 mAh/cm^2")
    try:
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples WHERE channel = 0") or [[0]])
                 [0][0] > 100, every=0.01)
        run_id = query(db, "SELECT id FROM runs")[0][0]
        subprocess.run(rig_cmd("pause", run_id, "--channel", "0", "--db", str(db)), cwd=ROOT,
                       capture_output=True, timeout=30)
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples WHERE channel = 0 AND i = 0")
                          or [[0]])[0][0] > 20, timeout=20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    paused_step = query(db, "SELECT max(step) FROM samples WHERE channel = 0")[0][0]
    resumed = subprocess.Popen(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # let channel 0 finish the paused half-cycle and a few more, then stop the run
        wait_for(lambda: (query(db, "SELECT count(*) FROM steps WHERE channel = 0 AND step > ?",
                                paused_step) or [[0]])[0][0] >= 4, timeout=60)
        subprocess.run(rig_cmd("abort", run_id, "--db", str(db)), cwd=ROOT, timeout=30)
        resumed.wait(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        steps = [s for s in get_steps(conn, key, 0) if s["end_reason"] == "charge"]
    assert any(s["step"] == paused_step for s in steps)  # the paused step was completed
    for s in steps:  # ... neither losing nor repeating the charge it had passed
        assert abs(s["charge_C"]) / 3.6 == pytest.approx(1.13, rel=0.01)
