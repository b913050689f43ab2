"""A run: one plan on the channels of one station, from the store's first row to its status.

The engine owns time and decisions: one task per channel, a heartbeat, and the writer (a thread
owned by the store) that makes it all durable.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from protocols.plan import Plan
from rig import __version__
from rig.clock import RealClock, VirtualClock
from rig.engine.channel import ChannelRunner
from rig.engine.context import NoProgress, RunContext
from rig.engine.sensors import SensorHub
from rig.station import Station
from rig.store import (
    RunWriter,
    StoreError,
    mark_command_handled,
    new_run_id,
    open_reader,
    pending_commands,
)


@dataclass
class RunResult:
    run_id: str
    run_key: int
    status: str
    reasons: dict[int, str]

    @property
    def exit_code(self) -> int:
        if any(r == "instrument_fault" for r in self.reasons.values()):
            return 3
        return 0 if self.status == "completed" else 1


HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_STALE_S = 15.0  # a run whose heartbeat is older than this has no live engine


VIRTUAL_SENSOR_FLOOR_S = 600.0


async def execute(plan: Plan, *, station: Station, clock: RealClock | VirtualClock,
                  writer: RunWriter, protocol_text: str, protocol_path: str,
                  progress: Any = None, run_id: str | None = None,
                  sensor_floor_s: float | None = None) -> RunResult:
    """Run ``plan`` on ``station`` (already opened) and record everything through ``writer``."""
    progress = progress or NoProgress()
    run_id = run_id or new_run_id(time.time())
    run_key = writer.create_run(
        run_id=run_id, name=plan.name, kind=plan.kind, protocol_path=protocol_path,
        protocol_text=protocol_text, plan_json=plan.to_json(),
        station_json=json.dumps(station.describe()), software_version=__version__,
        started_at=clock.now(), clock=station.clock_name(clock),
    )
    ctx = context_for(plan, clock=clock, writer=writer, run_key=run_key, run_id=run_id,
                      progress=progress, pressure_sensors=pressure_sensors_of(station),
                      sensor_floor_s=default_sensor_floor(clock, sensor_floor_s))
    runners = []
    for cp in plan.channels:
        hw = station.channel(cp.cell.channel)
        writer.add_channel(run_key, cp.cell, hw.instrument)
        runners.append(ChannelRunner(ctx, cp, hw.driver, hw.link))
    writer.event(run_key, None, clock.now(), "info", "run_start",
                 f"run {run_id} started: {plan.name} on {len(runners)} channel(s), "
                 f"pid {os.getpid()} on {socket.gethostname()}")
    progress.run_started(run_id, plan)
    return await drive(ctx, runners, plan, station=station)


def default_sensor_floor(clock: RealClock | VirtualClock, asked: float | None) -> float:
    if asked is not None:
        return asked
    return VIRTUAL_SENSOR_FLOOR_S if clock.is_virtual else 0.0


def pressure_sensors_of(station: Station) -> dict[int, str]:
    return {s.channel: s.name for s in getattr(station, "sensors", []) or []
            if s.kind == "pressure" and s.channel is not None}


def context_for(plan: Plan, **kw: Any) -> RunContext:
    return RunContext(safety=plan.safety, failure=plan.failure, outcome=plan.outcome,
                      parameters=plan.parameters, **kw)


async def drive(ctx: RunContext, runners: list[ChannelRunner], plan: Plan,
                already: dict[int, str] | None = None, station: Station | None = None
                ) -> RunResult:
    """Run the channel tasks with the heartbeat, the command poller and the station's sensors
    (and their interlocks); record the end."""
    writer, clock, run_key = ctx.writer, ctx.clock, ctx.run_key
    sensors = SensorHub(ctx, station, runners).tasks()
    background = [asyncio.create_task(_heartbeat(writer, run_key)),
                  asyncio.create_task(_poll_commands(ctx, runners)), *sensors]
    left = [len(runners)]

    async def participate(runner: ChannelRunner) -> str:
        with clock.participant():
            try:
                return await runner.run()
            finally:
                left[0] -= 1
                if not left[0]:  # the last channel ended: the sensors stop at this very time
                    for task in sensors:
                        task.cancel()

    try:
        reasons_list = await asyncio.gather(*(participate(r) for r in runners))
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    reasons = dict(already or {})
    reasons.update({r.channel: reason for r, reason in zip(runners, reasons_list)})
    reasons = dict(sorted(reasons.items()))
    # an end:<name> of the protocol is its planned result only if the plan lists it
    planned = {"completed", *plan.expected_ends}
    if all(r in planned for r in reasons.values()):
        status = "completed"
    elif all(r == "aborted" for r in reasons.values()):
        status = "aborted"
    else:
        status = "ended_early"
    ended = [f"ch{c}: {r}" for c, r in reasons.items() if r not in planned]
    writer.run_status(run_key, status, end_reason="; ".join(ended) or None, ended_at=clock.now())
    writer.event(run_key, None, clock.now(), "info", "run_end", f"run {ctx.run_id} {status}")
    writer.flush()
    return RunResult(ctx.run_id, run_key, status, reasons)


async def _heartbeat(writer: RunWriter, run_key: int, every_s: float = HEARTBEAT_EVERY_S) -> None:
    """Wall-clock heartbeat: how `rig resume` tells a live run from a dead one."""
    while True:
        writer.heartbeat(run_key, time.time())
        await asyncio.sleep(every_s)


async def _poll_commands(ctx: RunContext, runners: list[ChannelRunner],
                         every_s: float = 0.25) -> None:
    """Pause/resume/abort from other processes, through the store's commands table; acted on
    within a second of wall time. Every command becomes an event."""
    by_channel = {r.channel: r for r in runners}
    path = ctx.writer.path
    conn = open_reader(path)
    try:
        while True:
            await asyncio.sleep(every_s)
            try:
                pending = pending_commands(conn, ctx.run_key)
            except StoreError:
                continue  # busy store: try again next time
            for cmd in pending:
                result = _apply_command(cmd, by_channel)
                if mark_command_handled(path, cmd["id"], result):
                    where = "run" if cmd["channel"] is None else f"channel {cmd['channel']}"
                    ctx.writer.event(ctx.run_key, cmd["channel"], ctx.clock.now(),
                                     "warning" if cmd["command"] == "abort" else "info",
                                     "command", f"{cmd['command']} ({where}): {result}")
    finally:
        conn.close()


def _apply_command(cmd: dict[str, Any], by_channel: dict[int, ChannelRunner]) -> str:
    if cmd["channel"] is None:
        targets = list(by_channel.values())
    elif cmd["channel"] in by_channel:
        targets = [by_channel[cmd["channel"]]]
    else:
        return f"ignored: no channel {cmd['channel']} in this run"
    live = [r for r in targets if r.state.status != "ended"]
    if not live:
        return "ignored: already ended"
    for r in live:
        r.request(cmd["command"])
    return {"pause": "pausing", "resume": "resuming", "abort": "aborting"}[cmd["command"]] + \
        " " + ", ".join(f"ch{r.channel}" for r in live)
