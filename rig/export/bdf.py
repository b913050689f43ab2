"""A channel of a run as Battery Data Format rows, streamed in chunks, and its metadata.

The Battery Data Format (Battery Data Alliance) is one table per cell with fixed column names
that carry their units. ``rows(source)`` yields the table in chunks of columns (numpy arrays),
in time order, so the CSV and Parquet writers never hold a whole run. Each chunk comes from one
chunk of samples (rig.store.frames), with the EIS points that fall in its time span merged in.

Columns (``COLUMNS``; a column with nothing to say for this channel is left out):

- ``Test Time / s`` (t − run start), ``Unix Time / s`` (t: Unix seconds on the run's clock),
  ``Voltage / V`` (working vs counter electrode), ``Current / A``;
- ``Cycle Count / 1``, ``Step Count / 1`` (the engine's explicit numbers; a cycle is one
  plating and one stripping half-cycle, cycle 0 is what comes before the first),
  ``Step Type`` (the step's kind: constant_current, constant_potential, rest, eis; its label and
  half-cycle are in the sidecar's ``steps``), ``Step Time / s``;
- ``Charging Capacity / Ah``, ``Discharging Capacity / Ah``: charge passed with positive
  (negative) current since the start of the cycle, both ≥ 0;
- ``Ambient Temperature / degC``: the cell holder's gauge if it has one, else the glovebox's;
  the last reading at or before the row;
- ``Frequency / Hz``, ``Real Impedance / ohm``, ``Imaginary Impedance / ohm`` on EIS rows (one
  row per point, at its sweep's time; negative imaginary = capacitive; Voltage and Current
  empty).

Sign convention: the format's, "positive current charges the cell under test", with the cell's
voltage = working electrode − counter electrode. That is narig's own convention (positive =
anodic at the working electrode), so currents are exported as stored: positive current strips
Na from the working electrode (the Cu or Al of a Na‖Cu/Na‖Al cell: charging it) and plates it
onto the counter electrode; negative current plates Na onto the working electrode. In a
symmetric Na‖Na cell "charging" is just this direction: Na moves from the working electrode
to the counter electrode.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rig.store import frames, read

# name -> (kind, description); kind is the Parquet/numpy type: f8, i8 or str
COLUMNS: dict[str, tuple[str, str]] = {
    "Test Time / s": ("f8", "time since the run started"),
    "Unix Time / s": ("f8", "Unix time on the run's clock (virtual in simulation)"),
    "Voltage / V": ("f8", "working electrode vs counter electrode"),
    "Current / A": ("f8", "positive charges the cell under test: strips Na from the WE"),
    "Cycle Count / 1": ("i8", "one plating + one stripping half-cycle; 0 before the first"),
    "Step Count / 1": ("i8", "the executed step's number, from 1"),
    "Step Type": ("str", "constant_current, constant_potential, rest or eis"),
    "Step Time / s": ("f8", "time since the step started"),
    "Charging Capacity / Ah": ("f8", "charge passed with positive current in this cycle"),
    "Discharging Capacity / Ah": ("f8", "charge passed with negative current in this cycle"),
    "Ambient Temperature / degC": ("f8", "cell holder (or glovebox) temperature"),
    "Frequency / Hz": ("f8", "EIS rows: the point's frequency"),
    "Real Impedance / ohm": ("f8", "EIS rows: Z'"),
    "Imaginary Impedance / ohm": ("f8", "EIS rows: Z'' (negative = capacitive)"),
}
REQUIRED = ("Test Time / s", "Voltage / V", "Current / A")
EIS_COLUMNS = ("Frequency / Hz", "Real Impedance / ohm", "Imaginary Impedance / ohm")
TEMPERATURE = "Ambient Temperature / degC"
SIGN_CONVENTION = (
    "Battery Data Format: positive current charges the cell under test (voltage = working "
    "electrode - counter electrode). Positive current strips Na from the working electrode "
    "and plates it on the counter electrode; negative current plates Na onto the working "
    "electrode (Na||Cu, Na||Al: the Cu or Al collector). Currents are exported as stored.")
K0 = 273.15
AH = 3600.0  # C per Ah


def _clean(text: str) -> str:
    """A piece of a file name: letters, digits, '.', '-' (never '__', the separator)."""
    out = re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-.")
    return out or "unknown"


def base_name(run: dict[str, Any], cell: dict[str, Any]) -> str:
    """``Instrument__Cell__YYYYMMDD_XXX``: the instrument's model and channel, the cell id, the
    run's start date (UTC) and the run's number in the store (3 digits or more).

    >>> base_name({"started_at": 1796160747.0, "key": 7},
    ...           {"instrument": "EmStat4 es4-ch0 on /dev/pts/4", "channel": 0, "cell_id": "G 1"})
    'EmStat4-ch0__G-1__20261201_007'
    """
    model = (cell.get("instrument") or "instrument").split()[0]
    day = time.strftime("%Y%m%d", time.gmtime(run["started_at"]))
    cell_id = _clean(str(cell["cell_id"]))
    return f"{_clean(model)}-ch{cell['channel']}__{cell_id}__{day}_{run['key']:03d}"


@dataclass
class Source:
    """What one channel's export reads: the run and channel rows and the small tables (steps,
    EIS, sensor series) loaded whole; the samples are streamed."""

    conn: sqlite3.Connection
    run: dict[str, Any]
    cell: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    eis: list[tuple] = field(default_factory=list)
    temperature: tuple[np.ndarray, np.ndarray] | None = None  # t, degC
    temperature_sensor: str | None = None
    chunk_rows: int = frames.DEFAULT_CHUNK_ROWS

    @classmethod
    def load(cls, conn: sqlite3.Connection, run: dict[str, Any], cell: dict[str, Any],
             chunk_rows: int = frames.DEFAULT_CHUNK_ROWS) -> Source:
        src = cls(conn, run, cell, chunk_rows=chunk_rows)
        src.steps = read.get_steps(conn, run["key"], cell["channel"])
        src.eis = read.get_eis(conn, run["key"], cell["channel"])
        sensor = temperature_sensor(conn, run, cell["channel"])
        if sensor is not None:
            rows = read.get_sensors(conn, run["key"], sensor, "temperature_K")
            src.temperature_sensor = sensor
            src.temperature = (np.array([r[0] for r in rows], dtype=float),
                               np.array([r[3] for r in rows], dtype=float) - K0)
        return src

    def columns(self) -> list[str]:
        """The columns this channel's table has, in ``COLUMNS`` order."""
        return [c for c in COLUMNS
                if (c not in EIS_COLUMNS or self.eis) and (c != TEMPERATURE or self.temperature)]


def station_sensors(run: dict[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(run.get("station_json") or "{}").get("sensors") or [])


def temperature_sensor(conn: sqlite3.Connection, run: dict[str, Any], channel: int) -> str | None:
    """The sensor whose temperature is this cell's ambient: its holder's gauge, else the first
    station sensor that recorded a temperature."""
    recorded = {s for s, q, _ in frames.sensor_series(conn, run["key"]) if q == "temperature_K"}
    described = station_sensors(run)
    for s in described:
        if s.get("channel") == channel and s.get("name") in recorded:
            return str(s["name"])
    for s in described:
        if s.get("channel") is None and s.get("name") in recorded:
            return str(s["name"])
    return min(recorded) if recorded else None


class _Steps:
    """Per-step look-ups as arrays indexed by step number: start time, type, and the charge
    and discharge (Ah) of the earlier steps of the same cycle."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        n = max((s["step"] for s in steps), default=0) + 2
        self.start = np.full(n, np.nan)
        self.kind = np.full(n, "", dtype=object)
        self.base_c, self.base_d = np.zeros(n), np.zeros(n)
        self.cycle_of: dict[int, int] = {}
        self.eis_steps = [s for s in steps if s.get("kind") == "eis"]
        acc: dict[int, list[float]] = {}
        for s in sorted(steps, key=lambda s: s["step"]):
            k = s["step"]
            self.start[k] = s["t_start"] if s.get("t_start") is not None else np.nan
            self.kind[k] = s.get("kind") or ""
            self.cycle_of[k] = s["cycle"]
            c, d = acc.setdefault(s["cycle"], [0.0, 0.0])
            self.base_c[k], self.base_d[k] = c, d
            q = (s.get("charge_C") or 0.0) / AH
            acc[s["cycle"]] = [c + max(q, 0.0), d + max(-q, 0.0)]
        self._acc = acc
        self.first_seen: dict[int, float] = {}

    def grow(self, step_max: int) -> None:
        """Make room for steps the steps table does not have yet (a live or crashed run)."""
        if step_max < len(self.start):
            return
        extra = step_max + 1 - len(self.start)
        self.start = np.concatenate([self.start, np.full(extra, np.nan)])
        self.kind = np.concatenate([self.kind, np.full(extra, "", dtype=object)])
        self.base_c = np.concatenate([self.base_c, np.full(extra, np.nan)])
        self.base_d = np.concatenate([self.base_d, np.full(extra, np.nan)])

    def fill_unknown(self, step: np.ndarray, cycle: np.ndarray, t: np.ndarray) -> None:
        """A step without a row (still running when the run stopped): it starts at its first
        sample and follows the cycle's completed steps."""
        for k in np.unique(step[np.isnan(self.start[step])]):
            first = int(np.argmax(step == k))
            self.start[k] = t[first]
            c, d = self._acc.get(int(cycle[first]), [0.0, 0.0])
            self.base_c[k], self.base_d[k] = c, d
            self.kind[k] = "unknown"

    def eis_step(self, t: float) -> tuple[int, int]:
        """(step, cycle) of the EIS step whose time span holds ``t`` (else the last before)."""
        best = None
        for s in self.eis_steps:
            if s["t_start"] is not None and s["t_start"] <= t + 1e-9:
                best = s
                if s["t_end"] is None or t <= s["t_end"] + 1e-9:
                    break
        return (best["step"], best["cycle"]) if best else (0, 0)


def rows(src: Source) -> Iterator[dict[str, np.ndarray]]:
    """The channel's BDF table in chunks: column name -> array, every chunk the same columns
    (``src.columns()``), rows in time order. Empty cells are NaN (floats) or "" (text)."""
    steps = _Steps(src.steps)
    eis = _eis_block(src, steps)
    pending = 0  # EIS rows already emitted
    names = src.columns()
    for chunk in frames.iter_samples(src.conn, src.run["key"], src.cell["channel"],
                                     chunk_rows=src.chunk_rows):
        block = _sample_block(src, steps, chunk)
        t_last = block["Unix Time / s"][-1]
        n_eis = int(np.searchsorted(eis["Unix Time / s"], t_last, side="right")) if eis else 0
        if eis and n_eis > pending:
            block = _merge(block, {k: v[pending:n_eis] for k, v in eis.items()})
            pending = n_eis
        yield _with_temperature(src, block, names)
    if eis and pending < len(eis["Unix Time / s"]):
        yield _with_temperature(src, {k: v[pending:] for k, v in eis.items()}, names)


def _sample_block(src: Source, steps: _Steps, chunk: list[tuple]) -> dict[str, np.ndarray]:
    arr = np.array(chunk, dtype=float)
    t, e, i, q = arr[:, 0], arr[:, 3], arr[:, 4], arr[:, 5]
    step, cycle = arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64)
    steps.grow(int(step.max()))
    steps.fill_unknown(step, cycle, t)
    block: dict[str, np.ndarray] = {
        "Test Time / s": t - src.run["started_at"], "Unix Time / s": t,
        "Voltage / V": e, "Current / A": i, "Cycle Count / 1": cycle, "Step Count / 1": step,
        "Step Type": steps.kind[step], "Step Time / s": t - steps.start[step],
        "Charging Capacity / Ah": steps.base_c[step] + np.maximum(q, 0.0) / AH,
        "Discharging Capacity / Ah": steps.base_d[step] + np.maximum(-q, 0.0) / AH,
    }
    if src.eis:
        nan = np.full(len(t), np.nan)
        block.update({c: nan for c in EIS_COLUMNS})
    return block


def _eis_block(src: Source, steps: _Steps) -> dict[str, np.ndarray] | None:
    if not src.eis:
        return None
    pts = sorted(src.eis, key=lambda r: r[1])  # by time; a sweep's points keep their order
    t = np.array([r[1] for r in pts], dtype=float)
    where = [steps.eis_step(float(x)) for x in t]
    step = np.array([w[0] for w in where], dtype=np.int64)
    cycle = np.array([w[1] for w in where], dtype=np.int64)
    steps.grow(int(step.max()))
    nan = np.full(len(t), np.nan)
    return {
        "Test Time / s": t - src.run["started_at"], "Unix Time / s": t,
        "Voltage / V": nan, "Current / A": nan, "Cycle Count / 1": cycle,
        "Step Count / 1": step, "Step Type": np.full(len(t), "eis", dtype=object),
        "Step Time / s": t - steps.start[step],
        "Charging Capacity / Ah": nan, "Discharging Capacity / Ah": nan,
        "Frequency / Hz": np.array([r[2] for r in pts], dtype=float),
        "Real Impedance / ohm": np.array([r[3] for r in pts], dtype=float),
        "Imaginary Impedance / ohm": np.array([r[4] for r in pts], dtype=float),
    }


def _merge(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of both blocks in time order (samples first at equal times)."""
    order = np.argsort(np.concatenate([a["Unix Time / s"], b["Unix Time / s"]]), kind="stable")
    return {k: np.concatenate([a[k], b[k]])[order] for k in a}


def _with_temperature(src: Source, block: dict[str, np.ndarray],
                      names: list[str]) -> dict[str, np.ndarray]:
    if src.temperature is not None:
        ts, deg = src.temperature
        k = np.searchsorted(ts, block["Unix Time / s"], side="right") - 1
        block[TEMPERATURE] = np.where(k >= 0, deg[np.clip(k, 0, None)], np.nan) if len(ts) \
            else np.full(len(k), np.nan)
    return {n: block[n] for n in names}


# ---- the sidecar -------------------------------------------------------------------------

def _series(conn: sqlite3.Connection, run_key: int, sensor: str, quantity: str,
            unit: str, scale: float = 1.0, offset: float = 0.0) -> dict[str, Any]:
    got = read.get_sensors(conn, run_key, sensor, quantity)
    return {"sensor": sensor, "quantity": quantity, "unit": unit,
            "time_base": "Unix Time / s (the run's clock)",
            "t": [r[0] for r in got], "value": [r[3] * scale + offset for r in got]}


def custom_measurements(conn: sqlite3.Connection, run: dict[str, Any],
                        channel: int) -> dict[str, Any]:
    """The series BDF has no column for: the cell holder's gas pressure (Pa) and temperature
    (degC), and the glovebox O2 and H2O (ppm), each as ``{sensor, quantity, unit, t, value}``."""
    out: dict[str, Any] = {}
    recorded = set((s, q) for s, q, _ in frames.sensor_series(conn, run["key"]))
    for s in station_sensors(run):
        name = str(s.get("name"))
        if s.get("kind") == "pressure" and s.get("channel") == channel:
            if (name, "pressure_Pa") in recorded:
                out["gas_pressure"] = _series(conn, run["key"], name, "pressure_Pa", "Pa")
            if (name, "temperature_K") in recorded:
                out["gas_temperature"] = _series(conn, run["key"], name, "temperature_K",
                                                 "degC", offset=-K0)
            if s.get("holder"):
                out["gas_headspace_mL"] = s["holder"].get("headspace_mL")
        if s.get("kind") == "atmosphere":
            for q, key in (("o2_ppm", "glovebox_o2"), ("h2o_ppm", "glovebox_h2o")):
                if (name, q) in recorded and key not in out:
                    out[key] = _series(conn, run["key"], name, q, "ppm")
    return out


def metadata(src: Source, data_file: str, columns: list[str]) -> dict[str, Any]:
    """The sidecar ``.metadata.json``: the run, the cell, the protocol text, the software
    versions, the station, the outcome, the steps, the columns with their units, and the
    custom measurements (gas and glovebox series)."""
    from rig import __version__

    run, cell = src.run, src.cell
    return {
        "format": "Battery Data Format (BDF), written by narig",
        "data_file": data_file,
        "sign_convention": SIGN_CONVENTION,
        "run": {k: run.get(k) for k in ("id", "name", "kind", "status", "end_reason",
                                        "started_at", "ended_at", "clock")},
        "time_base": "Unix Time / s is Unix seconds on the run's clock (virtual in simulation: "
                     "it starts at the run's start and jumps while nothing waits)",
        "software": {"name": "narig", "recorded_with": run.get("software_version"),
                     "exported_with": __version__},
        "cell": {k: cell.get(k) for k in ("channel", "cell_id", "cell_type", "area_cm2",
                                          "electrolyte", "headspace_mL", "notes",
                                          "instrument", "status", "end_reason")},
        "outcome": json.loads(cell["outcome_json"]) if cell.get("outcome_json") else None,
        "protocol": {"path": run.get("protocol_path"), "text": run.get("protocol_text")},
        "station": json.loads(run.get("station_json") or "null"),
        "columns": {c: {"unit": _unit(c), "description": COLUMNS[c][1]} for c in columns},
        "ambient_temperature_sensor": src.temperature_sensor,
        "steps": [{k: v for k, v in s.items() if k not in ("run_key", "channel")}
                  for s in src.steps],
        "custom_measurements": custom_measurements(src.conn, run, cell["channel"]),
    }


def _unit(column: str) -> str:
    return column.split(" / ", 1)[1] if " / " in column else ""


def json_safe(obj: Any) -> Any:
    """NaN and infinities as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
