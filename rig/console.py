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
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from protocols.plan import CellSpec, Plan


def _hours(t: float) -> str:
    return f"{t / 3600:7.1f} h"


class RunConsole:
    """Implements the engine's Progress protocol."""

    def __init__(self, out: TextIO | None = None, min_redraw_s: float = 0.1) -> None:
        self.out = out or sys.stdout
        self.console = Console(file=self.out, highlight=False)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[int, TaskID] = {}
        self.total_cycles = 0
        self.t_start: dict[int, float] = {}
        self.last_t: dict[int, float] = {}
        self.eta: dict[int, float] = {}
        self.cells: dict[int, CellSpec] = {}
        self.printed_decile: dict[int, int] = {}
        self._min_redraw_s = min_redraw_s
        self._last_redraw = 0.0

    def run_started(self, run_id: str, plan: Plan) -> None:
        self.total_cycles = max(plan.total_cycles, 1)
        # names, cell ids and reasons are the user's free text: escaped, never read as markup
        self.console.print(f"run {run_id}: {escape(plan.name)} ({plan.kind}), "
                           f"{len(plan.channels)} channel(s), {plan.total_cycles} cycles")
        if self.live:
            self.progress = Progress(
                TextColumn("ch{task.fields[ch]} {task.fields[cell]:<10}"),
                BarColumn(bar_width=30),
                TextColumn("cycle {task.completed:>4.0f}/{task.total:<4.0f}"),
                TextColumn("{task.fields[simtime]}"),
                TextColumn("η {task.fields[eta]:>7}"),
                TextColumn("{task.fields[state]}"),
                console=self.console, auto_refresh=False,
            )
            self.progress.start()

    def channel_started(self, channel: int, cell: CellSpec) -> None:
        self.cells[channel] = cell
        self.t_start[channel] = math.nan
        self.printed_decile[channel] = 0
        if self.progress is not None:
            self.tasks[channel] = self.progress.add_task(
                "", total=self.total_cycles, ch=channel, cell=escape(cell.cell_id),
                simtime=_hours(0), eta="   -  ", state="running")

    def sample(self, channel: int, t: float, e: float, i: float) -> None:
        if math.isnan(self.t_start.get(channel, 0.0)):
            self.t_start[channel] = t
        self.last_t[channel] = t

    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None:
        eta = 0.5 * (stats["eta_plate_V"] + stats["eta_strip_V"])
        self.eta[channel] = eta
        elapsed = self.last_t.get(channel, 0.0) - self.t_start.get(channel, 0.0)
        if self.progress is not None:
            self.progress.update(self.tasks[channel], completed=cycle,
                                 simtime=_hours(elapsed), eta=f"{eta * 1e3:.1f} mV")
            self._redraw()
        else:
            decile = int(10 * cycle / self.total_cycles)
            if decile > self.printed_decile[channel] or cycle == 1:
                self.printed_decile[channel] = decile
                self.console.print(
                    f"ch{channel} {escape(self.cells[channel].cell_id)}: cycle {cycle}/"
                    f"{self.total_cycles}, {_hours(elapsed).strip()} simulated, "
                    f"η {eta * 1e3:.1f} mV, CE {stats['ce'] * 100:.2f} %")

    def channel_ended(self, channel: int, reason: str) -> None:
        if self.progress is not None:
            self.progress.update(self.tasks[channel], state=escape(reason))
            self._redraw(force=True)
        elif reason != "completed":
            self.console.print(f"ch{channel} {escape(self.cells[channel].cell_id)}: ended: "
                               f"{escape(reason)}")

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
        ended = ", ".join(f"ch{c} {escape(r)}" for c, r in reasons.items() if r != "completed")
        speed = f", {sim_s / 3600:.1f} h simulated in {wall_s:.1f} s" if sim_s > wall_s else ""
        self.console.print(f"run {run_id} {status}: {len(reasons)} channel(s)"
                           f"{'; ' + ended if ended else ''}{speed}")
