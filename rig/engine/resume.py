"""Taking over a run whose engine died (kill -9, power loss): `rig resume RUN`.

Outputs are forced off first, the gap is logged, and each channel continues from its last
committed checkpoint with loop counters, cycle number and step number intact. A half-cycle
interrupted mid-way completes the charge it still owes, read back from its committed samples.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from typing import Any

from drivers.base import InstrumentError
from protocols.plan import Plan, plan_from_json
from rig.clock import RealClock, VirtualClock
from rig.engine.channel import ChannelRunner, Resume
from rig.engine.judge import StepTotals
from rig.engine.run import (
    HEARTBEAT_STALE_S,
    NoProgress,
    RunResult,
    context_for,
    default_sensor_floor,
    drive,
    pressure_sensors_of,
)
from rig.station import Station
from rig.store import RunWriter, get_channels, get_checkpoint
from rig.store.read import last_sample_time, step_progress


class ResumeRefused(Exception):
    """The run cannot be taken over; the message says why."""


def check_takeover(run: dict[str, Any], now_wall: float | None = None) -> None:
    """Two engines never drive the same run: refuse while the heartbeat is fresh."""
    if run["status"] != "running":
        raise ResumeRefused(f"run {run['id']} is not running (status {run['status']}): "
                            "nothing to resume")
    age = (now_wall or time.time()) - (run["heartbeat_at"] or 0.0)
    if age < HEARTBEAT_STALE_S and not dead_here(run):
        raise ResumeRefused(
            f"run {run['id']} is alive: its engine (pid {run['pid']} on {run['host']}) beat "
            f"{age:.0f} s ago; a run is taken over only when its heartbeat is older than "
            f"{HEARTBEAT_STALE_S:.0f} s")


def dead_here(run: dict[str, Any]) -> bool:
    """The run's engine was on this host and its process is gone: no need to wait."""
    if run["host"] != socket.gethostname() or not run["pid"]:
        return False
    try:
        os.kill(run["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(run["pid"])


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def resume_point(conn: sqlite3.Connection, run_key: int, channel: int) -> Resume | None:
    """Where the channel continues: its checkpoint, and for an unfinished step what it had
    done — the totals stored with the checkpoint plus the samples committed after it (none
    counted while the step was held at open circuit by a pause)."""
    cp = get_checkpoint(conn, run_key, channel)
    if cp is None:
        return None
    st = cp["state"]
    base = StepTotals(**st["totals"]) if st.get("totals") else StepTotals()
    totals = base
    if not st["step_done"] and not st.get("holding"):
        done = step_progress(conn, run_key, channel, st["step_no"], t_after=cp["t"])
        if done is not None:
            active = max(done["t_last"] - cp["t"], 0.0)
            totals = StepTotals(q=done["q"], e_abs_dt=base.e_abs_dt + done["mean_abs_e"] * active,
                                t_active=base.t_active + active, n=base.n + done["n"],
                                e_end=done["e"])
    return Resume(path=tuple(st["path"]), loop_iterations=tuple(st["loop_iterations"]),
                  cycle=st["cycle"], step_no=st["step_no"], step_done=st["step_done"],
                  totals=totals, then=st.get("then", "next"), memory=st.get("memory") or {},
                  # a checkpoint from before t_start was stored: the step's first one is close
                  t_start=st.get("t_start", cp["t"]))


def last_time(conn: sqlite3.Connection, run_key: int) -> float:
    return last_sample_time(conn, run_key) or 0.0


def load_plan(run: dict[str, Any]) -> Plan:
    return plan_from_json(run["plan_json"])


async def take_over(run: dict[str, Any], conn: sqlite3.Connection, *, station: Station,
                    clock: RealClock | VirtualClock, writer: RunWriter,
                    progress: Any = None) -> RunResult:
    """Continue a dead run on ``station``: outputs off, the gap logged, channels resumed."""
    progress = progress or NoProgress()
    plan = load_plan(run)
    run_key = run["key"]
    writer.adopt_run(run_key)
    for hw in station.channels.values():  # whatever the dead engine left on: off
        try:
            await hw.link.call(hw.driver.output_off)
        except InstrumentError:
            pass
    gap_from = last_time(conn, run_key)
    writer.event(run_key, None, clock.now(), "warning", "resumed_after_crash",
                 f"run {run['id']} taken over by pid {os.getpid()} on {socket.gethostname()}: "
                 f"outputs forced off; no data from t={gap_from:.0f} to {clock.now():.0f} "
                 f"({clock.now() - gap_from:.0f} s gap)")
    ctx = context_for(plan, clock=clock, writer=writer, run_key=run_key, run_id=run["id"],
                      progress=progress, pressure_sensors=pressure_sensors_of(station),
                      sensor_floor_s=default_sensor_floor(clock, None))
    status = {c["channel"]: c for c in get_channels(conn, run_key)}
    runners, already = [], {}
    progress.run_started(run["id"], plan)
    for cp in plan.channels:
        ch = cp.cell.channel
        if status.get(ch, {}).get("status") == "ended":
            already[ch] = status[ch]["end_reason"]
            continue
        hw = station.channel(ch)
        runner = ChannelRunner(ctx, cp, hw.driver, hw.link)
        point = resume_point(conn, run_key, ch)
        if point is not None:
            runner.resume = point
            runner.state.cycle = point.cycle
            runner.restore(point.memory)
            # an unfinished step continues under its own number
            runner.state.step_no = point.step_no - (0 if point.step_done else 1)
        runners.append(runner)
    return await drive(ctx, runners, plan, already, station=station)
