"""The `rig` command: the contract users, scripts and tests rely on (design.md).

Exit codes (the one table: ``rig.lifecycle.EXIT_CODES``): 0 success; 1 the run ended early
(safety trip, failure, aborted); 2 bad input (one clear message on stderr, no traceback — a bad
file, path, store or option, or a run in the wrong state); 3 an instrument or store fault the
rig could not recover from; 4 interrupted by SIGTERM/SIGHUP/SIGINT (outputs off, resumable).
A reader that closes stdout early (`| head`) ends the command quietly with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rig.lifecycle import (
    EXIT_BAD_INPUT,
    EXIT_EARLY,
    EXIT_FAULT,
    EXIT_INSTRUMENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Refused,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_EARLY", "EXIT_FAULT", "EXIT_INSTRUMENT", "EXIT_INTERRUPTED",
           "EXIT_OK", "UsageError", "main"]


class UsageError(Refused):
    """Bad input from the user: printed as one message, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from rig.store import BadStore, StoreError

    try:
        _check_clock_option(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except Refused as exc:
        print(f"rig: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BadStore as exc:  # a path that is no store: the user's input
        print(f"rig: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StoreError, sqlite3.Error) as exc:  # the store failed under us
        print(f"rig: the store failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAULT
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            _stdout_to_devnull()
            return EXIT_EARLY
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rig: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.filename else EXIT_FAULT
    except KeyboardInterrupt:  # before a run starts (a run catches SIGINT itself)
        print("rig: interrupted", file=sys.stderr)
        return EXIT_EARLY


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_clock_option(args: argparse.Namespace) -> None:
    """--clock is checked before anything opens (xnan, xinf, x0, x1e-300 never start)."""
    from rig.clock import check_clock_spec

    spec = getattr(args, "clock", None)
    if spec is not None:
        try:
            check_clock_spec(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _stdout_to_devnull() -> None:
    """The reader of our stdout went away (`rig validate --schema | head -1`): the standard
    remedy (Python's signal docs) — point stdout at devnull so the flush at exit stays quiet,
    and exit 1 without a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (an embedding caller's stream)


def _parser() -> argparse.ArgumentParser:
    from rig import __version__

    p = argparse.ArgumentParser(prog="rig", description="Run sodium-metal battery experiments.")
    p.add_argument("--version", action="version", version=f"narig {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a protocol (default: on the simulated station)")
    run.add_argument("protocol", help="protocol file (TOML), or a built-in protocol's name "
                     "(see `rig protocols`), e.g. plating_stripping")
    run.add_argument("--station", help="station file (default: the built-in simulated station)")
    run.add_argument("--db", help="store file (default: the user data dir, or $NARIG_DB)")
    run.add_argument("--clock", default=None,
                     help="virtual | real | xN (default: virtual when simulated, else real)")
    run.add_argument("--seed", type=int, default=0, help="seed of the simulated cells")
    run.add_argument("--keithley", type=int, action="append", default=[], metavar="CHANNEL",
                     help="simulated station: put this channel on the simulated Keithley 2450 "
                          "(repeatable; default: every channel on an EmStat4)")
    run.add_argument("--monitor", action="store_true",
                     help="watch the run in the monitor while it runs (needs a terminal)")
    run.add_argument("--detach", action="store_true",
                     help="run in the background, in its own session (survives closing the "
                          "terminal); its log beside the store; prints the run id")
    run.add_argument("--run-id", help=argparse.SUPPRESS)  # --detach names the run up front
    run.set_defaults(func=cmd_run)

    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--db")
    runs.set_defaults(func=cmd_runs)

    from rig.library_cli import add_parser as add_protocols_parser
    add_protocols_parser(sub)
    from rig.service import add_parser as add_service_parser
    add_service_parser(sub)

    show = sub.add_parser("show", help="a run's status, end reasons and per-cycle table")
    show.add_argument("run", help="run id, a unique prefix of one, or 'latest'")
    show.add_argument("--db")
    show.add_argument("--json", action="store_true", help="the same as JSON")
    show.add_argument("--every", type=int, default=1, help="print every Nth cycle (and the last)")
    show.add_argument("--channel", type=int, default=None, help="only this channel")
    show.set_defaults(func=cmd_show)
    from rig.export.command import add_parser as add_export_parser  # rig export: its own module

    add_export_parser(sub)

    for name, text in (("pause", "hold channels at open circuit (data keeps flowing)"),
                       ("abort", "output off; the channels end with reason 'aborted'")):
        c = sub.add_parser(name, help=text)
        c.add_argument("run", help="run id, a unique prefix of one, or 'latest'")
        c.add_argument("--channel", type=int, default=None)
        c.add_argument("--db")
        if name == "abort":
            c.add_argument("--station", help="a run whose engine is gone: its station file, "
                           "opened to switch its outputs off (default: the one it used)")
        c.set_defaults(func=cmd_command, command_name=name)
    res = sub.add_parser("resume", help="un-pause; or take over a run whose engine died or "
                         "was interrupted")
    res.add_argument("run", nargs="?", help="run id, a unique prefix of one, or 'latest'")
    res.add_argument("--all", action="store_true",
                     help="take over every run of the store without a live engine (of "
                          "--station when given): what a service runs at boot")
    res.add_argument("--channel", type=int, default=None)
    res.add_argument("--db")
    res.add_argument("--clock", default=None, help="virtual | real | xN (default: as the run)")
    res.add_argument("--station", help="the station file (default: the one the run used)")
    res.set_defaults(func=cmd_resume)

    mon = sub.add_parser(
        "monitor", help="watch a run (live or finished) and pause/resume/abort it",
        description="Watch a run (live or finished) of a store. Keys: p/r/a pause, resume, "
        "abort the selected channel (P/R/A: every channel; each asks y/n first); s switch "
        "run; f filter the event log to the selected channel; k acknowledge the alarms shown "
        "(in this monitor only); q quit.")
    mon.add_argument("store", nargs="?", help="store file (the same as --db)")
    mon.add_argument("--db", help="store file (default: the user data dir, or $NARIG_DB)")
    mon.add_argument("--run", default="latest", help="run id, a unique prefix, or 'latest' "
                     "(key s in the monitor switches to another run of the store)")
    mon.set_defaults(func=cmd_monitor)

    validate = sub.add_parser("validate", help="check a protocol file and print its plan")
    validate.add_argument("protocol", nargs="?", help="protocol file, or a built-in's name")
    validate.add_argument("--station", help="check currents against this station's instruments")
    validate.add_argument("--schema", action="store_true",
                          help="print the JSON Schema of protocol files (for editors)")
    validate.set_defaults(func=cmd_validate)
    _station_parsers(sub)
    from rig.report.command import add_parser as add_report

    add_report(sub)
    return p


def _db_path(arg: str | None) -> Path:
    from rig.store import default_db_path

    return Path(arg) if arg else default_db_path()


def _load(protocol: str) -> Any:
    from protocols import ProtocolError, load_protocol
    from rig.library import resolve_protocol

    try:
        return load_protocol(resolve_protocol(protocol))
    except ProtocolError as exc:
        raise UsageError(str(exc)) from None


# ---- rig run ------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from rig.clock import make_clock
    from rig.console import RunConsole
    from rig.engine.run import execute
    from rig.sim.station import simulated_station
    from rig.station import StationError, load_station
    from rig.store import RunWriter, new_run_id
    from rig.store.schema import check_store_path
    from rig.store.writer import commit_interval_for
    from rig.validate import check_ranges

    loaded = _load(args.protocol)
    db = _db_path(args.db)
    if args.detach:
        from rig.detach import detach_run

        return detach_run(args, db)
    try:
        clock = make_clock(args.clock, simulated=args.station is None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_store_path(db)  # a path that can never be a store: refused before any instrument
    run_id = args.run_id or new_run_id(time.time())
    channels = [cp.cell.channel for cp in loaded.plan.channels]
    try:  # a station file's instruments are locked for this run (a built-in one is its own)
        station = (load_station(args.station, clock, channels=channels, run_id=run_id)
                   if args.station
                   else simulated_station(loaded.plan, clock, seed=args.seed,
                                          keithley_channels=args.keithley))
    except StationError as exc:
        raise UsageError(str(exc)) from None
    problems = check_ranges(loaded.plan, {
        n: (hw.instrument, hw.driver.ranges) for n, hw in station.channels.items()},
        str(args.protocol))
    if problems:  # nothing has been switched on yet
        station.close()
        raise UsageError("\n".join(problems))
    try:
        writer = RunWriter(db, commit_interval_s=commit_interval_for(not clock.is_virtual))
    except BaseException:
        station.close()
        raise
    console = RunConsole()
    wall0, sim0 = time.monotonic(), clock.now()

    def engine(progress: Any) -> Any:
        return asyncio.run(execute(
            loaded.plan, station=station, clock=clock, writer=writer,
            protocol_text=loaded.text, protocol_path=str(loaded.path), progress=progress,
            run_id=run_id))

    from rig import stop_signals
    from rig.steering import close_quietly_after

    result = None
    try:  # a stop signal from here on ends the run 'interrupted', with or without the monitor
        with stop_signals.catching():
            if _monitor_wanted(args):
                from rig.tui.live import run_with_monitor

                result = run_with_monitor(db, engine, console)
            else:
                result = engine(console)
    finally:
        station.close()
        close_quietly_after(writer, failed=result is not None and result.status == "failed")
    with stop_signals.hung_up_terminal_ignored():
        console.finish(result.run_id, result.status, result.reasons,
                       time.monotonic() - wall0, clock.now() - sim0)
        if result.message:
            print(f"rig: {result.message}", file=sys.stderr)
        print(f"stored in {db}; see it with: rig show {result.run_id}"
              + (f" --db {args.db}" if args.db else ""), flush=True)
    return result.exit_code


def _monitor_wanted(args: argparse.Namespace) -> bool:
    """--monitor, unless there is no terminal to show it on (then a note, and a plain run)."""
    if not getattr(args, "monitor", False):
        return False
    if sys.stdout.isatty() and sys.stdin.isatty():
        return True
    print("rig: --monitor ignored: not a terminal (watch from one with: rig monitor)",
          file=sys.stderr)
    return False


# ---- rig runs -------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from rig.store.read import list_runs, open_reader

    db = _db_path(args.db)
    if not db.exists():
        print(f"no runs yet ({db} does not exist)")
        return EXIT_OK
    with open_reader(db) as conn:
        runs = list_runs(conn)
    if not runs:
        print("no runs yet")
        return EXIT_OK
    print(runs_table(runs))
    return EXIT_OK


def runs_table(runs: list[dict[str, Any]]) -> str:
    """`rig runs`: newest first; the start in local wall time, the duration on the run's own
    clock (marked "sim" on a virtual or accelerated clock, so the two are never mixed), and the
    whole protocol name last, where a long one cannot push the other columns about."""
    lines = [f"{'run':<22} {'status':<12} {'started (local)':<19} {'duration':>13} "
             f"{'ch':>3}  protocol"]
    for r in sorted(runs, key=lambda r: (_wall_start(r), r["key"]), reverse=True):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_wall_start(r)))
        lines.append(f"{r['id']:<22} {r['status']:<12} {started:<19} "
                     f"{_run_duration(r):>13} {r['n_channels']:>3}  {r['name']}")
    return "\n".join(lines)


def _wall_start(r: dict[str, Any]) -> float:
    """When the run started on the wall: its id is stamped from the wall clock (UTC) at
    creation, while ``started_at`` is on the run's own clock, which on ``xN`` runs ahead."""
    import calendar

    try:
        return float(calendar.timegm(time.strptime(str(r["id"])[:15], "%Y%m%d-%H%M%S")))
    except ValueError:  # an id not made by new_run_id
        return float(r["started_at"] or 0.0)


def _run_duration(r: dict[str, Any]) -> str:
    """Clock time from start to end (or to now, for a live real-clock run)."""
    simulated = str(r.get("clock") or "") not in ("", "real")
    end = r.get("ended_at")
    if end is None:
        if simulated:
            return "-"  # a live simulated run's clock is not the wall's: no honest figure here
        end = time.time()
    hours = max(0.0, end - r["started_at"]) / 3600
    return f"{hours:.1f} h" + (" sim" if simulated else "")


# ---- rig show -------------------------------------------------------------------------------
def run_summary(db: Path, run: str, channel: int | None = None) -> dict[str, Any]:
    """Everything `rig show` prints, as plain data (also what --json prints; rig.show)."""
    from rig.show import summarize
    from rig.store import StoreError, open_reader, resolve_run

    if not db.exists():
        raise UsageError(f"{db} does not exist: no runs recorded there")
    with open_reader(db) as conn:
        try:
            return summarize(conn, resolve_run(conn, run), channel)
        except (StoreError, ValueError) as exc:
            raise UsageError(str(exc)) from None


def cmd_show(args: argparse.Namespace) -> int:
    from rig.show import channel_lines

    summary = run_summary(_db_path(args.db), args.run, args.channel)
    if args.json:
        print(json.dumps(summary, indent=1))
        return EXIT_OK
    dur = (summary["ended_at"] or time.time()) - summary["started_at"]
    print(f"run {summary['run']}: {summary['name']} ({summary['kind']}), {summary['status']}"
          f"{' — ' + summary['end_reason'] if summary['end_reason'] else ''}, "
          f"{dur / 3600:.1f} h on the {summary['clock']} clock")
    for ch in summary["channels"]:
        print()
        print(f"channel {ch['channel']}  {ch['cell_id']}  {ch['cell_type']}, "
              f"{ch['area_cm2']:g} cm², {ch['electrolyte']}  —  {ch['status']}: "
              f"{ch['end_reason'] or '-'}")
        if ch["outcome"]:
            print(f"  result: {outcome_text(ch['outcome'])}")
        for line in channel_lines(ch, args.every):
            print(line)
    if summary["alarms"]:
        print()
        print("warnings and alarms:")
        for e in summary["alarms"]:
            ch = "run" if e["channel"] is None else f"ch{e['channel']}"
            print(f"  {e['level']:<7} {ch:<4} {e['kind']}: {e['message']}")
    return EXIT_OK


def outcome_text(o: dict[str, Any]) -> str:
    """One line a person reads: the protocol's answer for a channel. Never raises: a value the
    outcome could not compute (None) is said in words, with the outcome's ``reason``."""
    if o.get("error"):
        return f"could not be computed: {o['error']}"
    kind = o.get("outcome")
    text = _OUTCOME_TEXT.get(kind) if isinstance(kind, str) else None
    if text is not None:
        return text(o)
    return o.get("reason") or json.dumps(o)[:120]


def _because(o: dict[str, Any]) -> str:
    return f": {o['reason']}" if o.get("reason") else ""


def _reservoir_ce_text(o: dict[str, Any]) -> str:
    if o.get("ce") is None:
        return f"no CE (reservoir method){_because(o)}"
    note = f"; {o['reason']}" if o.get("reason") else ""
    return f"CE {o['ce'] * 100:.2f} % (reservoir method, {o.get('n_cycles')} cycles){note}"


def _per_cycle_ce_text(o: dict[str, Any]) -> str:
    first = (f"; cycle 1 CE {o['first_cycle_ce'] * 100:.2f} %"
             if o.get("first_cycle_ce") is not None else "")
    if o.get("ce_mean") is None:
        return f"no mean CE{_because(o)}{first}"
    return f"mean CE {o['ce_mean'] * 100:.2f} % ({o.get('n_cycles')} cycles){first}"


def _ccd_text(o: dict[str, Any]) -> str:
    failure, failing, cycle = o.get("failure"), o.get("failing_mA_cm2"), o.get("failure_cycle")
    where = f" in cycle {cycle}" if cycle is not None else ""
    if o.get("ccd_mA_cm2") is None:
        if failure and failing is not None:
            return (f"no stable current density: {failure} in the first rung at {failing:g} "
                    f"mA/cm^2{where}")
        if failure:
            return f"no stable current density: {failure}{where}{_because(o)}"
        return f"no critical current density{_because(o)}"
    text = f"critical current density {o['ccd_mA_cm2']:g} mA/cm^2"
    if failure:
        at = f" at {failing:g} mA/cm^2" if failing is not None else ""
        return f"{text}; {failure}{at}{where}"
    if o.get("reached_max"):
        return f"{text} (every rung completed without a failure: a lower bound)"
    return f"{text}; {o['reason']}" if o.get("reason") else text


def _failure_cycle_text(o: dict[str, Any]) -> str:
    if o.get("failed"):
        cycle = o.get("failure_cycle")
        return f"failed ({o.get('failure')})" + (f" in cycle {cycle}" if cycle is not None
                                                 else "")
    return f"no failure in {o.get('cycles_completed')} cycles"


def _sei_growth_text(o: dict[str, Any]) -> str:
    r_sei = o.get("r_sei_ohm") or []
    if o.get("r_sei_ohm_cm2") is not None:
        text = f"R_SEI {o['r_sei_ohm_cm2']:.1f} ohm cm^2 at the end"
    elif r_sei:
        text = f"R_SEI {r_sei[-1]:.1f} ohm at the end"
    else:
        return f"no R_SEI{_because(o)}"
    if o.get("r_sei_growth_ohm_per_h") is not None:
        text += f", growing {o['r_sei_growth_ohm_per_h']:.3g} ohm/h at rest"
    else:
        text += f" ({len(r_sei)} sweep fitted: no growth rate)"
    failed = len(o.get("failed_fits") or [])
    return text + (f"; {failed} sweep(s) could not be fitted" if failed else "")


def _gas_text(o: dict[str, Any]) -> str:
    if not o.get("cycles") and o.get("first_cycle_umol") is None:
        return f"no gas per cycle{_because(o) or ': no cycle within the pressure record'}"
    first, later = o.get("first_cycle_umol"), o.get("later_mean_umol")
    parts = [f"cycle 1 {first:.2f} umol" if first is not None else "no cycle 1 reading",
             f"later cycles {later:.2f} umol each" if later is not None else "no later cycles"]
    if o.get("total_umol") is not None:
        stp = (f" ({o['total_uL_stp']:.0f} uL at STP)" if o.get("total_uL_stp") is not None
               else "")
        parts.append(f"total {o['total_umol']:.2f} umol{stp}")
    return "gas: " + "; ".join(parts)


_OUTCOME_TEXT = {"reservoir_ce": _reservoir_ce_text, "per_cycle_ce": _per_cycle_ce_text,
                 "ccd": _ccd_text, "failure_cycle": _failure_cycle_text,
                 "sei_growth": _sei_growth_text, "gas_per_cycle": _gas_text}


def _f(x: float | None, nd: int, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.{nd}f}"


# ---- rig pause | resume | abort ------------------------------------------------------------
def cmd_command(args: argparse.Namespace) -> int:
    from rig.steering import find_run, send

    db = _db_path(args.db)
    return send(db, find_run(db, args.run), args.command_name, args.channel,
                station_file=getattr(args, "station", None))


def cmd_resume(args: argparse.Namespace) -> int:
    """Un-pause a live run; take over one without a live engine from its checkpoints."""
    from rig.lifecycle import heartbeat_age, run_is_alive
    from rig.steering import find_run, resume_all, send, take_over_run

    db = _db_path(args.db)
    if args.all:
        if args.run:
            raise UsageError("resume: give a run or --all, not both")
        return resume_all(db, args.station, args.clock)
    if not args.run:
        raise UsageError("resume: give a run id (or 'latest'), or --all")
    run = find_run(db, args.run)
    if run_is_alive(run):
        # its engine is alive: never a second engine on it; un-pause through that engine
        print(f"run {run['id']} is alive (engine pid {run['pid']} on {run['host']}, "
              f"heartbeat {heartbeat_age(run):.0f} s ago): not taking it over; asking its "
              "engine to un-pause")
        return send(db, run, "resume", args.channel)
    return take_over_run(db, run, args.station, args.clock)


# ---- rig monitor -----------------------------------------------------------------------------
def cmd_monitor(args: argparse.Namespace) -> int:
    from rig.store import StoreError

    if args.store and args.db and Path(args.store) != Path(args.db):
        raise UsageError(f"monitor: two stores given ({args.store} and --db {args.db})")
    db = _db_path(args.store or args.db)
    if not db.exists():
        raise UsageError(f"{db} does not exist: no runs recorded there")
    try:
        from rig.tui import MonitorApp

        app = MonitorApp(db, args.run)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    app.run()
    return EXIT_OK


# ---- rig validate -----------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from protocols import json_schema, summarize

    if args.schema:
        print(json.dumps(json_schema(), indent=1))
        return EXIT_OK
    if not args.protocol:
        raise UsageError("validate: give a protocol file, or --schema")
    from drivers.emstat import DEFAULT_HOST_WATCHDOG_S, EMSTAT4_LR_RANGES, within_watchdog
    from rig.validate import check_ranges

    loaded = _load(args.protocol)
    simulated = within_watchdog(EMSTAT4_LR_RANGES, DEFAULT_HOST_WATCHDOG_S)
    ranges = {cp.cell.channel: ("simulated EmStat4", simulated)
              for cp in loaded.plan.channels}
    if getattr(args, "station", None):
        ranges = _station_ranges(args.station)
    problems = check_ranges(loaded.plan, ranges, str(args.protocol))
    if problems:
        raise UsageError("\n".join(problems))
    print(summarize(loaded.plan))
    return EXIT_OK


def _station_ranges(path: str) -> dict[int, tuple[str, Any]]:
    """Each channel's instrument and its ranges, from a station file (nothing is opened)."""
    from rig.station import StationError, station_ranges

    try:
        return station_ranges(path)
    except StationError as exc:
        raise UsageError(str(exc)) from None


# ---- rig station check | rig sim serve ----------------------------------------------------------
def _station_parsers(sub: Any) -> None:
    station = sub.add_parser("station", help="station files: check one against its instruments")
    station_sub = station.add_subparsers(dest="station_command", required=True)
    check = station_sub.add_parser(
        "check", help="open, identify and read every instrument and sensor once (exit 3 if any "
        "fails)")
    check.add_argument("station", nargs="?",
                       help="station file (default: the built-in simulated station)")
    check.add_argument("--protocol", help="without a station file: simulate the station for "
                       "this protocol's cells (default: one glyme Na||Na cell with a holder)")
    check.add_argument("--seed", type=int, default=0, help="seed of the simulated cells")
    check.set_defaults(func=cmd_station_check)

    sim = sub.add_parser("sim", help="the simulated instruments")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_sub.add_parser(
        "serve", help="serve simulated instruments to other processes; prints a station file "
        "that points at them; runs until Ctrl-C or SIGTERM")
    serve.add_argument("station", nargs="?", help="station file whose instruments to simulate "
                       "(default: the built-in simulated station)")
    serve.add_argument("--protocol", help="the cells to simulate, by channel (default: one glyme "
                       "Na||Na cell with a 5 mL holder on channel 0)")
    serve.add_argument("--clock", default="real", help="real | xN (accelerated real time)")
    serve.add_argument("--out", help="also write the station file here")
    serve.add_argument("--seed", type=int, default=0, help="seed of the simulated cells")
    serve.set_defaults(func=cmd_sim_serve)


def _quiet_pymodbus() -> None:
    """pymodbus logs every failed attempt on stderr; these commands report failures themselves."""
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def cmd_station_check(args: argparse.Namespace) -> int:
    from rig.clock import RealClock
    from rig.sim.station import DUMMY_KEITHLEY_CHANNELS, dummy_plan
    from rig.station import StationError, check_station, format_check, read_station_file

    _quiet_pymodbus()
    clock = RealClock()
    if args.station:
        if args.protocol:
            raise UsageError("station check: --protocol is for the simulated station; a station "
                             "file names its own instruments")
        try:
            config = read_station_file(args.station)
        except StationError as exc:
            raise UsageError(str(exc)) from None
        print(f"station {config.name} ({args.station}):", flush=True)
        results = check_station(config, clock)
    else:
        from rig.sim.serve import SimulatedInstruments, builtin_station_data

        plan = _load(args.protocol).plan if args.protocol else dummy_plan()
        keithley = () if args.protocol else DUMMY_KEITHLEY_CHANNELS
        try:
            sims = SimulatedInstruments(builtin_station_data(plan, keithley_channels=keithley),
                                        plan, clock, args.seed)
        except StationError as exc:
            raise UsageError(str(exc)) from None
        print("the simulated station (built-in, served in this process):", flush=True)
        try:
            results = check_station(sims.config, clock)
        finally:
            sims.close()
    print(format_check(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_INSTRUMENT


def cmd_sim_serve(args: argparse.Namespace) -> int:
    import tomllib

    from rig.clock import RealClock, make_clock
    from rig.sim.serve import builtin_station_data, serve
    from rig.sim.station import DUMMY_KEITHLEY_CHANNELS, dummy_plan
    from rig.station import StationError, parse_station

    _quiet_pymodbus()
    try:
        clock = make_clock(args.clock, simulated=False)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(clock, RealClock):
        raise UsageError("sim serve: --clock must be real or xN: other processes talk to the "
                         "instruments in real time")
    plan = _load(args.protocol).plan if args.protocol else None
    try:
        if args.station:
            try:
                text = Path(args.station).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{args.station}: cannot read the file: {exc}") from None
            parse_station(text, args.station)  # every problem, with its path, before serving
            data = tomllib.loads(text)
        else:
            keithley = () if plan else DUMMY_KEITHLEY_CHANNELS
            plan = plan or dummy_plan()
            data = builtin_station_data(plan, keithley_channels=keithley)
        return serve(data, plan, clock, seed=args.seed, out=Path(args.out) if args.out else None,
                     source=args.station or "<built-in>")
    except StationError as exc:
        raise UsageError(str(exc)) from None


if __name__ == "__main__":
    # run the imported module's main, so `python -m rig.cli` and the subcommands in other
    # modules (rig.export.command) share one UsageError class
    from rig.cli import main as _main

    sys.exit(_main())
