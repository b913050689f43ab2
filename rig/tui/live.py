"""`rig run --monitor`: run and monitor in one terminal.

The engine runs in a background thread with its own event loop; the monitor owns the terminal
in the foreground and, as always, only reads the store (and writes command rows). The two share
nothing else, so the UI can never block the engine. When the user quits the monitor while the
run goes on, the run's usual progress bars take over the terminal. The stop signals (SIGTERM,
SIGHUP, SIGINT — Ctrl-C in the monitor or after it) end the run as they end a plain `rig run`
(rig.stop_signals): every output off, the run 'interrupted', exit 4.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rig import stop_signals
from rig.engine.run import NoProgress

R = TypeVar("R")
JOIN_POLL_S = 0.25


class Relay:
    """The engine's Progress while the monitor has the terminal: remembers the run and its
    cells, says nothing; ``attach(console)`` hands the rest of the run to ``console``."""

    def __init__(self) -> None:
        self.started = threading.Event()  # set once the run is in the store (or start failed)
        self.run_id: str | None = None
        self.plan: Any = None
        self.cells: dict[int, Any] = {}
        self._target: Any = NoProgress()

    def attach(self, console: Any) -> None:
        """From now on, progress goes to ``console`` (told about the run and its channels)."""
        if self.run_id is not None:
            console.run_started(self.run_id, self.plan)
            for channel, cell in sorted(self.cells.items()):
                console.channel_started(channel, cell)
        self._target = console

    def run_started(self, run_id: str, plan: Any) -> None:
        self.run_id, self.plan = run_id, plan
        self.started.set()

    def channel_started(self, channel: int, cell: Any) -> None:
        self.cells[channel] = cell
        self._target.channel_started(channel, cell)

    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None:
        self._target.cycle_done(channel, cycle, stats)

    def sample(self, channel: int, t: float, e: float, i: float) -> None:
        self._target.sample(channel, t, e, i)

    def channel_ended(self, channel: int, reason: str) -> None:
        self._target.channel_ended(channel, reason)


def run_with_monitor(db: str | os.PathLike, engine: Callable[[Relay], R], console: Any,
                     monitor: Callable[[Path, str], None] | None = None) -> R:
    """Call ``engine(progress)`` (which runs the whole run, e.g. ``asyncio.run(execute(...))``)
    in a background thread and show the monitor on ``db`` until the user quits it; then hand
    the terminal to ``console`` until the run ends. Returns what ``engine`` returned; raises
    what it raised. ``monitor(db, run_id)``: what shows the run (default: the Textual app).

    SIGTERM, SIGHUP and SIGINT (Ctrl-C, in the monitor or after it closed) are caught here, in
    the main thread, for the whole run, and do what they do to a plain `rig run`: the engine
    switches every output off and ends the run 'interrupted'; the monitor closes first,
    leaving the terminal as it found it."""
    relay = Relay()
    outcome: dict[str, Any] = {}
    finished = threading.Event()  # waited on instead of Thread.join: a signal in join() can
    # leave a live thread marked as stopped (CPython 3.11)

    def work() -> None:
        try:
            outcome["result"] = engine(relay)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            relay.started.set()  # also when it failed before the run was created
            finished.set()

    with stop_signals.catching():
        thread = threading.Thread(target=work, name="narig-engine", daemon=True)
        thread.start()
        while not relay.started.wait(JOIN_POLL_S):
            pass
        if relay.run_id is not None and stop_signals.received() is None:
            try:
                (monitor or _show_monitor)(Path(db), relay.run_id)
            except KeyboardInterrupt:  # Ctrl-C however it reached the monitor: SIGINT
                stop_signals.request(signal.SIGINT)
            except Exception as exc:  # noqa: BLE001 -- the run matters more than its display
                _say(f"rig: the monitor failed ({type(exc).__name__}: {exc}); the run goes on")
        sig = stop_signals.received()
        if not finished.is_set() and relay.run_id is not None:
            if sig is None:
                _say(f"monitor closed; run {relay.run_id} goes on here (Ctrl-C interrupts "
                     f"it: outputs off, resumable). Watch it from any terminal with: "
                     f"rig monitor {db}")
                relay.attach(console)
            else:
                _say(f"rig: {sig.name} received: switching every output off; run "
                     f"{relay.run_id} ends 'interrupted'")
        while not finished.wait(JOIN_POLL_S):
            pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _say(text: str) -> None:
    """A line on stderr, which may be a terminal already hung up (SIGHUP): the run's end
    matters more than this line."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def _show_monitor(db: Path, run_id: str) -> None:
    from rig.tui.app import MonitorApp

    MonitorApp(db, run_id, here=True).run()
