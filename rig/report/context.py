"""Everything about one run that the figures and the summary share, read once (the bulk data
lazily, the whole-run sample series decimated and cached per channel)."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from rig.analysis.cycles import per_cycle
from rig.report.queries import decimated_series
from rig.store import get_channels, get_eis, get_events, get_sensors, get_steps

BUCKETS = 2000  # per whole-run series: ~2 points per pixel column of a 150-dpi figure


@dataclass
class Channel:
    """One channel's cell and what it recorded."""

    row: dict[str, Any]
    steps: list[dict[str, Any]]
    cycles: list[dict[str, Any]]

    @property
    def number(self) -> int:
        return int(self.row["channel"])

    @property
    def cell_id(self) -> str:
        return str(self.row["cell_id"])

    @property
    def area_cm2(self) -> float:
        return float(self.row["area_cm2"] or math.nan)

    @property
    def label(self) -> str:
        """What a legend says: cell id and electrolyte."""
        return f"{self.cell_id} ({self.row['electrolyte']})" if self.row.get("electrolyte") \
            else self.cell_id

    @property
    def outcome(self) -> dict[str, Any] | None:
        text = self.row.get("outcome_json")
        return json.loads(text) if text else None

    def ce_meaningful(self, cycle: int) -> bool:
        """CE of a cycle means something when its strip ran to a potential cutoff (the charge
        recovered was measured); a half-cycle that passes a fixed charge gives 100 % by
        construction (a symmetric cell, or the reservoir method's cycles)."""
        if self.row.get("cell_type") == "symmetric":
            return False
        return any(s.get("cycle") == cycle and s.get("half_cycle") == "strip"
                   and s.get("end_reason") == "potential_above" for s in self.steps)


@dataclass
class RunContext:
    conn: sqlite3.Connection
    run: dict[str, Any]
    channels: list[Channel]
    events: list[dict[str, Any]]
    _series: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sqlite3.Connection, run: dict[str, Any]) -> RunContext:
        channels = []
        for row in get_channels(conn, run["key"]):
            steps = get_steps(conn, run["key"], row["channel"])
            channels.append(Channel(row, steps, per_cycle(steps)))
        return cls(conn, run, channels, get_events(conn, run["key"]))

    @property
    def key(self) -> int:
        return int(self.run["key"])

    @property
    def t0(self) -> float:
        """The origin of every time axis: the run's start (run clock, Unix s)."""
        return float(self.run["started_at"])

    @property
    def t_end(self) -> float:
        ends = [self.run.get("ended_at")] + [s["t_end"] for c in self.channels for s in c.steps]
        return max([float(t) for t in ends if t is not None] or [self.t0])

    @cached_property
    def station(self) -> dict[str, Any]:
        try:
            return json.loads(self.run.get("station_json") or "{}") or {}
        except json.JSONDecodeError:
            return {}

    def series(self, ch: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The channel's whole-run E and I, min/max-decimated (read once, in chunks)."""
        if ch not in self._series:
            self._series[ch] = decimated_series(self.conn, self.key, ch, ("e", "i"), BUCKETS)
        return self._series[ch]

    @cached_property
    def sensors(self) -> list[tuple]:
        return get_sensors(self.conn, self.key)

    def sensor_series(self, quantity: str, sensor: str | None = None
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{sensor name: (t, values)}`` of one quantity."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        for t, name, q, v in self.sensors:
            if q == quantity and (sensor is None or name == sensor):
                ts, vs = out.setdefault(name, ([], []))
                ts.append(t)
                vs.append(v)
        return {k: (np.array(ts), np.array(vs)) for k, (ts, vs) in out.items()}

    def pressure_sensor(self, ch: int) -> str | None:
        """The gas holder gauge on a channel (station description), if any."""
        for s in self.station.get("sensors") or []:
            if s.get("kind") == "pressure" and s.get("channel") == ch:
                return str(s["name"])
        return None

    @cached_property
    def eis(self) -> dict[int, list[tuple]]:
        return {c.number: rows for c in self.channels
                if (rows := get_eis(self.conn, self.key, c.number))}

    def hours(self, t: Any) -> Any:
        return (np.asarray(t, dtype=float) - self.t0) / 3600.0
