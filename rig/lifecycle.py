"""A run's life as every command sees it: the one table of exit codes and the one test of
whether a run's engine is alive (shared by the CLI, `rig resume` and the monitor)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

# The exit codes of `rig` (the contract scripts and systemd rely on; docs/unattended.md).
EXIT_OK = 0           # success: the run completed as planned
EXIT_EARLY = 1        # the run ended early (safety trip, failure, aborted); a closed pipe
EXIT_BAD_INPUT = 2    # bad input: a file, a path, a store, an option, a run in the wrong state
EXIT_FAULT = 3        # an instrument or store fault the rig could not recover from
EXIT_INTERRUPTED = 4  # stopped by SIGTERM/SIGHUP/SIGINT: outputs off, resumable (`rig resume`)
EXIT_INSTRUMENT = EXIT_FAULT  # the older name

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_EARLY: "the run ended early (safety trip, failure, aborted)",
    EXIT_BAD_INPUT: "bad input (one clear message on stderr)",
    EXIT_FAULT: "an instrument or store fault the rig could not recover from",
    EXIT_INTERRUPTED: "interrupted by a signal: outputs off, the run resumable",
}

HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_STALE_S = 15.0  # a run whose heartbeat is older than this has no live engine

# runs `rig resume` may take over: an engine that died (still 'running') or was interrupted
RESUMABLE_STATUSES = ("running", "interrupted")


def dead_here(run: dict[str, Any]) -> bool:
    """The run's engine was on this host and its process is gone: no need to wait. A process
    with the engine's pid that started after the run's last heartbeat is another one (the pid
    was reused: a container restarted, a quick reboot), so the engine is gone too."""
    if run.get("host") != socket.gethostname() or not run.get("pid"):
        return False
    pid = run["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    state, started = _proc_state(pid)
    if state == "Z":
        return True
    return started is not None and started > (run.get("heartbeat_at") or 0.0) + START_SLACK_S


START_SLACK_S = 2.0  # /proc/stat's boot time is whole seconds and follows clock adjustments


def _proc_state(pid: int) -> tuple[str | None, float | None]:
    """(state letter, start in Unix seconds) of a process, from /proc; (None, None) without it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None, None
    # fields[0] is the state (field 3 of proc(5)); fields[19] is starttime (field 22), in ticks
    return fields[0], boot + int(fields[19]) / ticks


def heartbeat_age(run: dict[str, Any], now_wall: float | None = None) -> float:
    return (time.time() if now_wall is None else now_wall) - (run.get("heartbeat_at") or 0.0)


def run_is_alive(run: dict[str, Any], now_wall: float | None = None) -> bool:
    """A live engine drives this run: it is 'running', beat recently, and its process (when on
    this host) still exists."""
    if run.get("status") != "running":
        return False
    return heartbeat_age(run, now_wall) < HEARTBEAT_STALE_S and not dead_here(run)


class Refused(Exception):
    """A command refused on its input or on the run's state: one line on stderr, exit 2."""
