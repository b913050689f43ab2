"""`rig monitor`: watch a run (live or finished) and steer it, from any terminal.

The app reads the store in a thread worker every ``POLL_S`` seconds and pushes each
``Snapshot`` into its widgets; the only thing it writes is a command row (``send_command``),
after a y/n confirmation.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header

from rig.store import StoreError, send_command
from rig.tui.data import Snapshot, StoreView, is_busy
from rig.tui.widgets import (
    ChannelTable,
    ConfirmScreen,
    EventLog,
    OverpotentialPlot,
    PotentialPlot,
    StatusLine,
)

POLL_S = 0.5


class MonitorApp(App):
    """Channel table, plots of the selected channel, event log; keys to pause/resume/abort."""

    CSS_PATH = "monitor.tcss"
    TITLE = "narig monitor"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("p", "command('pause', False)", "pause ch"),
        Binding("r", "command('resume', False)", "resume ch"),
        Binding("a", "command('abort', False)", "abort ch"),
        Binding("P", "command('pause', True)", "pause run"),
        Binding("R", "command('resume', True)", "resume run"),
        Binding("A", "command('abort', True)", "abort run"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, db: str | os.PathLike, run: str = "latest") -> None:
        super().__init__()
        self.db = Path(db)
        self.view = StoreView(self.db, run)
        self.sub_title = self.view.run_id
        self._polling = False
        self.last_snapshot: Snapshot | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield StatusLine()
        yield ChannelTable()
        with Horizontal(id="plots"):
            yield PotentialPlot()
            yield OverpotentialPlot()
        yield EventLog(t0=self.view.started_at)
        yield Footer()

    def on_mount(self) -> None:
        # kept: while a dialog is up, self.query_one would search the dialog's screen
        self.table = self.query_one(ChannelTable)
        self.log_view = self.query_one(EventLog)
        self.status = self.query_one(StatusLine)
        self.e_plot = self.query_one(PotentialPlot)
        self.eta_plot = self.query_one(OverpotentialPlot)
        self.table.focus()
        self.poll_store()
        self.set_interval(POLL_S, self.poll_store)

    def on_unmount(self) -> None:
        self.view.close()

    # ---- reading -----------------------------------------------------------------------
    def poll_store(self) -> None:
        """Start a read unless the previous one is still running."""
        if not self._polling:
            self._polling = True
            self._read(self.table.selected_channel)

    @work(thread=True, group="read")
    def _read(self, selected: int | None) -> None:
        try:
            snap = self.view.poll(selected)
        except (sqlite3.Error, StoreError) as exc:
            text = "store busy, retrying" if is_busy(exc) else f"store error: {exc}; retrying"
            self._call_ui(self._show_trouble, text)
        else:
            if snap is not None:  # None: the app is closing
                self._call_ui(self._show, snap)

    def _call_ui(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the UI thread, unless the app has stopped meanwhile."""
        try:
            self.call_from_thread(fn, *args)
        except RuntimeError:
            pass  # the app is shutting down

    def _show(self, snap: Snapshot) -> None:
        self._polling = False
        self.last_snapshot = snap
        self.table.rows_data = snap.rows
        self.log_view.events = snap.new_events
        self.e_plot.points = snap.trace
        self.eta_plot.etas = snap.etas
        status = self.status
        status.set_class(False, "busy")
        status.set_class(snap.ended, "ended")
        if snap.ended:
            why = f" — {snap.run_end_reason}" if snap.run_end_reason else ""
            status.message = f"run {snap.run_id} has ended: {snap.run_status}{why}"
        else:
            status.message = f"run {snap.run_id}: {snap.run_status}"

    def _show_trouble(self, text: str) -> None:
        self._polling = False
        status = self.status
        status.set_class(True, "busy")
        status.message = text

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, ChannelTable):
            self.poll_store()  # show the newly selected channel's plots at once

    # ---- steering ----------------------------------------------------------------------
    def action_command(self, command: str, whole_run: bool) -> None:
        channel = None if whole_run else self.table.selected_channel
        if not whole_run and channel is None:
            self.notify("no channel selected", severity="warning")
            return
        target = "the whole run" if whole_run else f"channel {channel}"
        question = f"{command} {target} of run {self.view.run_id}?"

        def answered(yes: bool | None) -> None:
            if yes:
                self._send(command, channel)

        self.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="send")
    def _send(self, command: str, channel: int | None) -> None:
        target = "the run" if channel is None else f"channel {channel}"
        try:
            cid = send_command(self.db, self.view.run_id, command, channel)
        except (StoreError, sqlite3.OperationalError) as exc:
            self.call_from_thread(self.notify, f"{command} not sent: {exc}", severity="error")
        else:
            self.call_from_thread(self.notify, f"{command} sent to {target} (command {cid})")


def run_monitor(db: str | os.PathLike, run: str = "latest") -> None:
    """Open the monitor on ``db`` (blocks until the user quits)."""
    MonitorApp(db, run).run()
