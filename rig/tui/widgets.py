"""The monitor's widgets: each owns one piece of the screen and is fed through a reactive
(or, for the event log, ``reset``/``events``)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from rig.tui.data import ALARM_LEVELS, COLUMNS, COMPACT_COLUMNS, ChannelRow, Interlock, Reading

LEVEL_STYLES = {"warning": "bold yellow", "alarm": "bold red", "error": "bold white on red"}
ACKED_STYLES = {"alarm": "red", "error": "red"}  # acknowledged: still red, no longer bold
STATE_STYLES = {"held": "bold white on red", "paused": "bold yellow", "running": "green"}
READING_STYLES = {"over": "bold white on red", "near": "bold yellow", "ok": "green"}
SPARK = "▁▂▃▄▅▆▇█"


def fmt_elapsed(seconds: float) -> str:
    """Seconds since the run started as ``h:mm:ss``.

    >>> fmt_elapsed(3725.4)
    '1:02:05'
    """
    s = int(max(seconds, 0.0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def sparkline(values: Sequence[float | None], lo: float, hi: float) -> str:
    """One block character per value, scaled from ``lo`` to ``hi``; a space for None.

    >>> sparkline([0.0, 0.5, 1.0, None], 0.0, 1.0)
    '▁▅█ '
    """
    out = []
    for v in values:
        if v is None or math.isnan(v):
            out.append(" ")
            continue
        x = 0.5 if hi <= lo else (v - lo) / (hi - lo)
        out.append(SPARK[min(max(round(x * (len(SPARK) - 1)), 0), len(SPARK) - 1)])
    return "".join(out)


def state_text(state: str) -> Text:
    """A channel's state, coloured: held stands out; an early end is red."""
    status = state.split(" ", 1)[0]
    if status == "ended":
        style = "dim" if state.endswith("(completed)") else "bold red"
    else:
        style = STATE_STYLES.get(status, "")
    return Text(state, style=style)


class ChannelTable(DataTable):
    """One row per channel; updated in place (only the cells that changed), so the cursor
    (the selection) stays put and a 64-channel poll stays cheap."""

    rows_data: reactive[tuple[ChannelRow, ...]] = reactive((), always_update=True)
    compact: reactive[bool] = reactive(False)  # the narrow column set (COMPACT_COLUMNS)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, tuple[str, ...]] = {}

    @property
    def columns_shown(self) -> tuple[str, ...]:
        return COMPACT_COLUMNS if self.compact else COLUMNS

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self._add_columns()

    def _add_columns(self) -> None:
        for name in self.columns_shown:
            self.add_column(name, key=name)

    def watch_compact(self, _old: bool, _new: bool) -> None:
        """Another column set: rebuild the columns and rows, keeping the selected row."""
        if not self.is_mounted:
            return
        row = self.cursor_row
        self._shown.clear()
        self.clear(columns=True)
        self._add_columns()
        self.watch_rows_data(self.rows_data)
        if self.row_count:
            self.move_cursor(row=min(row, self.row_count - 1))

    def reset(self) -> None:
        """Forget every row (another run is shown)."""
        self._shown.clear()
        self.clear()

    def watch_rows_data(self, rows: tuple[ChannelRow, ...]) -> None:
        columns = self.columns_shown
        state_col = columns.index("state")
        for row in rows:
            key = str(row.channel)
            cells = row.cells(columns)
            before = self._shown.get(key)
            if before is None:
                self.add_row(*(state_text(c) if k == state_col else Text(c)  # never markup
                               for k, c in enumerate(cells)), key=key)
            else:
                for k, (name, value) in enumerate(zip(columns, cells)):
                    if value != before[k]:
                        self.update_cell(key, name, state_text(value) if k == state_col
                                         else Text(value), update_width=True)
            self._shown[key] = cells

    @property
    def selected_channel(self) -> int | None:
        """The channel under the cursor, or None while the table is empty."""
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(key.value) if key.value is not None else None


def _event_order(e: dict) -> tuple[float, float, int]:
    """Time order; at one instant the channels' events first (by channel), then the run's."""
    return (e["t"], math.inf if e["channel"] is None else e["channel"], e["id"])


class EventLog(DataTable):
    """The run's events, newest first; warnings, alarms and errors highlighted (alarms in
    bold until acknowledged). Filtered to one channel (and the run-wide events) or not."""

    can_focus = False
    events: reactive[tuple[dict, ...]] = reactive((), always_update=True)  # new events

    def __init__(self, t0: float = 0.0, keep: int = 200, **kwargs) -> None:
        super().__init__(**kwargs)
        self.t0 = t0  # the run's start: times are shown as h:mm:ss since then
        self.keep = keep
        self.channel: int | None = None  # the filter: None for every event
        self.ack_id = 0  # alarms with ids up to this one are acknowledged
        self._kept: deque[dict] = deque(maxlen=keep)
        self._max_id = 0

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("run time", "ch", "level", "kind", "message")
        self._title()

    def reset(self, events: Iterable[dict], channel: int | None, t0: float | None = None
              ) -> None:
        """Show ``events`` (already filtered for ``channel``) instead of what is shown."""
        self.channel = channel
        if t0 is not None:
            self.t0 = t0
        self._kept.clear()
        self._max_id = 0
        self._extend(events)
        self._title()
        self._redraw()

    def acknowledge(self, ack_id: int) -> None:
        self.ack_id = ack_id
        self._redraw()

    def watch_events(self, new: tuple[dict, ...]) -> None:
        if self._extend(new):
            self._redraw()

    def _extend(self, events: Iterable[dict]) -> bool:
        added = False
        for e in events:
            if e["id"] > self._max_id and (self.channel is None or e["channel"] in (
                    None, self.channel)):
                self._kept.append(e)
                self._max_id = e["id"]
                added = True
        return added

    def _title(self) -> None:
        self.border_title = ("events: all channels (f: filter)" if self.channel is None else
                             f"events: channel {self.channel} and the run's (f: all)")

    def _redraw(self) -> None:
        self.clear()
        for e in sorted(self._kept, key=_event_order, reverse=True):
            level = e["level"]
            acked = level in ALARM_LEVELS and e["id"] <= self.ack_id
            style = ACKED_STYLES[level] if acked else LEVEL_STYLES.get(level, "")
            ch = "run" if e["channel"] is None else str(e["channel"])
            self.add_row(*(Text(str(v), style=style) for v in (
                fmt_elapsed(e["t"] - self.t0), ch, level, e["kind"], e["message"])))


class StatusLine(Static):
    """One line: which run, its state, and whether the store answered."""

    message: reactive[str] = reactive("connecting…")

    def render(self) -> Text:
        return Text(self.message)  # a run's end reason is free text: never markup


class AlarmBadge(Static):
    """How many alarms nobody has acknowledged yet (flashes while there are any)."""

    count: reactive[int] = reactive(0)

    def render(self) -> str:
        if not self.count:
            return ""
        return f"⚠ {self.count} new alarm{'s' if self.count > 1 else ''} — k: acknowledge"

    def watch_count(self, count: int) -> None:
        self.display = count > 0


class HeldBanner(Static):
    """The station interlock holds every channel: a red band across the screen."""

    interlock: reactive[Interlock] = reactive(Interlock)
    run_ended: reactive[bool] = reactive(False)

    def __init__(self, t0: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.t0 = t0

    def render(self) -> RenderableType:
        lock = self.interlock
        if not lock.held:
            return ""
        since = "" if lock.t is None else f" (since run time {fmt_elapsed(lock.t - self.t0)})"
        head = "RUN ENDED WHILE THE STATION WAS HELD" if self.run_ended else "STATION HELD"
        text = Text.assemble((f"{head}: ", "bold"), lock.message, since)
        if lock.note:
            text.append(f"\n{lock.note}")
        return text

    def watch_interlock(self, lock: Interlock) -> None:
        self.display = lock.held


class StationPanel(VerticalScroll):
    """The station's atmosphere and gas cells: value, limit and trend of each quantity, and
    the interlock state on top."""

    readings: reactive[tuple[Reading, ...]] = reactive(())
    interlock: reactive[Interlock] = reactive(Interlock)

    def __init__(self, t0: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.t0 = t0

    def compose(self) -> ComposeResult:
        yield Static(id="station-state")
        yield Static(id="station-readings")

    def on_mount(self) -> None:
        self.border_title = "station"
        self._show_state()
        self._show_readings()

    def watch_readings(self) -> None:
        if self.is_mounted:
            self._show_readings()

    def watch_interlock(self) -> None:
        if self.is_mounted:
            self._show_state()

    def _show_state(self) -> None:
        lock = self.interlock
        if lock.held:
            since = "" if lock.t is None else f" since {fmt_elapsed(lock.t - self.t0)}"
            text = Text.assemble("interlock ", (f" HELD{since} ", "bold white on red"))
        else:
            text = Text.assemble("interlock ", (" clear ", "bold green"))
        self.query_one("#station-state", Static).update(text)

    def _show_readings(self) -> None:
        body = self.query_one("#station-readings", Static)
        if not self.readings:
            body.update(Text("no station sensors logged in this run", style="dim"))
            return
        body.update(readings_table(self.readings))


def readings_table(readings: Sequence[Reading]) -> Table:
    """The panel's table: group, quantity, value, limit, trend."""
    table = Table.grid(padding=(0, 1))
    for justify in ("left", "left", "right", "left", "left"):
        table.add_column(justify=justify, no_wrap=True)  # type: ignore[arg-type]
    group = None
    for r in readings:
        value = "-" if r.value is None else f"{_fmt_value(r.value, r.unit)} {r.unit}"
        limit = "" if r.limit is None else f"≤ {r.limit:g}"
        table.add_row(Text(r.group if r.group != group else "", style="bold"), r.name,
                      Text(value, style=READING_STYLES[r.level]), Text(limit, style="dim"),
                      Text(sparkline(r.trend, r.lo, r.hi), style="cyan"))
        group = r.group
    return table


def _fmt_value(v: float, unit: str) -> str:
    return f"{v:.2f}" if unit == "ppm" else f"{v:.1f}"


class PotentialPlot(PlotextPlot):
    """E vs time of the selected channel (decimated), over the span its title names."""

    points: reactive[tuple[tuple[float, float], ...]] = reactive(())
    span: reactive[str] = reactive("whole run")  # "last 12 h", "whole run"

    def watch_points(self) -> None:
        self._draw()

    def watch_span(self) -> None:
        self._draw()

    def _draw(self) -> None:
        plt, points = self.plt, self.points
        plt.clear_data()
        plt.title(f"E vs t ({self.span})")
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
        for k, label in ((1, "plate"), (2, "strip")):
            xy = [(c[0], c[k]) for c in etas if not math.isnan(c[k])]
            if xy:
                plt.plot([p[0] for p in xy], [p[1] for p in xy], label=label, marker="braille")
        self.refresh()


class ConfirmScreen(ModalScreen[bool]):
    """Ask y/n before a command is sent; dismisses with True for yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
        Binding("escape", "answer(False)", "no", show=False)]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="dialog"):
            yield Label(Text(self.question), id="question")
            yield Label("[b]y[/b] yes   [b]n[/b] no", id="answer-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def run_option(run: dict, current: str) -> Option:
    """One line of the run picker: id, status, channels, name (the shown run marked)."""
    mark = "●" if run["id"] == current else " "
    text = (f"{mark} {run['id']:<22} {run['status']:<12} {run['n_channels']:>3} ch  "
            f"{str(run['name'] or '')[:40]}")
    return Option(Text(text), id=run["id"])  # the name is free text: never markup


class RunPicker(ModalScreen[str | None]):
    """Choose another run of the store (newest first); dismisses with its id, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, runs: Sequence[dict], current: str) -> None:
        super().__init__()
        self.runs = list(runs)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label("switch run — enter: show it, escape: stay", id="picker-title")
            yield OptionList(*(run_option(r, self.current) for r in self.runs),
                             id="run-list")

    def on_mount(self) -> None:
        runs = self.query_one("#run-list", OptionList)
        ids = [r["id"] for r in self.runs]
        if self.current in ids:
            runs.highlighted = ids.index(self.current)
        runs.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
