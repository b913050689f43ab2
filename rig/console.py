"""What `rig run` shows in the terminal: a progress bar per channel and a final status line.

On a terminal (also over ssh) the bars redraw in place; into a pipe or a log file it prints a
plain line per channel every tenth of the run, so CI logs stay readable.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from protocols.plan import CellSpec, Plan
from protocols.summary import plan_totals


def _hours(t: float) -> str:
    return f"{t / 3600:7.1f} h"


def _wall(seconds: float) -> str:
    """A wall-clock time left, e.g. ``12 s``, ``4 min``, ``2.5 h``; ``-`` while unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunConsole:
    """Implements the engine's Progress protocol.

    The bar of a channel moves with its simulated time (so it moves within a long cycle too),
    and "left" is the wall time to the planned end at the speed seen so far. Into a pipe it
    prints one line per finished cycle, never wrapped, so `grep` and log files see whole lines.
    """

    def __init__(self, out: TextIO | None = None, min_redraw_s: float = 0.1) -> None:
        self.out = out or sys.stdout
        self.console = Console(file=self.out, highlight=False, markup=False)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[int, TaskID] = {}
        self.total_cycles = 0
        self.planned_s: dict[int, float] = {}
        self.t_start: dict[int, float] = {}
        self.last_t: dict[int, float] = {}
        self.eta: dict[int, float] = {}
        self.cells: dict[int, CellSpec] = {}
        self._min_redraw_s = min_redraw_s
        self._last_redraw = 0.0
        self._wall0 = time.monotonic()

    def run_started(self, run_id: str, plan: Plan) -> None:
        self.total_cycles = max(plan.total_cycles, 1)
        self.planned_s = {ch: d for ch, (d, _q) in plan_totals(plan).items()}
        self._wall0 = time.monotonic()
        self._line(f"run {run_id}: {plan.name} ({plan.kind}), "
                   f"{len(plan.channels)} channel(s), {plan.total_cycles} cycles")
        if self.live:
            self.progress = Progress(
                TextColumn("ch{task.fields[ch]} {task.fields[cell]:<10}", markup=False),
                BarColumn(bar_width=30),
                TextColumn("cycle {task.fields[cycle]:>4}/{task.fields[cycles]:<4}"),
                TextColumn("{task.fields[simtime]}"),
                TextColumn("η {task.fields[eta]:>7}"),
                TextColumn("left {task.fields[left]:>6}"),
                TextColumn("{task.fields[state]}", markup=False),
                console=self.console, auto_refresh=False,
            )
            self.progress.start()

    def channel_started(self, channel: int, cell: CellSpec) -> None:
        self.cells[channel] = cell
        self.t_start[channel] = math.nan
        if self.progress is not None:
            self.tasks[channel] = self.progress.add_task(
                "", total=1.0, ch=channel, cell=cell.cell_id, cycle=0, cycles=self.total_cycles,
                simtime=_hours(0), eta="   -  ", left="-", state="running")

    def sample(self, channel: int, t: float, e: float, i: float) -> None:
        if math.isnan(self.t_start.get(channel, 0.0)):
            self.t_start[channel] = t
        self.last_t[channel] = t
        if self.progress is not None and channel in self.tasks:
            elapsed = self._elapsed(channel)
            self.progress.update(self.tasks[channel], completed=self._fraction(channel),
                                 simtime=_hours(elapsed), left=_wall(self._left_s(channel)))
            self._redraw()

    def _elapsed(self, channel: int) -> float:
        t0 = self.t_start.get(channel, math.nan)
        return 0.0 if math.isnan(t0) else self.last_t.get(channel, t0) - t0

    def _fraction(self, channel: int) -> float:
        planned = self.planned_s.get(channel, 0.0)
        return min(1.0, self._elapsed(channel) / planned) if planned > 0 else 0.0

    def _left_s(self, channel: int) -> float:
        """Wall seconds to the planned end, at the simulated-per-wall speed seen so far."""
        wall = time.monotonic() - self._wall0
        elapsed = self._elapsed(channel)
        planned = self.planned_s.get(channel, 0.0)
        if wall <= 0 or elapsed <= 0 or planned <= 0:
            return math.nan
        return max(0.0, planned - elapsed) * wall / elapsed

    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None:
        eta = 0.5 * (stats["eta_plate_V"] + stats["eta_strip_V"])
        self.eta[channel] = eta
        elapsed = self._elapsed(channel)
        if self.progress is not None:
            self.progress.update(self.tasks[channel], completed=self._fraction(channel),
                                 cycle=cycle, simtime=_hours(elapsed),
                                 eta=f"{eta * 1e3:.1f} mV", left=_wall(self._left_s(channel)))
            self._redraw()
        else:
            ce = stats.get("ce", math.nan)
            show_ce = self.cells[channel].cell_type != "symmetric" and math.isfinite(ce)
            self._line(f"ch{channel} {self.cells[channel].cell_id}: cycle {cycle}/"
                       f"{self.total_cycles}, {_hours(elapsed).strip()} simulated, "
                       f"η {eta * 1e3:.1f} mV" + (f", CE {ce * 100:.2f} %" if show_ce else "")
                       + f", {_wall(self._left_s(channel))} left")

    def channel_ended(self, channel: int, reason: str) -> None:
        if self.progress is not None:
            done = 1.0 if reason == "completed" else self._fraction(channel)
            self.progress.update(self.tasks[channel], completed=done, state=reason, left="-")
            self._redraw(force=True)
        elif reason != "completed":
            self._line(f"ch{channel} {self.cells[channel].cell_id}: ended: {reason}")

    def _line(self, text: str) -> None:
        """One whole line: free text (names, cell ids) is never read as markup, and a pipe
        gets it unwrapped."""
        if self.live:
            self.console.print(text, markup=False)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_redraw >= self._min_redraw_s):
            self._last_redraw = now
            self.progress.refresh()

    def finish(self, run_id: str, status: str, reasons: dict[int, str], wall_s: float,
               sim_s: float) -> None:
        if self.progress is not None:
            self.progress.refresh()
            self.progress.stop()
        ended = ", ".join(f"ch{c} {r}" for c, r in reasons.items() if r != "completed")
        speed = f", {sim_s / 3600:.1f} h simulated in {wall_s:.1f} s" if sim_s > wall_s else ""
        self._line(f"run {run_id} {status}: {len(reasons)} channel(s)"
                   f"{'; ' + ended if ended else ''}{speed}")
