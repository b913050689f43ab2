"""`rig run --detach`: the run goes on in its own session, survives its parent's SIGHUP (the
terminal closing) and completes; `rig resume --all` takes over what a crash left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.protocol_text import GLYME, two_cells
from tests.support.rig_process import ROOT, as_from_a_terminal, count, query, rig, wait_for

# the waits inside give the clear messages; this is only the last resort
pytestmark = pytest.mark.timeout(600)


def test_a_detached_run_survives_its_parents_sighup_and_completes(tmp_path):
    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells("detached", q="0.5 mAh/cm^2", cycles=40,
                                  cells=(("G1", GLYME), ("G2", GLYME))))
    db = tmp_path / "s.db"
    # a "terminal": a shell in its own session that starts the detached run, then is hung up
    shell = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -m rig.cli run {protocol} --db {db} --detach; "
                     "echo started; sleep 600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=as_from_a_terminal)
    try:
        line = wait_for(lambda: shell.stdout.readline(), timeout=60)
        assert line.startswith("run "), line
        run_id = line.split()[1]
        os.killpg(shell.pid, signal.SIGHUP)  # the terminal closes
        shell.wait(timeout=30)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == -signal.SIGHUP
    status = wait_for(lambda: (query(db, "SELECT status FROM runs WHERE id = ?", run_id)
                               or [[None]])[0][0] not in (None, "running") and
                      query(db, "SELECT status FROM runs WHERE id = ?", run_id)[0][0],
                      timeout=180, every=0.2)
    assert status == "completed"
    # the engine stores the run's status first, then prints its summary line to the log
    log = db.parent / f"narig-{run_id}.log"
    summary = wait_for(lambda: log.exists() and next(
        (ln for ln in log.read_text().splitlines() if ln.startswith(f"run {run_id} completed")),
        None), timeout=60, every=0.2)
    assert "2 channel(s)" in summary


def test_resume_all_takes_over_every_run_left_without_an_engine(tmp_path):
    protocol = tmp_path / "p.toml"
    # 57,600 samples: the first commit (20,000 rows or 0.5 s) comes well before the end
    protocol.write_text(two_cells("crash", q="0.2 mAh/cm^2", cycles=200,
                                  cells=(("G1", GLYME), ("G2", GLYME))))
    db = tmp_path / "s.db"
    for _ in range(2):
        before = count(db, "SELECT count(*) FROM runs")
        proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "run", str(protocol),
                                 "--db", str(db)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: count(db, "SELECT count(*) FROM runs") > before
                 and count(db, "SELECT count(*) FROM samples WHERE run_key = (SELECT max(key) "
                              "FROM runs)") > 20, every=0.01)
        proc.kill()  # a crash: SIGKILL, no cleanup
        proc.wait(timeout=10)
    assert [r[0] for r in query(db, "SELECT status FROM runs")] == ["running", "running"]
    out = rig("resume", "--all", "--db", str(db), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("resuming run") == 2
    assert [r[0] for r in query(db, "SELECT status FROM runs")] == ["completed", "completed"]
    again = rig("resume", "--all", "--db", str(db))
    assert again.returncode == 0 and "nothing to resume" in again.stdout
