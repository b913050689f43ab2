"""`rig monitor`: watch a run (live or finished) and steer it, from any terminal.

The app reads the store in a thread worker every ``POLL_S`` seconds and pushes each
``Snapshot`` into its widgets; the only thing it writes is a command row (``send_command``),
after a y/n confirmation.

Keys: ``p``/``r``/``a`` pause, resume, abort the selected channel (``P``/``R``/``A``: the
whole run); ``s`` switch to another run of the store; ``f`` filter the event log to the
selected channel (and the run-wide events) and back; ``k`` acknowledge the alarms shown so far:
the alarm count and the held banner stop flashing; ``z`` zoom the E-vs-t plot: the last 2 h,
the last 12 h (the default) or the whole run. Acknowledging is this monitor's own
business: it writes nothing to the store, so another monitor (or this one restarted) shows
those alarms as new again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header

from rig import stop_signals
from rig.store import StoreError, send_command
from rig.tui.data import SPANS_S, AlarmBook, Snapshot, StoreView, is_busy, span_label
from rig.tui.widgets import (
    AlarmBadge,
    ChannelTable,
    ConfirmScreen,
    EventLog,
    HeldBanner,
    OverpotentialPlot,
    PotentialPlot,
    RunPicker,
    StationPanel,
    StatusLine,
)

POLL_S = 0.5
BLINK_S = 0.5
NARROW_BELOW = 120  # columns


class MonitorApp(App):
    """Channel table, plots of the selected channel, station panel, event log; keys to
    pause/resume/abort, switch run, filter events and acknowledge alarms."""

    CSS_PATH = Path(__file__).with_name("monitor.tcss")  # absolute: subclasses find it too
    TITLE = "narig monitor"
    # a laptop over ssh (80x24): below 120 columns the table is compact and the station panel
    # takes the plots' place on `t`; below 32 rows the header goes and the event log shrinks
    # typed as textual declares them (`ClassVar[...] | None`, an instance variable to mypy)
    HORIZONTAL_BREAKPOINTS: list[tuple[int, str]] | None = [  # noqa: RUF012
        (0, "-narrow"), (NARROW_BELOW, "-wide")]
    VERTICAL_BREAKPOINTS: list[tuple[int, str]] | None = [  # noqa: RUF012
        (0, "-short"), (32, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "command('pause', False)", "pause"),
        Binding("r", "command('resume', False)", "resume"),
        Binding("a", "command('abort', False)", "abort"),
        Binding("P", "command('pause', True)", "pause all"),
        Binding("R", "command('resume', True)", "resume all"),
        Binding("A", "command('abort', True)", "abort all"),
        Binding("s", "switch_run", "switch run"),
        Binding("f", "filter_events", "filter events"),
        Binding("k", "acknowledge", "acknowledge"),
        Binding("t", "toggle_station", "station"),
        Binding("z", "zoom", "zoom"),
        Binding("q", "quit", "quit"),
        # the run in this terminal: Ctrl-C is SIGINT, as for a plain `rig run`
        Binding("ctrl+c", "interrupt", "interrupt the run", show=False, priority=True),
    ]

    def __init__(self, db: str | os.PathLike, run: str = "latest", *,
                 poll_s: float = POLL_S, here: bool = False, flash: bool = True) -> None:
        """``here``: the run executes in this process (``rig run --monitor``); ``flash``:
        unacknowledged alarms flash (off: they are shown steady, e.g. for a screenshot)."""
        super().__init__()
        self.db = Path(db)
        self.view = StoreView(self.db, run)
        self.poll_s = poll_s
        self.here = here
        self.flash = flash
        self.sub_title = self._sub_title()
        self.alarms = AlarmBook()
        self.log_filter = False  # True: the event log shows the selected channel's events
        self.span_s: float | None = SPANS_S[1]  # the E-vs-t plot's span (z); None: whole run
        self._polling = False
        self._poll_again = False  # asked for while a read was in flight: read once more
        self._blink_on = False
        self.last_snapshot: Snapshot | None = None

    def _sub_title(self) -> str:
        return self.view.run_id + (" (running in this terminal)" if self.here else "")

    def compose(self) -> ComposeResult:
        t0 = self.view.started_at
        yield Header()
        yield HeldBanner(t0=t0)
        with Horizontal(id="top"):
            yield StatusLine()
            yield AlarmBadge()
        yield ChannelTable()
        with Horizontal(id="middle"):
            yield PotentialPlot()
            yield OverpotentialPlot()
            yield StationPanel(t0=t0)
        yield EventLog(t0=t0)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        # kept: while a dialog is up, self.query_one would search the dialog's screen
        self.table = self.query_one(ChannelTable)
        self.log_view = self.query_one(EventLog)
        self.status = self.query_one(StatusLine)
        self.badge = self.query_one(AlarmBadge)
        self.banner = self.query_one(HeldBanner)
        self.panel = self.query_one(StationPanel)
        self.e_plot = self.query_one(PotentialPlot)
        self.eta_plot = self.query_one(OverpotentialPlot)
        self.table.focus()
        self.table.compact = self.size.width < NARROW_BELOW
        self.poll_store()
        self.set_interval(self.poll_s, self.poll_store)
        self.set_interval(BLINK_S, self._blink)
        self._unsubscribe_signals: Callable[[], None] = lambda: None
        if self.here:  # the run's stop signals close the monitor (the engine stops the run)
            loop = asyncio.get_running_loop()

            def close(_sig: signal.Signals) -> None:  # in the signal handler: hand it on
                loop.call_soon_threadsafe(self.exit)
            self._unsubscribe_signals = stop_signals.subscribe(close)

    def on_unmount(self) -> None:
        self._unsubscribe_signals()
        self.view.close()

    def action_interrupt(self) -> None:
        """Ctrl-C. With the run in this terminal (`rig run --monitor`): what Ctrl-C does to a
        plain `rig run` — SIGINT: every output off, the run 'interrupted' (resumable), exit 4.
        In `rig monitor` the run is not this process's: Textual's reminder to press q."""
        if self.here and stop_signals.active():
            stop_signals.request(signal.SIGINT)
        else:
            self.action_help_quit()

    # ---- reading -----------------------------------------------------------------------
    def poll_store(self) -> None:
        """Start a read; if one is still running, start another as soon as it is done."""
        if self._polling:
            self._poll_again = True
            return
        self._polling, self._poll_again = True, False
        selected = self.table.selected_channel
        self._read(self.view, selected, selected if self.log_filter else None, self.span_s)

    def _read_done(self) -> None:
        self._polling = False
        if self._poll_again:
            self.poll_store()

    @work(thread=True, group="read")
    def _read(self, view: StoreView, selected: int | None, log_channel: int | None,
              span_s: float | None) -> None:
        try:
            snap = view.poll(selected, log_channel, span_s)
        except (sqlite3.Error, StoreError) as exc:
            text = "store busy, retrying" if is_busy(exc) else f"store error: {exc}; retrying"
            self._call_ui(self._show_trouble, text)
        except Exception as exc:  # noqa: BLE001 -- an unattended monitor keeps trying
            self._call_ui(self._show_trouble, f"cannot read the run: {type(exc).__name__}: "
                          f"{exc}; retrying")
        else:
            self._call_ui(self._show, snap)  # None: that view has been closed

    def _call_ui(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Run ``fn`` on the UI thread, unless the app has stopped meanwhile."""
        try:
            self.call_from_thread(fn, *args, **kwargs)
        except RuntimeError:
            pass  # the app is shutting down

    def _show(self, snap: Snapshot | None) -> None:
        self._read_done()
        if snap is None or snap.run_id != self.view.run_id:
            return  # read from a run the user has switched away from
        self.last_snapshot = snap
        self.table.rows_data = snap.rows
        self.alarms.add(snap.new_events)
        if snap.log_seed is not None:
            self.log_view.reset(snap.log_seed, snap.log_channel)
        self.log_view.events = snap.new_events
        self.e_plot.span = snap.trace_span
        self.e_plot.points = snap.trace
        self.eta_plot.etas = snap.etas
        self.panel.readings = snap.station
        self.panel.interlock = snap.interlock
        self.banner.run_ended = snap.ended
        self.banner.interlock = snap.interlock
        self.badge.count = len(self.alarms.unacked)
        self._show_status(snap)
        self._apply_blink()

    def _show_status(self, snap: Snapshot) -> None:
        status = self.status
        status.set_class(False, "busy")
        status.set_class(snap.ended, "ended")
        if snap.ended:
            why = f" — {snap.run_end_reason}" if snap.run_end_reason else ""
            status.message = f"run {snap.run_id} has ended: {snap.run_status}{why}"
        else:
            status.message = f"run {snap.run_id}: {snap.run_status}"

    def _show_trouble(self, text: str) -> None:
        self._read_done()
        status = self.status
        status.set_class(True, "busy")
        status.message = text

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, ChannelTable):
            self.poll_store()  # show the newly selected channel's plots at once

    # ---- alarms ------------------------------------------------------------------------
    def _blink(self) -> None:
        self._blink_on = self.flash and not self._blink_on
        self._apply_blink()

    def _apply_blink(self) -> None:
        """Flash the alarm count and the held banner while they hold unacknowledged news."""
        lock = self.banner.interlock
        banner_new = lock.held and not self.alarms.is_acked(lock.event_id)
        self.banner.set_class(banner_new and self._blink_on, "blink")
        self.badge.set_class(bool(self.badge.count) and self._blink_on, "blink")

    def action_acknowledge(self) -> None:
        n = self.alarms.acknowledge()
        self.log_view.acknowledge(self.alarms.ack_id)
        self.badge.count = 0
        self._apply_blink()
        self.notify(f"{n} alarm{'' if n == 1 else 's'} acknowledged (in this monitor)"
                    if n else "no new alarms")

    # ---- the event log's filter ----------------------------------------------------------
    def action_filter_events(self) -> None:
        if not self.log_filter and self.table.selected_channel is None:
            self.notify("no channel selected", severity="warning")
            return
        self.log_filter = not self.log_filter
        self.poll_store()

    # ---- the E-vs-t plot's span ----------------------------------------------------------
    def action_zoom(self) -> None:
        """Cycle the E-vs-t span: last 2 h, last 12 h, whole run (a run shorter than the
        span is shown whole)."""
        self.span_s = SPANS_S[(SPANS_S.index(self.span_s) + 1) % len(SPANS_S)]
        self.notify(f"E vs t: {span_label(self.span_s)}")
        self.poll_store()

    # ---- narrow terminals ------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        if hasattr(self, "table"):  # a resize can come before on_mount
            self.table.compact = event.size.width < NARROW_BELOW

    def action_toggle_station(self) -> None:
        """On a narrow terminal, swap the plots for the station panel (and back)."""
        self.screen.toggle_class("-station")

    # ---- switching runs --------------------------------------------------------------------
    def action_switch_run(self) -> None:
        self._list_runs(self.view)

    @work(thread=True, group="runs", exclusive=True)
    def _list_runs(self, view: StoreView) -> None:
        try:
            runs = view.runs()
        except (sqlite3.Error, StoreError) as exc:
            self._call_ui(self.notify, f"cannot list runs: {exc}", severity="error")
            return
        self._call_ui(self._pick, runs)

    def _pick(self, runs: list[dict]) -> None:
        def picked(run_id: str | None) -> None:
            if run_id and run_id != self.view.run_id:
                self.switch_to(run_id)

        self.push_screen(RunPicker(runs, self.view.run_id), picked)

    def switch_to(self, run: str) -> None:
        """Show another run of the same store (id, prefix or "latest")."""
        try:
            view = StoreView(self.db, run)
        except (sqlite3.Error, StoreError) as exc:
            self.notify(f"cannot open run {run}: {exc}", severity="error")
            return
        old, self.view = self.view, view
        self._close(old)
        t0 = view.started_at
        self.sub_title = self._sub_title()
        self.alarms = AlarmBook()
        self.log_filter = False
        self.table.reset()
        self.log_view.ack_id = 0
        self.log_view.reset((), None, t0=t0)
        self.banner.t0 = self.panel.t0 = t0
        self.e_plot.points, self.eta_plot.etas = (), ()
        self.status.message = f"run {view.run_id}: reading…"
        self.poll_store()

    @work(thread=True, group="close")
    def _close(self, view: StoreView) -> None:
        view.close()  # waits for a read of it still in flight

    # ---- steering ----------------------------------------------------------------------
    def action_command(self, command: str, whole_run: bool) -> None:
        channel = None if whole_run else self.table.selected_channel
        if not whole_run and channel is None:
            self.notify("no channel selected", severity="warning")
            return
        run_id = self.view.run_id
        question = (f"{command} the whole run {run_id}?" if whole_run else
                    f"{command} channel {channel} of run {run_id}?")

        def answered(yes: bool | None) -> None:
            if yes:
                self._send(run_id, command, channel)

        self.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="send")
    def _send(self, run_id: str, command: str, channel: int | None) -> None:
        target = "the run" if channel is None else f"channel {channel}"
        try:
            cid = send_command(self.db, run_id, command, channel)
        except (StoreError, sqlite3.OperationalError) as exc:
            self._call_ui(self.notify, f"{command} not sent: {exc}", severity="error")
        else:
            self._call_ui(self.notify, f"{command} sent to {target} (command {cid})")


def run_monitor(db: str | os.PathLike, run: str = "latest") -> None:
    """Open the monitor on ``db`` (blocks until the user quits)."""
    MonitorApp(db, run).run()
