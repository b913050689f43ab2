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
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols.plan import CellSpec, Plan, Safety
from rig import __version__
from rig.clock import RealClock, VirtualClock
from rig.engine.channel import ChannelRunner
from rig.station import Station
from rig.store import RunWriter, new_run_id


class Progress(Protocol):
    """What the engine tells whoever shows the run (the CLI, tests). Must be cheap."""

    def run_started(self, run_id: str, plan: Plan) -> None: ...
    def channel_started(self, channel: int, cell: CellSpec) -> None: ...
    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None: ...
    def sample(self, channel: int, t: float, e: float, i: float) -> None: ...
    def channel_ended(self, channel: int, reason: str) -> None: ...


class NoProgress:
    def run_started(self, run_id: str, plan: Plan) -> None: ...
    def channel_started(self, channel: int, cell: CellSpec) -> None: ...
    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None: ...
    def sample(self, channel: int, t: float, e: float, i: float) -> None: ...
    def channel_ended(self, channel: int, reason: str) -> None: ...


@dataclass
class RunContext:
    clock: RealClock | VirtualClock
    writer: RunWriter
    run_key: int
    run_id: str
    safety: Safety
    progress: Any = field(default_factory=NoProgress)
    # how often a channel reads its instrument, in clock seconds: on hardware often enough to
    # react; on the virtual clock in batches (the instrument's own cutoffs act in between)
    read_every_s: float = 1.0
    virtual_batch: int = 32

    def read_window(self, interval_s: float) -> float:
        if self.clock.is_virtual:
            return max(interval_s * self.virtual_batch, self.read_every_s)
        return min(interval_s, self.read_every_s)


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


END_STATUS_COMPLETED = "completed"


async def execute(plan: Plan, *, station: Station, clock: RealClock | VirtualClock,
                  writer: RunWriter, protocol_text: str, protocol_path: str,
                  progress: Any = None, run_id: str | None = None) -> RunResult:
    """Run ``plan`` on ``station`` (already opened) and record everything through ``writer``."""
    progress = progress or NoProgress()
    run_id = run_id or new_run_id(time.time())
    run_key = writer.create_run(
        run_id=run_id, name=plan.name, kind=plan.kind, protocol_path=protocol_path,
        protocol_text=protocol_text, plan_json=plan.to_json(),
        station_json=json.dumps(station.describe()), software_version=__version__,
        started_at=clock.now(), clock=station.clock_name(clock),
    )
    ctx = RunContext(clock=clock, writer=writer, run_key=run_key, run_id=run_id,
                     safety=plan.safety, progress=progress)
    runners = []
    for cp in plan.channels:
        hw = station.channel(cp.cell.channel)
        writer.add_channel(run_key, cp.cell, hw.instrument)
        runners.append(ChannelRunner(ctx, cp, hw.driver, hw.link))
    writer.event(run_key, None, clock.now(), "info", "run_start",
                 f"run {run_id} started: {plan.name} on {len(runners)} channel(s), "
                 f"pid {os.getpid()} on {socket.gethostname()}")
    progress.run_started(run_id, plan)
    heartbeat = asyncio.create_task(_heartbeat(writer, run_key))
    try:
        reasons_list = await asyncio.gather(*(_participate(clock, r) for r in runners))
    finally:
        heartbeat.cancel()
    reasons = {r.channel: reason for r, reason in zip(runners, reasons_list)}
    status = "completed" if all(r == "completed" for r in reasons.values()) else "ended_early"
    ended = [f"ch{c}: {r}" for c, r in reasons.items() if r != "completed"]
    writer.run_status(run_key, status, end_reason="; ".join(ended) or None, ended_at=clock.now())
    writer.event(run_key, None, clock.now(), "info", "run_end", f"run {run_id} {status}")
    writer.flush()
    return RunResult(run_id, run_key, status, reasons)


async def _participate(clock: RealClock | VirtualClock, runner: ChannelRunner) -> str:
    with clock.participant():
        return await runner.run()


async def _heartbeat(writer: RunWriter, run_key: int, every_s: float = 2.0) -> None:
    """Wall-clock heartbeat: how `rig resume` tells a live run from a dead one."""
    while True:
        writer.heartbeat(run_key, time.time())
        await asyncio.sleep(every_s)
