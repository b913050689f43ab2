"""The monitor's widgets: each owns one piece of the screen and is fed through a reactive."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static
from textual_plotext import PlotextPlot

from rig.tui.data import COLUMNS, ChannelRow

LEVEL_STYLES = {"warning": "bold yellow", "alarm": "bold red", "error": "bold white on red"}


class ChannelTable(DataTable):
    """One row per channel; updated in place so the cursor (the selection) stays put."""

    rows_data: reactive[tuple[ChannelRow, ...]] = reactive((), always_update=True)

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for name in COLUMNS:
            self.add_column(name, key=name)

    def watch_rows_data(self, rows: tuple[ChannelRow, ...]) -> None:
        for row in rows:
            key = str(row.channel)
            cells = row.cells()
            if key in self.rows:
                for name, value in zip(COLUMNS, cells):
                    self.update_cell(key, name, value)
            else:
                self.add_row(*cells, key=key)

    @property
    def selected_channel(self) -> int | None:
        """The channel under the cursor, or None while the table is empty."""
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(key.value) if key.value is not None else None


class EventLog(DataTable):
    """The run's events, newest first; warnings, alarms and errors highlighted."""

    can_focus = False
    events: reactive[tuple[dict, ...]] = reactive((), always_update=True)

    def __init__(self, t0: float = 0.0, keep: int = 200, **kwargs) -> None:
        super().__init__(**kwargs)
        self.t0 = t0  # the run's start: times are shown as h:mm:ss since then
        self._kept: deque[dict] = deque(maxlen=keep)

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("run time", "ch", "level", "kind", "message")

    def watch_events(self, new: tuple[dict, ...]) -> None:
        if not new:
            return
        self._kept.extend(new)
        self.clear()
        for e in reversed(self._kept):
            style = LEVEL_STYLES.get(e["level"], "")
            ch = "run" if e["channel"] is None else str(e["channel"])
            self.add_row(*(Text(str(v), style=style) for v in (
                fmt_elapsed(e["t"] - self.t0), ch, e["level"], e["kind"], e["message"])))


def fmt_elapsed(seconds: float) -> str:
    """Seconds since the run started as ``h:mm:ss``.

    >>> fmt_elapsed(3725.4)
    '1:02:05'
    """
    s = int(max(seconds, 0.0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StatusLine(Static):
    """One line: which run, its state, and whether the store answered."""

    message: reactive[str] = reactive("connecting…")

    def render(self) -> str:
        return self.message


class PotentialPlot(PlotextPlot):
    """E vs time of the selected channel (decimated)."""

    points: reactive[tuple[tuple[float, float], ...]] = reactive(())

    def watch_points(self, points: tuple[tuple[float, float], ...]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("E vs t")
        plt.xlabel("h")
        plt.ylabel("V")
        if points:
            plt.plot([p[0] for p in points], [p[1] for p in points], marker="braille")
        self.refresh()


class OverpotentialPlot(PlotextPlot):
    """Mean |E| of each plating and stripping half-cycle of the selected channel."""

    etas: reactive[tuple[tuple[int, float, float], ...]] = reactive(())

    def watch_etas(self, etas: tuple[tuple[int, float, float], ...]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("η vs cycle")
        plt.xlabel("cycle")
        plt.ylabel("mV")
        if etas:
            cycles = [c[0] for c in etas]
            plt.plot(cycles, [c[1] for c in etas], label="plate", marker="braille")
            plt.plot(cycles, [c[2] for c in etas], label="strip", marker="braille")
        self.refresh()


class ConfirmScreen(ModalScreen[bool]):
    """Ask y/n before a command is sent; dismisses with True for yes."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
                Binding("escape", "answer(False)", "no", show=False)]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="dialog"):
            yield Label(self.question, id="question")
            yield Label("[b]y[/b] yes   [b]n[/b] no", id="answer-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
