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
from rig.clock import RealClock, VirtualClock, make_clock
from rig.engine.channel import ChannelRunner, Resume
from rig.engine.judge import StepTotals
from rig.engine.run import (
    NoProgress,
    RunResult,
    context_for,
    default_sensor_floor,
    drive,
    pressure_sensors_of,
)
from rig.events import EventKind
from rig.lifecycle import (
    HEARTBEAT_STALE_S,
    RESUMABLE_STATUSES,
    dead_here,
    heartbeat_age,
    run_is_alive,
)
from rig.station import Station
from rig.store import RunWriter, get_channels, get_checkpoint
from rig.store.read import last_sample_time, step_progress


__all__ = ["ResumeRefused", "check_takeover", "dead_here", "last_time", "load_plan",
           "resume_point", "resumed_clock", "take_over"]


class ResumeRefused(Exception):
    """The run cannot be taken over; the message says why."""


def check_takeover(run: dict[str, Any], now_wall: float | None = None) -> None:
    """Two engines never drive the same run: refuse while the heartbeat is fresh. An
    interrupted run (its engine stopped on a signal, outputs off) is taken over at once."""
    if run["status"] not in RESUMABLE_STATUSES:
        raise ResumeRefused(f"run {run['id']} is not running (status {run['status']}): "
                            "nothing to resume")
    if run["status"] == "running" and run_is_alive(run, now_wall):
        raise ResumeRefused(
            f"run {run['id']} is alive: its engine (pid {run['pid']} on {run['host']}) beat "
            f"{heartbeat_age(run, now_wall):.0f} s ago; a run is taken over only when its "
            f"heartbeat is older than {HEARTBEAT_STALE_S:.0f} s")


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


def resumed_clock(spec: str, conn: sqlite3.Connection, run: dict[str, Any]
                  ) -> RealClock | VirtualClock:
    """The clock a taken-over run continues on: never behind the run's last recorded time
    (an xN clock ran ahead of the wall; starting it at wall time would send samples back)."""
    origin = max(time.time(), last_time(conn, run["key"]), run.get("started_at") or 0.0)
    if spec == "virtual":
        return VirtualClock(start=origin)
    clock = make_clock(spec, True)
    if isinstance(clock, RealClock) and clock.speed != 1.0:
        return RealClock(speed=clock.speed, start=origin)
    return clock


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
    how = ("interrupted by a signal" if run["status"] == "interrupted"
           else "whose engine died")
    writer.event(run_key, None, clock.now(), "warning", EventKind.RESUMED_AFTER_CRASH,
                 f"run {run['id']} ({how}) taken over by pid {os.getpid()} on "
                 f"{socket.gethostname()}: outputs forced off; no data from t={gap_from:.0f} "
                 f"to {clock.now():.0f} ({clock.now() - gap_from:.0f} s gap)")
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
