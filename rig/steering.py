"""`rig pause | resume | abort`: steering a run honestly.

A live engine is asked through the store's commands table. A run with no live engine is never
told "the engine acts on it": pause and un-pause are refused with what to do instead; `rig
resume` takes it over from its checkpoints; `rig abort` opens the station itself, switches the
run's outputs off and marks it aborted. A run that has ended refuses all three with its status.
`rig resume --all` takes over every run of a store (of one station) left without an engine —
what a service runs after a crash or a reboot (docs/unattended.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rig import stop_signals
from rig.events import EventKind
from rig.lifecycle import (
    EXIT_BAD_INPUT,
    EXIT_FAULT,
    EXIT_OK,
    RESUMABLE_STATUSES,
    Refused,
    heartbeat_age,
    run_is_alive,
)


def find_run(db: Path, run: str) -> dict[str, Any]:
    from rig.store import StoreError, open_reader, resolve_run

    if not db.exists():
        raise Refused(f"{db} does not exist: no runs recorded there")
    try:
        with open_reader(db) as conn:
            return resolve_run(conn, run)
    except StoreError as exc:
        raise Refused(str(exc)) from None


def engine_gone(run: dict[str, Any]) -> str:
    return (f"run {run['id']} has no live engine (pid {run['pid']} on {run['host']}, last "
            f"heartbeat {heartbeat_age(run):.0f} s ago)")


def send(db: Path, run: dict[str, Any], command: str, channel: int | None,
         station_file: str | None = None) -> int:
    """Ask the live engine of ``run``; refuse (with what to do) when there is none."""
    from rig.store import StoreError, send_command

    rid = run["id"]
    if run["status"] not in RESUMABLE_STATUSES:
        raise Refused(f"run {rid} is not running (status {run['status']}): nothing to "
                      f"{command}")
    if not run_is_alive(run):
        if command == "abort":
            return abort_dead_run(db, run, channel, station_file)
        why = (f"run {rid} is interrupted (its engine stopped on a signal, outputs off)"
               if run["status"] == "interrupted" else engine_gone(run))
        raise Refused(f"{why}: nothing would act on '{command}'. Continue it with: rig resume "
                      f"{rid}; or end it with: rig abort {rid}")
    try:
        cid = send_command(db, rid, command, channel)
    except StoreError as exc:
        raise Refused(str(exc)) from None
    target = "the whole run" if channel is None else f"channel {channel} of run"
    print(f"{command} sent to {target} {rid} (command {cid}); its engine (pid {run['pid']}) "
          "acts on it within a second")
    return EXIT_OK


def open_station_for(run: dict[str, Any], station_file: str | None, clock: Any) -> Any:
    """The station a run used, opened again: the simulated one from its plan and seed, or its
    station file (``station_file`` overrides the one recorded)."""
    from rig.engine.resume import load_plan
    from rig.sim.station import simulated_station
    from rig.station import StationError, load_station

    desc = json.loads(run["station_json"] or "{}")
    source = station_file or desc.get("source")
    if not desc.get("simulated") and not source:
        raise Refused(f"run {run['id']} ran on station {desc.get('name')!r}: give its station "
                      "file with --station FILE")
    try:
        if desc.get("simulated") and not station_file:
            return simulated_station(load_plan(run), clock, seed=desc.get("seed") or 0)
        # its instruments are locked for it, as when it started: refused if another run has them
        return load_station(source, clock, run_id=run["id"],
                            channels=[cp.cell.channel for cp in load_plan(run).channels])
    except StationError as exc:
        raise Refused(str(exc)) from None


def abort_dead_run(db: Path, run: dict[str, Any], channel: int | None,
                   station_file: str | None = None) -> int:
    """No engine will act on an abort: open the station, outputs off, mark the run aborted."""
    from drivers.base import InstrumentError
    from rig.clock import RealClock
    from rig.engine.resume import load_plan
    from rig.store import RunWriter, get_channels, open_reader

    if channel is not None:
        raise Refused(f"{engine_gone(run)}: a single channel cannot be aborted without its "
                      f"engine; abort the whole run (rig abort {run['id']}) or take it over "
                      f"first (rig resume {run['id']})")
    clock = RealClock()
    station = open_station_for(run, station_file, clock)
    channels = [cp.cell.channel for cp in load_plan(run).channels]
    not_off = []
    try:
        for ch in channels:
            hw = station.channel(ch)
            try:
                hw.link.call_blocking(hw.driver.output_off, timeout=15.0)
            except (InstrumentError, OSError, TimeoutError) as exc:
                not_off.append(f"ch{ch} ({exc})")
    finally:
        station.close()
    off = ("outputs switched off on " + ", ".join(f"ch{c}" for c in channels) if not not_off
           else "output off NOT confirmed on " + ", ".join(not_off))
    with open_reader(db) as conn:
        last = conn.execute("SELECT max(t) FROM samples WHERE run_key = ?",
                            (run["key"],)).fetchone()[0]
        ended_at = max(time.time(), last or 0.0)  # on the run's clock: never before its data
        open_channels = [c["channel"] for c in get_channels(conn, run["key"])
                         if c["status"] != "ended"]
    why = ("interrupted" if run["status"] == "interrupted" else "its engine was gone")
    text = (f"run {run['id']} aborted by pid {os.getpid()} ({why}): {off}; channels "
            f"{', '.join(map(str, open_channels)) or 'none'} ended 'aborted'")
    with RunWriter(db) as writer:
        writer.record_end(run["key"], "aborted", "aborted with no live engine", ended_at,
                          "aborted", "alarm" if not_off else "warning", EventKind.ABORTED_DEAD_RUN,
                          text)
    print(text)
    return EXIT_OK if not not_off else EXIT_FAULT


def resume_all(db: Path, station_file: str | None, clock: str | None) -> int:
    """Take over every run of the store left without an engine (of ``station_file`` when
    given), each in its own `rig resume` process; wait for all, forwarding a stop signal. An
    engine that dies without cleanup (SIGKILL, a crash) is started again for its run, up to
    ``RESTARTS_PER_RUN`` times; then it counts as a fault (exit 3), which a service's
    ``Restart=on-failure`` answers. The exit code is the worst of the runs' (docs/unattended.md)."""
    from rig.store import get_run, list_runs, open_reader

    if not db.exists():
        print(f"nothing to resume: {db} does not exist yet")
        return EXIT_OK
    with open_reader(db) as conn:
        runs = [get_run(conn, r["key"]) for r in list_runs(conn)
                if r["status"] in RESUMABLE_STATUSES]
    wanted = Path(station_file).resolve() if station_file else None
    todo = []
    for run in runs:
        if run_is_alive(run):
            continue
        source = json.loads(run["station_json"] or "{}").get("source")
        if wanted is not None and (not source or Path(source).resolve() != wanted):
            continue
        todo.append(run)
    if not todo:
        print(f"nothing to resume in {db}")
        return EXIT_OK

    def start(run: dict[str, Any]) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "rig.cli", "resume", run["id"], "--db", str(db)]
        if station_file:
            cmd += ["--station", station_file]
        if clock:
            cmd += ["--clock", clock]
        return subprocess.Popen(cmd)

    children: dict[str, subprocess.Popen] = {}
    stopping: list[int] = []

    def forward(sig: int, _frame: Any) -> None:
        stopping.append(sig)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in stop_signals.to_catch()}
    codes: dict[str, int] = {}
    restarts = {run["id"]: 0 for run in todo}
    try:
        for run in todo:
            if stopping:  # stopped while starting: the rest stay as they are, resumable
                break
            print(f"resuming run {run['id']} ({run['name']}, {run['status']})", flush=True)
            children[run["id"]] = start(run)
        while len(codes) < len(children):
            for run in todo:
                rid = run["id"]
                code = None if rid in codes or rid not in children else children[rid].poll()
                if code is None:
                    continue
                if code < 0 and not stopping and restarts[rid] < RESTARTS_PER_RUN:
                    # its engine died without cleanup (killed, crashed): the run is still
                    # 'running' with outputs maybe on; take it over again at once
                    restarts[rid] += 1
                    print(f"rig: the engine of run {rid} died ({_death(code)}); resuming it "
                          f"again ({restarts[rid]} of {RESTARTS_PER_RUN})", flush=True)
                    children[rid] = start(run)
                    continue
                codes[rid] = EXIT_FAULT if code < 0 else code
            time.sleep(SUPERVISE_EVERY_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes.values(), default=EXIT_OK)


RESTARTS_PER_RUN = 3      # a run whose engine keeps dying is left to the service's Restart=
SUPERVISE_EVERY_S = 0.5


def _death(code: int) -> str:
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def take_over_run(db: Path, run: dict[str, Any], station_file: str | None,
                  clock_spec: str | None) -> int:
    """`rig resume RUN` of a run with no live engine: continue it from its checkpoints."""
    from rig.console import RunConsole
    from rig.engine.resume import ResumeRefused, check_takeover, resumed_clock, take_over
    from rig.store import RunWriter, open_reader
    from rig.store.writer import commit_interval_for

    try:
        check_takeover(run)
    except ResumeRefused as exc:
        raise Refused(str(exc)) from None
    with open_reader(db) as conn:
        clock = resumed_clock(clock_spec or run["clock"], conn, run)
    station = open_station_for(run, station_file, clock)
    console = RunConsole()
    writer = RunWriter(db, commit_interval_s=commit_interval_for(not clock.is_virtual))
    result = None
    try:
        with stop_signals.catching(), open_reader(db) as conn:
            result = asyncio.run(take_over(run, conn, station=station, clock=clock,
                                           writer=writer, progress=console))
    finally:
        station.close()
        close_quietly_after(writer, failed=result is not None and result.status == "failed")
    with stop_signals.hung_up_terminal_ignored():
        console.finish(result.run_id, result.status, result.reasons, 0.0, 0.0)
        if result.message and result.status != "completed":
            print(f"rig: {result.message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
    return result.exit_code


def close_quietly_after(writer: Any, failed: bool) -> None:
    """Close the writer; its failure was already reported when the run failed on it."""
    from rig.store import StoreError

    try:
        writer.close()
    except StoreError:
        if not failed:
            raise


__all__ = ["EXIT_BAD_INPUT", "abort_dead_run", "find_run", "resume_all", "send",
           "take_over_run"]
