"""What the monitor shows, read from the store: plain data, no Textual.

``StoreView`` holds one read-only connection to a run and turns each poll into a ``Snapshot``
(the channel rows, new events, and the selected channel's plot data). It never writes.

    >>> view = StoreView(db, "latest")
    >>> snap = view.poll(selected=0)
    >>> snap.rows[0].cells()[:3]
    ('0', 'G1', '1 M NaPF6 in diglyme')
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from protocols.plan import plan_from_json
from protocols.summary import plan_totals
from rig.analysis.cycles import per_cycle
from rig.store import (
    get_channels,
    get_events,
    get_samples,
    get_steps,
    latest_sample,
    open_reader,
    resolve_run,
)

PLOT_POINTS = 500
EVENT_KEEP = 200
BUSY_WAIT_MS = 200
COLUMNS = ("channel", "cell", "electrolyte", "state", "cycle", "E (V)", "I (mA)", "last CE",
           "η (mV)", "time left")


def is_busy(exc: BaseException) -> bool:
    """True for the SQLite errors that mean "try again shortly" (locked or busy)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


@dataclass(frozen=True)
class ChannelRow:
    """One line of the channel table, values in display units (None: not known yet)."""

    channel: int
    cell_id: str
    electrolyte: str
    state: str
    cycle: int | None
    total_cycles: int
    e_V: float | None
    i_mA: float | None
    last_ce: float | None
    eta_mV: float | None
    time_left_s: float | None

    def cells(self) -> tuple[str, ...]:
        """The row as the table's strings, in ``COLUMNS`` order."""
        cycle = "-" if self.cycle is None else (
            f"{self.cycle} of {self.total_cycles}" if self.total_cycles else str(self.cycle))
        return (str(self.channel), self.cell_id, self.electrolyte, self.state, cycle,
                _num(self.e_V, "{:+.4f}"), _num(self.i_mA, "{:+.4g}"),
                _num(self.last_ce, "{:.2%}"), _num(self.eta_mV, "{:.1f}"),
                fmt_left(self.time_left_s))


@dataclass(frozen=True)
class Snapshot:
    """One poll of the store."""

    run_id: str
    run_status: str
    run_end_reason: str | None
    rows: tuple[ChannelRow, ...]
    new_events: tuple[dict, ...]
    trace: tuple[tuple[float, float], ...]  # selected channel: (hours since start, E in V)
    etas: tuple[tuple[int, float, float], ...]  # selected channel: (cycle, plate mV, strip mV)

    @property
    def ended(self) -> bool:
        return self.run_status != "running"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or math.isnan(x) else fmt.format(x)


def fmt_left(seconds: float | None) -> str:
    """Time left as ``h:mm`` (or ``-``).

    >>> fmt_left(5400), fmt_left(None)
    ('1:30', '-')
    """
    if seconds is None:
        return "-"
    minutes = int(max(seconds, 0.0) // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def channel_state(ch: dict) -> str:
    """running / paused / held / ended, with the end reason when there is one."""
    reason = ch.get("end_reason")
    return f"{ch['status']} ({reason})" if reason else ch["status"]


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


class StoreView:
    """A read-only window on one run of a store (``run``: id, unique prefix or "latest")."""

    def __init__(self, db: str | os.PathLike, run: str = "latest") -> None:
        self.db = Path(db)
        self.conn = open_reader(self.db)
        # a short wait per try: a locked store shows as "busy" within a second or two
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")
        meta = resolve_run(self.conn, run)
        self.run_key: int = meta["key"]
        self.run_id: str = meta["id"]
        self.started_at: float = meta["started_at"] or 0.0
        plan = plan_from_json(meta["plan_json"]) if meta.get("plan_json") else None
        self.total_cycles = plan.total_cycles if plan else 0
        self.durations = {ch: d for ch, (d, _) in plan_totals(plan).items()} if plan else {}
        self._last_event_id: int | None = None
        self._lock = threading.Lock()  # one user of the connection at a time; close waits
        self._closed = False

    def close(self) -> None:
        """Close the connection (waits for a poll in progress on another thread)."""
        with self._lock:
            self._closed = True
            self.conn.close()

    def poll(self, selected: int | None) -> Snapshot | None:
        """Read everything the screen shows (``selected``: whose plots; None: the first channel).

        None once closed. Raises sqlite3.OperationalError when the store stays busy.
        """
        with self._lock:
            return None if self._closed else self._poll(selected)

    def _poll(self, selected: int | None) -> Snapshot:
        run = resolve_run(self.conn, self.run_id)
        rows = tuple(self._row(ch) for ch in get_channels(self.conn, self.run_key))
        if selected is None and rows:
            selected = rows[0].channel
        trace: tuple = ()
        etas: tuple = ()
        if selected is not None:
            samples = get_samples(self.conn, self.run_key, selected, max_points=PLOT_POINTS)
            trace = tuple(((s[0] - self.started_at) / 3600, s[3]) for s in samples)
            etas = tuple((c["cycle"], c["eta_plate_V"] * 1e3, c["eta_strip_V"] * 1e3)
                         for c in per_cycle(get_steps(self.conn, self.run_key, selected)))
        return Snapshot(self.run_id, run["status"], run["end_reason"], rows,
                        tuple(self._new_events()), trace, etas)

    def _new_events(self) -> list[dict]:
        if self._last_event_id is None:
            events = get_events(self.conn, self.run_key, limit=EVENT_KEEP)
        else:
            events = get_events(self.conn, self.run_key, after_id=self._last_event_id)
        if events:
            self._last_event_id = events[-1]["id"]
        elif self._last_event_id is None:
            self._last_event_id = 0
        return events

    def _row(self, ch: dict) -> ChannelRow:
        n = ch["channel"]
        last = latest_sample(self.conn, self.run_key, n)
        cycles = per_cycle(get_steps(self.conn, self.run_key, n))
        done = [c for c in cycles if not math.isnan(c["ce"])]
        eta = None
        if done:
            eta = (done[-1]["eta_plate_V"] + done[-1]["eta_strip_V"]) / 2 * 1e3
        left = None
        if n in self.durations:
            if ch["status"] == "ended":
                left = 0.0
            elif last is not None:
                left = self.durations[n] - (last[0] - self.started_at)
        return ChannelRow(
            channel=n, cell_id=ch["cell_id"] or "", electrolyte=ch["electrolyte"] or "",
            state=channel_state(ch), cycle=None if last is None else last[2],
            total_cycles=self.total_cycles,
            e_V=None if last is None else last[3],
            i_mA=None if last is None else last[4] * 1e3,
            last_ce=_nan_to_none(done[-1]["ce"]) if done else None,
            eta_mV=_nan_to_none(eta), time_left_s=left)
