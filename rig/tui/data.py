"""What the monitor shows, read from the store: plain data, no Textual.

``StoreView`` holds one read-only connection to a run and turns each poll into a ``Snapshot``:
the channel rows, the new events, the selected channel's plot data, the station's sensors and
the interlock state. It never writes. Everything that grows with the run is read
incrementally (steps and events after the last one seen, sensor readings after the last
time seen) or decimated in SQL (the E trace), so a poll of a 5000-cycle, 64-channel run costs
about what a poll of a short one does.

    >>> view = StoreView(db, "latest")
    >>> snap = view.poll(selected=0)
    >>> snap.rows[0].cells()[:3]
    ('0', 'G1', '1 M NaPF6 in diglyme')
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protocols.plan import Loop, Step, plan_from_json
from protocols.summary import plan_totals
from rig.analysis.cycles import per_cycle
from rig.events import HOLD_KINDS, INTERLOCK_KINDS, EventKind
from rig.store import (
    get_channels,
    get_checkpoint,
    get_events,
    get_run,
    get_samples,
    get_sensors,
    latest_sample,
    list_runs,
    open_reader,
    resolve_run,
)
from rig.store.read import half_cycle_etas, last_event_of, last_steps, steps_from

PLOT_POINTS = 500
SPANS_S: tuple[float | None, ...] = (2 * 3600.0, 12 * 3600.0, None)  # E vs t: key z; None: all
DEFAULT_SPAN_S = 12 * 3600.0
EVENT_KEEP = 200
BUSY_WAIT_MS = 200
STEPS_TAIL = 16  # steps read for a channel's first poll: enough for its last complete cycle
TREND_WINDOW_S = 12 * 3600.0  # the station panel's trends: the last 12 h (of the run's clock)
TREND_POINTS = 16  # time buckets of a trend (one character each)
ALARM_LEVELS = ("alarm", "error")
COLUMNS = ("ch", "cell", "electrolyte", "state", "step", "cycle", "E (V)", "I (mA)", "Q (mAh)",
           "CE", "η (mV)", "left")
# at 80 columns (a laptop over ssh) the table keeps what a glance needs and fits the width
COMPACT_COLUMNS = ("ch", "cell", "state", "cycle", "E (V)", "I (mA)", "CE", "η (mV)", "left")
NOT_MEANINGFUL = "n/a"  # CE of a symmetric cell: both half-cycles pass the same fixed charge


def is_busy(exc: BaseException) -> bool:
    """True for the SQLite errors that mean "try again shortly" (locked or busy)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


# ---- what the screen shows -----------------------------------------------------------------
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
    step: str = ""  # the label of the step in progress (or of the last one)
    q_mAh: float | None = None  # charge passed in the step in progress, signed
    output_on: bool = True  # False once the channel ended: its last current is history
    ce_meaningful: bool = True  # False for a symmetric cell

    def cells(self, columns: Sequence[str] = COLUMNS) -> tuple[str, ...]:
        """The row as the table's strings, in ``columns`` order (``COLUMNS`` by default)."""
        cycle = "-" if self.cycle is None else (
            f"{self.cycle} of {self.total_cycles}" if self.total_cycles else str(self.cycle))
        ce = _num(self.last_ce, "{:.2%}") if self.ce_meaningful else NOT_MEANINGFUL
        by_name = {
            "ch": str(self.channel), "cell": self.cell_id, "electrolyte": self.electrolyte,
            "state": self.state, "step": self.step or "-", "cycle": cycle,
            "E (V)": _num(self.e_V, "{:+.4f}"),
            "I (mA)": _num(self.i_mA, "{:+.4g}") if self.output_on else "off",
            "Q (mAh)": _num(self.q_mAh, "{:+.4f}"), "CE": ce, "η (mV)": _num(self.eta_mV, "{:.1f}"),
            "left": fmt_left(self.time_left_s)}
        return tuple(by_name[c] for c in columns)


@dataclass(frozen=True)
class Reading:
    """One quantity of the station panel: the latest value, its limit, and a recent trend."""

    group: str  # "glovebox", or the gas cell: "ch0 NaNa-G1"
    name: str  # "O2", "H2O", "T", "p"
    unit: str  # display unit: "ppm", "°C", "mbar"
    value: float | None
    limit: float | None  # in the display unit; None: no limit
    trend: tuple[float | None, ...]  # TREND_POINTS time buckets, oldest first; None: no data
    lo: float  # the trend's scale
    hi: float

    @property
    def level(self) -> str:
        """``over`` the limit, ``near`` it (above 80 %), or ``ok``."""
        if self.value is None or self.limit is None:
            return "ok"
        if self.value > self.limit:
            return "over"
        return "near" if self.value > 0.8 * self.limit else "ok"


@dataclass(frozen=True)
class Interlock:
    """The station interlock as the events tell it: held from an ``interlock_hold`` until a
    later ``interlock_release``."""

    held: bool = False
    message: str = ""  # the hold's (or the release's) event message
    t: float | None = None  # when it happened (run clock)
    event_id: int | None = None  # of the hold: acknowledging alarms up to it stops the flashing
    note: str = ""  # later news while held (clear, resume by hand)


@dataclass(frozen=True)
class Snapshot:
    """One poll of the store."""

    run_id: str
    run_status: str
    run_end_reason: str | None
    rows: tuple[ChannelRow, ...]
    new_events: tuple[dict, ...]  # every event since the last poll (the first: the last 200)
    trace: tuple[tuple[float, float], ...]  # selected channel: (hours since start, E in V)
    etas: tuple[tuple[int, float, float], ...]  # selected channel: (cycle, plate mV, strip mV)
    station: tuple[Reading, ...] = ()
    interlock: Interlock = field(default_factory=Interlock)
    log_channel: int | None = None  # the event filter this poll was made for (None: all)
    log_seed: tuple[dict, ...] | None = None  # set when that filter changed: the log's new rows
    trace_span: str = "whole run"  # what ``trace`` covers: "last 12 h" or "whole run"

    @property
    def ended(self) -> bool:
        return self.run_status != "running"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or math.isnan(x) else fmt.format(x)


def span_label(span_s: float | None) -> str:
    """The E-vs-t plot's span as its title says it.

    >>> span_label(7200.0), span_label(None)
    ('last 2 h', 'whole run')
    """
    return "whole run" if span_s is None else f"last {span_s / 3600:g} h"


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


class HoldClock:
    """How long each channel has been paused or held (its plan stood still meanwhile), from
    its ``paused``/``held`` ... ``resumed`` events, read incrementally."""

    def __init__(self) -> None:
        self.after_id = 0
        self._done: dict[int, float] = {}  # channel -> seconds of the holds that ended
        self._since: dict[int, float] = {}  # channel -> start of the hold in progress

    def add(self, events: Iterable[tuple[int, int | None, float, str]]) -> None:
        """``(id, channel, t, kind)`` in id order."""
        for event_id, channel, t, kind in events:
            if event_id <= self.after_id or channel is None:
                continue  # already counted (or not a channel's)
            self.after_id = event_id
            if kind == EventKind.RESUMED:
                start = self._since.pop(channel, None)
                if start is not None:
                    self._done[channel] = self._done.get(channel, 0.0) + max(t - start, 0.0)
            elif kind in (EventKind.PAUSED, EventKind.HELD):
                self._since.setdefault(channel, t)

    def held_s(self, channel: int, now: float) -> float:
        """Seconds ``channel`` has spent paused or held up to ``now``."""
        start = self._since.get(channel)
        return self._done.get(channel, 0.0) + (0.0 if start is None else max(now - start, 0.0))


# ---- steps: read incrementally -------------------------------------------------------------
class ChannelSteps:
    """A channel's executed steps, fed incrementally: the last step seen, and the CE and mean
    overpotential of its last complete cycle. Keeps only the steps of its last two cycles."""

    def __init__(self) -> None:
        self.last_step = 0  # 0: nothing read yet
        self.label = ""
        self.last_ce: float | None = None
        self.last_eta_mV: float | None = None
        self._recent: dict[int, dict] = {}  # step -> row

    def add(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self._recent[r["step"]] = r  # a re-read (or replaced) step overwrites
            if r["step"] >= self.last_step:
                self.last_step = r["step"]
                self.label = r.get("label") or r.get("kind") or ""
        if not self._recent:
            return
        newest = max(r["cycle"] or 0 for r in self._recent.values())
        self._recent = {k: r for k, r in sorted(self._recent.items())
                        if (r["cycle"] or 0) >= newest - 1}
        done = [c for c in per_cycle(self._recent.values()) if not math.isnan(c["ce"])]
        if done:
            self.last_ce = _nan_to_none(done[-1]["ce"])
            # a half-cycle that ended before it passed any time (aborted while paused) has no
            # mean |E|: stored as NULL
            plate, strip = done[-1]["eta_plate_V"], done[-1]["eta_strip_V"]
            self.last_eta_mV = (None if plate is None or strip is None
                                else _nan_to_none((plate + strip) / 2 * 1e3))


class EtaSeries:
    """Mean |E| of every plating and stripping half-cycle of one channel (the η plot), kept
    up to date from the same incremental step rows; as ``per_cycle`` counts them."""

    def __init__(self, channel: int | None = None,
                 etas: Iterable[tuple[int, str, float | None]] = ()) -> None:
        """``etas``: ``(cycle, "plate" | "strip", mean |E| in V)`` in step order."""
        self.channel = channel
        self._etas: dict[int, list[float]] = {}
        self._cached: tuple[tuple[int, float, float], ...] | None = None
        self._add(etas)

    def add(self, rows: Iterable[dict]) -> None:
        """New step rows (dicts, as ``get_steps`` gives them)."""
        self._add((r["cycle"], r.get("half_cycle"), r.get("e_mean_abs_V")) for r in rows)

    def _add(self, etas: Iterable[tuple[int, str | None, float | None]]) -> None:
        for cycle, half, eta_V in etas:
            if half not in ("plate", "strip") or eta_V is None:
                continue
            pair = self._etas.setdefault(cycle, [math.nan, math.nan])
            k = 0 if half == "plate" else 1
            if pair[k] != eta_V * 1e3:
                pair[k] = eta_V * 1e3
                self._cached = None

    def points(self, max_points: int = PLOT_POINTS) -> tuple[tuple[int, float, float], ...]:
        """``(cycle, plate mV, strip mV)`` in cycle order, at most ``max_points`` of them
        (evenly spread, the last one always in)."""
        if self._cached is None:
            cycles = sorted(self._etas)
            if len(cycles) > max_points:
                step = (len(cycles) - 1) / (max_points - 1)
                cycles = [cycles[round(k * step)] for k in range(max_points)]
            self._cached = tuple((c, *self._etas[c]) for c in cycles)  # type: ignore[misc]
        return self._cached


def plan_step_label(steps: Sequence[Step] | None, path: Sequence[int]) -> str | None:
    """The label of the plan step at ``path`` (a checkpoint's position), or None.

    >>> plan_step_label(plan.channels[0].steps, [0, 1])
    'strip'
    """
    step: Step | None = None
    items: Sequence[Step] = steps or ()
    for index in path:
        if not 0 <= index < len(items):
            return None
        step = items[index]
        items = step.steps if isinstance(step, Loop) else ()
    return None if step is None else (step.label or step.kind)


# ---- the station's sensors -----------------------------------------------------------------
@dataclass(frozen=True)
class _Quantity:
    name: str
    unit: str
    convert: Callable[[float], float]
    min_span: float  # the trend's scale never spans less than this (no noise magnified)


QUANTITIES = {
    "o2_ppm": _Quantity("O2", "ppm", float, 0.0),
    "h2o_ppm": _Quantity("H2O", "ppm", float, 0.0),
    "temperature_K": _Quantity("T", "°C", lambda k: k - 273.15, 1.0),
    "pressure_Pa": _Quantity("p", "mbar", lambda pa: pa / 100.0, 5.0),
}
_ATMOSPHERE = ("o2_ppm", "h2o_ppm", "temperature_K")
_PRESSURE = ("pressure_Pa", "temperature_K")
_INTERLOCK_LIMITS = {"o2_ppm": "o2_max_ppm", "h2o_ppm": "h2o_max_ppm"}  # station_json keys


@dataclass
class _Series:
    sensor: str
    quantity: str
    channel: int | None  # the gas cell of a pressure gauge
    limit: float | None  # display unit
    group: str  # the panel's group when the sensor has no channel
    points: deque[tuple[float, float]] = field(default_factory=deque)  # (t, display value)
    last_t: float | None = None


def trend(points: Sequence[tuple[float, float]], n: int = TREND_POINTS,
          window_s: float = TREND_WINDOW_S) -> tuple[float | None, ...]:
    """``n`` time buckets over the last ``window_s`` of ``points`` (or their whole span when
    shorter), oldest first: the largest value of each bucket (a spike shows); a bucket with no
    reading holds the one before (a sensor's value holds until its next reading).

    >>> trend([(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)], n=2)
    (2.0, 4.0)
    >>> trend([(0, 1.0), (3, 4.0)], n=4)
    (1.0, 1.0, 1.0, 4.0)
    """
    if not points:
        return ()
    t_end = points[-1][0]
    t_start = max(points[0][0], t_end - window_s)
    width = (t_end - t_start) / n
    out: list[float | None] = [None] * n
    for t, v in points:
        if t < t_start:
            continue
        k = n - 1 if width <= 0 else min(int((t - t_start) / width), n - 1)
        prev = out[k]
        out[k] = v if prev is None or v > prev else prev
    for k in range(1, n):
        if out[k] is None:
            out[k] = out[k - 1]
    return tuple(out)


class StationSensors:
    """The sensors a run's station logged (from its ``station_json``), with their limits,
    read incrementally into a trend window per quantity."""

    def __init__(self, station: dict[str, Any], window_s: float = TREND_WINDOW_S) -> None:
        self.window_s = window_s
        locks = station.get("interlocks") or {}
        self.series: list[_Series] = []
        sensors = station.get("sensors") or []
        atmosphere = [s for s in sensors if s.get("kind") == "atmosphere"]
        for q in _ATMOSPHERE:  # O2, H2O, T, whichever transmitter measures them
            for s in atmosphere:
                limit = locks.get(_INTERLOCK_LIMITS.get(q, ""))
                self.series.append(_Series(s["name"], q, None, limit, "glovebox"))
        for s in sorted((s for s in sensors if s.get("kind") == "pressure"),
                        key=lambda s: (s.get("channel") is None, s.get("channel") or 0)):
            holder = s.get("holder") or {}
            for q in _PRESSURE:
                limit = holder.get("limit_Pa") if q == "pressure_Pa" else None
                self.series.append(_Series(s["name"], q, s.get("channel"),
                                           None if limit is None else limit / 100.0,
                                           s["name"]))

    def update(self, conn: sqlite3.Connection, run_key: int, t_hint: float | None) -> None:
        """Read what was logged since the last update (the first: the window before
        ``t_hint``, the run's latest time)."""
        for s in self.series:
            since = s.last_t if s.last_t is not None else (
                None if t_hint is None else t_hint - self.window_s)
            convert = QUANTITIES[s.quantity].convert
            for t, _, _, v in get_sensors(conn, run_key, s.sensor, s.quantity, t_from=since):
                if s.last_t is None or t > s.last_t:
                    s.points.append((t, convert(v)))
                    s.last_t = t
            while s.points and s.last_t is not None and s.points[0][0] < s.last_t - self.window_s:
                s.points.popleft()

    def readings(self, cells: dict[int, str]) -> tuple[Reading, ...]:
        """The panel's rows, glovebox first, then each gas cell (``cells``: channel ->
        cell id); only quantities that have been logged."""
        live = [s for s in self.series if s.points]
        names = [(self._group(s, cells), QUANTITIES[s.quantity].name) for s in live]
        out = []
        for s, (group, name) in zip(live, names):
            if names.count((group, name)) > 1:
                name = f"{name} {s.sensor}"
            out.append(_reading(s, group, name))
        return tuple(out)

    @staticmethod
    def _group(s: _Series, cells: dict[int, str]) -> str:
        if s.channel is None:
            return s.group
        return f"ch{s.channel} {cells.get(s.channel, '')}".rstrip()


def _reading(s: _Series, group: str, name: str) -> Reading:
    q = QUANTITIES[s.quantity]
    values = trend(s.points, window_s=math.inf)  # the series is already cut to the window
    known = [v for v in values if v is not None]
    lo, hi = min(known), max(known)
    if s.limit is not None and q.unit == "ppm":
        lo, hi = 0.0, max(hi, s.limit)  # how close to the threshold, at a glance
    elif hi - lo < q.min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - q.min_span / 2, mid + q.min_span / 2
    return Reading(group, name, q.unit, s.points[-1][1], s.limit, values, lo, hi)


def interlock_after(state: Interlock, event: dict) -> Interlock:
    """The interlock state once ``event`` has happened (other kinds leave it as it was)."""
    kind = event["kind"]
    if kind == EventKind.INTERLOCK_HOLD:
        return Interlock(True, event["message"], event["t"], event["id"])
    if kind == EventKind.INTERLOCK_RELEASE:
        return Interlock(False, event["message"], event["t"], event["id"])
    if kind == EventKind.INTERLOCK_ALARM_CLEARED_MANUAL and state.held:
        return replace(state, note=event["message"])
    return state


# ---- alarms: acknowledged in the UI only ----------------------------------------------------
class AlarmBook:
    """Alarm and error events seen, and which of them the user has acknowledged (``k``).

    UI-side only: acknowledging writes nothing to the store; another monitor still shows
    them as new. Acknowledging marks everything seen so far, up to the newest event id.
    """

    def __init__(self) -> None:
        self.ack_id = 0  # every event with an id up to this one has been seen
        self.newest_id = 0
        self.unacked: list[dict] = []

    def add(self, events: Iterable[dict]) -> None:
        for e in events:
            self.newest_id = max(self.newest_id, e["id"])
            if e["level"] in ALARM_LEVELS and e["id"] > self.ack_id:
                self.unacked.append(e)

    def acknowledge(self) -> int:
        """Mark every alarm seen so far as acknowledged; how many were new."""
        n = len(self.unacked)
        self.ack_id = self.newest_id
        self.unacked.clear()
        return n

    def is_acked(self, event_id: int | None) -> bool:
        return event_id is not None and event_id <= self.ack_id


# ---- the view ----------------------------------------------------------------------------------
class StoreView:
    """A read-only window on one run of a store (``run``: id, unique prefix or "latest")."""

    def __init__(self, db: str | os.PathLike, run: str = "latest") -> None:
        self.db = Path(db)
        self.conn = open_reader(self.db)
        try:
            # a short wait per try: a locked store shows as "busy" within a second or two
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")
            meta = resolve_run(self.conn, run)
        except BaseException:
            self.conn.close()
            raise
        self.run_key: int = meta["key"]
        self.run_id: str = meta["id"]
        self.started_at: float = meta["started_at"] or 0.0
        plan = plan_from_json(meta["plan_json"]) if meta.get("plan_json") else None
        self.total_cycles = plan.total_cycles if plan else 0
        self.durations = {ch: d for ch, (d, _) in plan_totals(plan).items()} if plan else {}
        self.step_plans = {cp.cell.channel: cp.steps for cp in plan.channels} if plan else {}
        self.sensors = StationSensors(json.loads(meta.get("station_json") or "{}"))
        self._steps: dict[int, ChannelSteps] = {}
        self._holds = HoldClock()
        self._etas = EtaSeries()
        self._trace_key: tuple[int, float | None, float | None] | None = None
        self._trace: tuple[tuple[float, float], ...] = ()
        self._trace_span = "whole run"
        self._interlock: Interlock | None = None
        self._last_event_id: int | None = None
        self._log_channel: int | None = None
        self._lock = threading.Lock()  # one user of the connection at a time; close waits
        self._closed = False

    def close(self) -> None:
        """Close the connection (waits for a poll in progress on another thread)."""
        with self._lock:
            self._closed = True
            self.conn.close()

    def runs(self) -> list[dict]:
        """Every run of the store, newest first (for the run picker)."""
        with self._lock:
            return [] if self._closed else list_runs(self.conn)[::-1]

    def poll(self, selected: int | None, log_channel: int | None = None,
             span_s: float | None = DEFAULT_SPAN_S) -> Snapshot | None:
        """Read everything the screen shows (``selected``: whose plots; None: the first channel;
        ``log_channel``: the event log's filter, None for every event; ``span_s``: the E-vs-t
        plot shows the last ``span_s`` seconds of the channel's samples, None: the whole run).

        None once closed. Raises sqlite3.OperationalError when the store stays busy.
        """
        with self._lock:
            return None if self._closed else self._poll(selected, log_channel, span_s)

    def _poll(self, selected: int | None, log_channel: int | None,
              span_s: float | None = DEFAULT_SPAN_S) -> Snapshot:
        conn, key = self.conn, self.run_key
        run = get_run(conn, key)
        channels = get_channels(conn, key)
        rows, new_steps, latest = [], {}, {}
        first = self._last_event_id is None
        new_events = tuple(self._new_events())
        if first:  # every hold of the run so far, then (as later) the new events
            self._holds.add(conn.execute(
                "SELECT id, channel, t, kind FROM events WHERE run_key = ? "
                f"AND kind IN ({', '.join('?' * len(HOLD_KINDS))}) ORDER BY id",
                (key, *HOLD_KINDS)).fetchall())
        self._holds.add((e["id"], e["channel"], e["t"], e["kind"]) for e in new_events)
        for ch in channels:
            n = ch["channel"]
            latest[n] = last = latest_sample(conn, key, n)
            new_steps[n] = self._read_steps(n)
            rows.append(self._row(ch, last, self._steps[n]))
        if selected is None and rows:
            selected = rows[0].channel
        trace, etas = self._plots(selected, latest.get(selected), new_steps, span_s)
        interlock = self._interlock_now(new_events, channels)
        seed = None
        if log_channel != self._log_channel:
            self._log_channel = log_channel
            seed = tuple(get_events(conn, key, channel=log_channel, limit=EVENT_KEEP))
        t_hint = max([*(s[0] for s in latest.values() if s), run["ended_at"] or 0.0]) or None
        self.sensors.update(conn, key, t_hint)
        cells = {ch["channel"]: ch["cell_id"] or "" for ch in channels}
        return Snapshot(self.run_id, run["status"], run["end_reason"], tuple(rows), new_events,
                        trace, etas, self.sensors.readings(cells), interlock, log_channel, seed,
                        self._trace_span)

    def _read_steps(self, channel: int) -> list[dict]:
        tracker = self._steps.get(channel)
        if tracker is None or tracker.last_step == 0:
            tracker = self._steps.setdefault(channel, ChannelSteps())
            rows = last_steps(self.conn, self.run_key, channel, STEPS_TAIL)
        else:
            rows = steps_from(self.conn, self.run_key, channel, tracker.last_step)
        tracker.add(rows)
        return rows

    def _plots(self, selected: int | None, last: tuple | None,
               new_steps: dict[int, list[dict]], span_s: float | None = DEFAULT_SPAN_S
               ) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[int, float, float], ...]]:
        """The selected channel's E trace over the last ``span_s`` of its samples (None: the
        whole run; read again, decimated, only when it has new samples) and its overpotentials
        (all read once per selection, then from the new steps)."""
        if selected is None:
            self._trace_span = span_label(None)
            return (), ()
        t_last = last[0] if last else None
        trace_key = (selected, t_last, span_s)
        if trace_key != self._trace_key:  # new samples (or another channel or span): read again
            t_from = None
            if span_s is not None and t_last is not None and t_last - span_s > self.started_at:
                t_from = t_last - span_s  # the run is longer than the span: its end only
            samples = get_samples(self.conn, self.run_key, selected, t_from=t_from,
                                  max_points=PLOT_POINTS)
            self._trace = tuple(((s[0] - self.started_at) / 3600, s[3]) for s in samples)
            self._trace_span = span_label(None if t_from is None else span_s)
            self._trace_key = trace_key
        if self._etas.channel != selected:
            self._etas = EtaSeries(selected, half_cycle_etas(self.conn, self.run_key, selected))
        else:
            self._etas.add(new_steps.get(selected, ()))
        return self._trace, self._etas.points()

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

    def _interlock_now(self, new_events: Sequence[dict], channels: Sequence[dict]
                       ) -> Interlock:
        if self._interlock is None:
            self._interlock = self._first_interlock(new_events, channels)
            return self._interlock
        for e in new_events:
            self._interlock = interlock_after(self._interlock, e)
        return self._interlock

    def _first_interlock(self, recent: Sequence[dict], channels: Sequence[dict]) -> Interlock:
        """The state from the newest interlock event: among the first poll's events if there
        is one; else the run's whole event log is searched, but only if a channel is held or
        paused (a hold may have begun long ago) -- otherwise nothing holds the station now."""
        state = Interlock()
        interlocks = [e for e in recent if e["kind"] in INTERLOCK_KINDS]
        if interlocks:
            if interlocks[0]["kind"] == EventKind.INTERLOCK_ALARM_CLEARED_MANUAL:  # older hold
                hold = last_event_of(self.conn, self.run_key, (EventKind.INTERLOCK_HOLD,))
                interlocks = [hold, *interlocks] if hold else interlocks
            for e in interlocks:
                state = interlock_after(state, e)
            return state
        if not any(ch["status"] in ("held", "paused") for ch in channels):
            return state
        last = last_event_of(self.conn, self.run_key, INTERLOCK_KINDS)
        if last is not None and last["kind"] == EventKind.INTERLOCK_ALARM_CLEARED_MANUAL:
            hold = last_event_of(self.conn, self.run_key, (EventKind.INTERLOCK_HOLD,))
            state = interlock_after(state, hold) if hold else state
        return state if last is None else interlock_after(state, last)

    def _row(self, ch: dict, last: tuple | None, steps: ChannelSteps) -> ChannelRow:
        n = ch["channel"]
        left = None
        if n in self.durations:
            if ch["status"] == "ended":
                left = 0.0
            elif last is not None:  # the plan stands still while the channel is held
                active = last[0] - self.started_at - self._holds.held_s(n, last[0])
                left = self.durations[n] - active
        return ChannelRow(
            channel=n, cell_id=ch["cell_id"] or "", electrolyte=ch["electrolyte"] or "",
            state=channel_state(ch), cycle=None if last is None else last[2],
            total_cycles=self.total_cycles,
            e_V=None if last is None else last[3],
            i_mA=None if last is None else last[4] * 1e3,
            last_ce=steps.last_ce, eta_mV=steps.last_eta_mV, time_left_s=left,
            step=self._step_label(n, steps), q_mAh=None if last is None else last[5] / 3.6,
            output_on=ch["status"] != "ended", ce_meaningful=ch.get("cell_type") != "symmetric")

    def _step_label(self, channel: int, steps: ChannelSteps) -> str:
        """The step in progress, from the channel's checkpoint and the plan; else the last
        step that ended."""
        cp = get_checkpoint(self.conn, self.run_key, channel)
        if cp is not None:
            label = plan_step_label(self.step_plans.get(channel), cp["state"].get("path", ()))
            if label:
                return label
        return steps.label
