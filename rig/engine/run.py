"""A run: one plan on the channels of one station, from the store's first row to its status.

The engine owns time and decisions: one task per channel, a heartbeat, and the writer (a thread
owned by the store) that makes it all durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from protocols.plan import Plan
from rig import __version__, stop_signals
from rig.lifecycle import (
    EXIT_EARLY,
    EXIT_FAULT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    HEARTBEAT_EVERY_S,
    HEARTBEAT_STALE_S,
)
from rig.clock import RealClock, VirtualClock
from rig.engine.channel import ChannelRunner
from rig.engine.context import NoProgress, RunContext
from rig.engine.sensors import SensorHub
from rig.events import EventKind
from rig.station import Station
from rig.store import (
    COMMANDS,
    RunWriter,
    StoreError,
    WriterError,
    mark_command_handled,
    new_run_id,
    open_reader,
    pending_commands,
)

log = logging.getLogger("rig.engine")
__all__ = ["HEARTBEAT_EVERY_S", "HEARTBEAT_STALE_S", "RunResult", "Stop", "drive", "execute"]


@dataclass
class RunResult:
    run_id: str
    run_key: int
    status: str
    reasons: dict[int, str]
    message: str | None = None  # what the store could not record, said to the person instead

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        if self.status == "failed" or any(r == "instrument_fault"
                                          for r in self.reasons.values()):
            return EXIT_FAULT
        return EXIT_OK if self.status == "completed" else EXIT_EARLY


@dataclass(frozen=True)
class Stop:
    """Why a run must stop now, every channel at once: a signal, or a fault of the run itself
    (the store failed, a background task died)."""

    kind: str     # "signal" | "store" | "task"
    detail: str
    signal_name: str | None = None


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
    writer.event(run_key, None, clock.now(), "info", EventKind.RUN_START,
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
    (and their interlocks); record the end.

    Everything is supervised: a failed store commit, a background task that dies, a channel
    task that raises, or SIGTERM/SIGHUP/SIGINT stop the run at once — every output off, the
    reason stored (status 'failed', or 'interrupted' for a signal, which `rig resume`
    continues) — never a run that carries on half-recorded or claims a success."""
    writer, clock, run_key = ctx.writer, ctx.clock, ctx.run_key
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[Stop] = loop.create_future()

    def stop_with(why: Stop) -> None:
        if not stop.done():
            stop.set_result(why)

    def store_failed(err: WriterError) -> None:  # from the writer thread
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop_with, Stop("store", f"the store failed: {err}"))

    def signalled(sig: signal.Signals) -> None:  # in the main thread's signal handler
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop_with, Stop("signal", f"{sig.name} received",
                                                      sig.name))

    unsubscribe = writer.on_failure(store_failed)
    # caught here when the engine has the main thread; an engine in a thread (under the
    # monitor) is told by the main thread's catching (rig.tui.live)
    catching = contextlib.ExitStack()
    catching.enter_context(stop_signals.catching())
    catching.callback(stop_signals.subscribe(signalled))

    def supervise(name: str, task: asyncio.Task) -> asyncio.Task:
        def done(t: asyncio.Task) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                return
            kind = "store" if isinstance(exc, StoreError) else "task"
            if kind == "store":  # the store's failure is reported once, as the run's end
                log.debug("run %s: %s stopped: %r", ctx.run_id, name, exc)
            else:  # a bug of ours: its traceback belongs in the log
                log.error("run %s: %s died: %r", ctx.run_id, name, exc, exc_info=exc)
            stop_with(Stop(kind, f"{name} died: {type(exc).__name__}: {exc}"))
        task.add_done_callback(done)
        return task

    sensors = [supervise(f"sensor poller {k}", t)
               for k, t in enumerate(SensorHub(ctx, station, runners).tasks())]
    background = [supervise("heartbeat", asyncio.create_task(_heartbeat(writer, run_key))),
                  supervise("command poller", asyncio.create_task(_poll_commands(ctx, runners))),
                  *sensors]
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

    tasks = [supervise(f"channel {r.channel}", asyncio.create_task(participate(r)))
             for r in runners]
    try:
        all_done: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        waited: set[asyncio.Future[Any]] = {all_done, stop}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            return await _stop_run(ctx, runners, tasks, background, stop.result(), already)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        unsubscribe()
        catching.close()
    reasons = dict(already or {})
    reasons.update({r.channel: t.result() for r, t in zip(runners, tasks)})
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
    writer.event(run_key, None, clock.now(), "info", EventKind.RUN_END,
                 f"run {ctx.run_id} {status}")
    writer.flush()
    return RunResult(ctx.run_id, run_key, status, reasons)


async def _stop_run(ctx: RunContext, runners: list[ChannelRunner], tasks: list[asyncio.Task],
                    background: list[asyncio.Task], why: Stop,
                    already: dict[int, str] | None) -> RunResult:
    """Every channel stopped and its output switched off, then the end stored if it can be."""
    writer, clock = ctx.writer, ctx.clock
    for task in [*tasks, *background]:
        task.cancel()
    await asyncio.gather(*tasks, *background, return_exceptions=True)
    not_off = []
    for r in runners:  # ended channels too: off is idempotent, and safety is cheap
        try:
            await asyncio.wait_for(r.link.call(r.driver.output_off), timeout=15.0)
        except Exception as exc:  # noqa: BLE001 -- said in the event and on the console
            not_off.append(f"ch{r.channel} ({type(exc).__name__}: {exc})")
    off = ("every output switched off" if not not_off else
           "output off NOT confirmed on " + ", ".join(not_off) + " — check the instruments")
    reasons = dict(already or {})
    for r in runners:
        ended = r.state.end_reason if r.state.status == "ended" else None
        reasons[r.channel] = ended if ended else (
            "interrupted" if why.kind == "signal" else
            "store_failure" if why.kind == "store" else "engine_error")
    reasons = dict(sorted(reasons.items()))
    now = clock.now()
    if why.kind == "signal":
        status = "interrupted"
        text = (f"{why.detail}: {off}; run {ctx.run_id} interrupted at its last checkpoint: "
                f"continue it with: rig resume {ctx.run_id}")
        try:
            writer.event(ctx.run_key, None, now, "alarm" if not_off else "warning",
                         EventKind.INTERRUPTED, text)
            writer.run_status(ctx.run_key, status, end_reason=why.detail, ended_at=now)
            writer.flush()
        except (StoreError, TimeoutError) as exc:
            return RunResult(ctx.run_id, ctx.run_key, status, reasons,
                             f"{text}; but the store could not record it: {exc}")
        return RunResult(ctx.run_id, ctx.run_key, status, reasons, text)
    status = "failed"
    text = f"run {ctx.run_id} failed: {why.detail}; {off}"
    try:
        writer.record_end(ctx.run_key, status, why.detail[:500], now,
                          "store_failure" if why.kind == "store" else "engine_error", "error",
                          EventKind.RUN_FAILED, text)
    except Exception as exc:  # noqa: BLE001 -- the store cannot take even that: say it
        return RunResult(ctx.run_id, ctx.run_key, status, reasons,
                         f"{text}. The store could not record this end ({exc}): "
                         f"`rig show` will still say 'running'; `rig abort {ctx.run_id}` "
                         "once the store is writable marks it")
    return RunResult(ctx.run_id, ctx.run_key, status, reasons, text)


async def _heartbeat(writer: RunWriter, run_key: int, every_s: float = HEARTBEAT_EVERY_S) -> None:
    """Wall-clock heartbeat: how `rig resume` tells a live run from a dead one."""
    while True:
        writer.heartbeat(run_key, time.time())
        await asyncio.sleep(every_s)


async def _poll_commands(ctx: RunContext, runners: list[ChannelRunner],
                         every_s: float = 0.25) -> None:
    """Pause/resume/abort from other processes, through the store's commands table; acted on
    within a second of wall time. Every command becomes an event; one the engine does not know
    (any other text, a blob) is refused and logged, and the poller carries on."""
    by_channel = {r.channel: r for r in runners}
    path = ctx.writer.path
    conn = open_reader(path)
    try:
        while True:
            await asyncio.sleep(every_s)
            try:
                pending = pending_commands(conn, ctx.run_key)
            except (StoreError, sqlite3.OperationalError):
                continue  # busy store: try again next time
            for cmd in pending:
                _handle_command(ctx, cmd, by_channel, path)
    finally:
        conn.close()


def _handle_command(ctx: RunContext, cmd: dict[str, Any], by_channel: dict[int, ChannelRunner],
                    path: Any) -> None:
    command, channel = cmd.get("command"), cmd.get("channel")
    known = isinstance(command, str) and command in COMMANDS
    valid_channel = channel is None or (isinstance(channel, int) and not isinstance(channel, bool))
    if known and valid_channel:
        result = _apply_command(cmd, by_channel)
        level = "warning" if command == "abort" else "info"
        kind = EventKind.COMMAND
    else:
        shown = repr(command)[:80]
        result = (f"refused: unknown command {shown} (known: {', '.join(COMMANDS)})" if not known
                  else f"refused: channel {repr(channel)[:40]} is not a channel number")
        level, kind = "warning", EventKind.COMMAND_REFUSED
    try:
        marked = mark_command_handled(path, cmd["id"], result)
    except (StoreError, sqlite3.Error) as exc:  # the store is busy or failing: next poll
        log.warning("command %s: could not mark it handled: %s", cmd["id"], exc)
        return
    if marked:
        where = "run" if channel is None or not valid_channel else f"channel {channel}"
        text = (f"{command} ({where}): {result}" if known
                else f"command {cmd['id']} ({where}): {result}")
        ctx.writer.event(ctx.run_key, channel if valid_channel else None, ctx.clock.now(),
                         level, kind, text)


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
