"""SIGTERM, SIGHUP, SIGINT while `rig run` runs: every output off, the run marked
'interrupted' with an event naming the signal, exit 4, and `rig resume` continues it from its
checkpoint — also with instruments that outlive the engine (served by this test process, so
their outputs can be watched after the engine is gone), where the resumed xN clock continues
from the run's last time."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from rig.analysis.cycles import per_cycle
from rig.lifecycle import EXIT_INTERRUPTED
from rig.store import get_events, get_steps, open_reader
from tests.support.protocol_text import GLYME, two_cells
from tests.support.rig_process import (ROOT, as_from_a_terminal, count, query, rig, rig_cmd,
                                       stop, wait_for)


def _protocol(tmp_path: Path, cycles: int, q: str) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(two_cells("signals", q=q, cycles=cycles, cells=(("G1", GLYME), ("G2", GLYME))))
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_switches_outputs_off_marks_the_run_interrupted_and_it_resumes(tmp_path, sig):
    cycles = 80  # long enough that the signal always lands while it runs
    db = tmp_path / "s.db"
    proc = subprocess.Popen(rig_cmd("run", str(_protocol(tmp_path, cycles, "0.5 mAh/cm^2")),
                                    "--db", str(db)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    try:
        wait_for(lambda: count(db, "SELECT count(*) FROM samples") > 300, every=0.01)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == EXIT_INTERRUPTED, stdout + stderr
    assert "interrupted" in stdout and f"rig resume" in stderr
    run_id, status, reason = query(db, "SELECT id, status, end_reason FROM runs")[0]
    assert status == "interrupted" and sig.name in reason
    event = query(db, "SELECT message FROM events WHERE kind = 'interrupted'")[0][0]
    assert sig.name in event and "every output switched off" in event

    out = rig("resume", run_id, "--db", str(db), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        assert conn.execute("SELECT status FROM runs").fetchone()[0] == "completed"
        for ch in (0, 1):
            done = per_cycle(get_steps(conn, key, ch))
            assert [c["cycle"] for c in done] == list(range(1, cycles + 1))
            for c in done:  # the interrupted half-cycle still passed what it owed
                assert c["plated_C"] / 3.6 == pytest.approx(0.5 * 1.13, rel=0.01)
                assert c["stripped_C"] / 3.6 == pytest.approx(0.5 * 1.13, rel=0.01)
        assert any(e["kind"] == "resumed_after_crash" for e in get_events(conn, key))


def under_nohup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_under_nohup_the_terminal_hanging_up_leaves_the_run_going_to_its_end(tmp_path):
    """`nohup rig run ... &` asks for the run to outlive its terminal: SIGHUP stays ignored."""
    db = tmp_path / "s.db"
    proc = subprocess.Popen(rig_cmd("run", str(_protocol(tmp_path, 80, "0.5 mAh/cm^2")),
                                    "--db", str(db)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=under_nohup)
    try:
        wait_for(lambda: count(db, "SELECT count(*) FROM samples") > 300, every=0.01)
        proc.send_signal(signal.SIGHUP)  # the terminal closes
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 0, stdout + stderr
    assert query(db, "SELECT status FROM runs")[0][0] == "completed"
    assert count(db, "SELECT count(*) FROM events WHERE kind = 'interrupted'") == 0


def test_sigterm_leaves_instruments_that_outlive_the_engine_off_and_resume_keeps_time_going(
        tmp_path):
    from protocols import load_protocol
    from rig.clock import RealClock
    from rig.sim.serve import SimulatedInstruments, builtin_station_data

    speed = 100
    protocol = _protocol(tmp_path, 6, "0.02 mAh/cm^2")
    plan = load_protocol(protocol).plan
    sims = SimulatedInstruments(builtin_station_data(plan), plan, RealClock(speed=speed), 0)
    potentiostats = [s for s in sims.simulators if hasattr(s, "output_on")]
    assert len(potentiostats) == 2
    station = tmp_path / "station.toml"
    station.write_text(sims.text)
    db = tmp_path / "s.db"
    try:
        proc = subprocess.Popen(rig_cmd("run", str(protocol), "--station", str(station),
                                        "--db", str(db), "--clock", f"x{speed}"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: count(db, "SELECT count(*) FROM steps") >= 2
                     and all(p.output_on for p in potentiostats), timeout=60, every=0.01)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            stop(proc)
        assert proc.returncode == EXIT_INTERRUPTED, stdout + stderr
        # the engine is gone; the instruments are not: nothing is left driving a cell
        assert [p.output_on for p in potentiostats] == [False, False]
        run_id = query(db, "SELECT id FROM runs")[0][0]
        out = rig("resume", run_id, "--db", str(db), "--station", str(station), timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert [p.output_on for p in potentiostats] == [False, False]
    finally:
        sims.close()
    for ch in (0, 1):
        times = [r[0] for r in query(db, "SELECT t FROM samples WHERE channel = ? ORDER BY "
                                         "rowid", ch)]
        backwards = [(a, b) for a, b in zip(times, times[1:]) if b < a]
        assert not backwards, f"ch{ch}: samples went back in time: {backwards[:3]}"
    assert query(db, "SELECT status FROM runs")[0][0] == "completed"
