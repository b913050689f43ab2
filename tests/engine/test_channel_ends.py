"""How a channel leaves its cell when it ends, and what a resumed step remembers of its start
(issue 9 items 3 and 7, the channel's part)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from protocols import parse_protocol
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter, get_steps, open_reader
from tests.support.protocol_text import GLYME, two_cells
from tests.support.rig_process import ROOT, query, rig_cmd, start_run, wait_for


def test_a_keithley_channel_that_completes_is_left_with_its_output_off(tmp_path: Path) -> None:
    text = two_cells("off at the end", cycles=1, cells=(("G1", GLYME), ("G2", GLYME)))
    plan = parse_protocol(text, "test.toml")
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=1, keithley_channels=[1])
    writer = RunWriter(tmp_path / "store.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=text, protocol_path="test.toml"))
        assert result.reasons == {0: "completed", 1: "completed"}
        # asked of the instrument itself, before the station is closed
        keithley = station.channel(1)
        assert keithley.link.call_blocking(keithley.driver.output_is_on) is False
    finally:
        station.close()
        writer.close()


def test_a_resumed_step_keeps_the_time_it_started(tmp_path: Path) -> None:
    proc, db = start_run(tmp_path, cycles=1000, q="5 mAh/cm^2")  # 5-h steps: killed mid-step
    try:
        wait_for(lambda: (query(db, "SELECT count(*) FROM samples WHERE channel = 0") or [[0]])
                 [0][0] > 300, timeout=60, every=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    interrupted = query(db, "SELECT max(step) FROM samples WHERE channel = 0")[0][0]
    assert not query(db, "SELECT * FROM steps WHERE channel = 0 AND step = ?", interrupted)
    first_t = query(db, "SELECT min(t) FROM samples WHERE channel = 0 AND step = ?",
                    interrupted)[0][0]
    run_id = query(db, "SELECT id FROM runs")[0][0]
    resumed = subprocess.Popen(rig_cmd("resume", run_id, "--db", str(db)), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # let channel 0 finish the interrupted step, then stop the run
        wait_for(lambda: query(db, "SELECT * FROM steps WHERE channel = 0 AND step = ?",
                               interrupted), timeout=60)
        subprocess.run(rig_cmd("abort", run_id, "--db", str(db)), cwd=ROOT, timeout=30)
        resumed.wait(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    with open_reader(db) as conn:
        key = conn.execute("SELECT key FROM runs").fetchone()[0]
        step = next(s for s in get_steps(conn, key, 0) if s["step"] == interrupted)
    # the step began before its first sample, not when the run was taken over
    assert step["t_start"] < first_t
    last_t = query(db, "SELECT max(t) FROM samples WHERE channel = 0 AND step = ?",
                   interrupted)[0][0]
    assert step["t_end"] - step["t_start"] >= last_t - first_t
