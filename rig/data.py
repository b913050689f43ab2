"""The store in a notebook: runs, samples, cycles, steps, EIS, sensors and events as pandas
DataFrames, in SI units, without SQL.

Open a store, pick a run (its id, a unique prefix of one, or "latest"), ask for what you need.
Every frame carries the run id in ``df.attrs["run"]``; a frame of one channel also carries that
channel's cell (``df.attrs["cell"]``: cell id, type, area, electrolyte, headspace, instrument).
Times ``t`` are Unix seconds on the run's clock (virtual in simulation: see docs/store.md);
``test_time_s`` is ``t`` minus the run's start. Columns say their unit where it is not SI.

    >>> from rig.data import open_store
    >>> store = open_store(db)                  # a path; default: $NARIG_DB or the user data dir
    >>> run = store.run("latest")
    >>> run.channels[["channel", "cell_id", "cell_type", "area_cm2"]].to_dict("records")[0]
    {'channel': 0, 'cell_id': 'G1', 'cell_type': 'symmetric', 'area_cm2': 1.13}
    >>> s = run.samples(0)                      # one channel: t, test_time_s, step, cycle, e, i, q
    >>> list(s.columns)
    ['t', 'test_time_s', 'step', 'cycle', 'e', 'i', 'q']
    >>> s.attrs["cell"]["cell_id"]
    'G1'
    >>> c = run.cycles(0)                       # one row per cycle: charges in C, CE, η in V
    >>> c["cycle"].tolist()
    [1, 2]
    >>> bool((c["plated_C"] - 0.5 * 3.6 * 1.13).abs().max() < 0.01)
    True
    >>> sum(len(chunk) for chunk in run.iter_samples(0, chunk_rows=100)) == len(s)
    True
    >>> store.close()

A 10-million-sample channel need not be loaded whole: ``samples(channel, t_from=, t_to=)``
reads a time window, ``samples(channel, max_points=N)`` an evenly thinned series for a plot,
``iter_samples`` yields chunks. Only this module's readers (rig.store) touch SQL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from rig.store import frames as _frames
from rig.store import read as _read

SAMPLE_COLUMNS = ["t", "test_time_s", "step", "cycle", "e", "i", "q"]
"""Samples: t (s, Unix, run clock), test_time_s (s since the run started), step, cycle (the
engine's explicit numbers), e (V, working vs counter electrode), i (A, positive = anodic at the
working electrode: strips Na from it), q (C, charge passed since the step started, signed)."""
CELL_KEYS = ("channel", "cell_id", "cell_type", "area_cm2", "electrolyte", "headspace_mL",
             "notes", "instrument")


def open_store(path: str | os.PathLike | None = None) -> Store:
    """A store for reading: ``path``, or ``$NARIG_DB``, or the user data dir's narig.db."""
    from rig.store import default_db_path

    return Store(Path(path) if path is not None else default_db_path())


class Store:
    """A read-only view of one store file (safe while a run writes it). Use as a context
    manager, or call ``close()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._conn = _read.open_reader(self.path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def runs(self) -> pd.DataFrame:
        """Every run, oldest first: id, name, kind, status, end_reason, started_at, ended_at
        (Unix s, run clock), clock, software_version, n_channels, ..."""
        return pd.DataFrame(_read.list_runs(self._conn))

    def run(self, which: str = "latest") -> Run:
        """A run by id, unique prefix, or "latest" (raises RunNotFound / AmbiguousRun)."""
        return Run(self._conn, _read.resolve_run(self._conn, which))


class Run:
    """One run of a store: its description and data (see the module docstring)."""

    def __init__(self, conn: Any, row: dict[str, Any]) -> None:
        self._conn = conn
        self.info = row
        self.id: str = row["id"]
        self.key: int = row["key"]
        self.started_at: float = row["started_at"]
        self._cells = {c["channel"]: c for c in _read.get_channels(conn, self.key)}

    def __repr__(self) -> str:
        return (f"<Run {self.id} {self.info['kind']} {self.info['status']}, "
                f"channels {list(self._cells)}>")

    # ---- description ------------------------------------------------------------------

    @property
    def protocol_text(self) -> str | None:
        """The protocol file as it was run."""
        return self.info.get("protocol_text")

    @property
    def station(self) -> dict[str, Any]:
        """The station description recorded at the start (instruments, sensors, interlocks)."""
        return json.loads(self.info.get("station_json") or "{}")

    @property
    def channels(self) -> pd.DataFrame:
        """One row per channel: the cell (id, type, area, electrolyte, headspace, notes), the
        instrument, status and end reason."""
        rows = [{k: c.get(k) for k in (*CELL_KEYS, "status", "end_reason")}
                for c in self._cells.values()]
        return self._frame(pd.DataFrame(rows, columns=[*CELL_KEYS, "status", "end_reason"]))

    def cell(self, channel: int) -> dict[str, Any]:
        """The cell on a channel as a dict (``CELL_KEYS``)."""
        try:
            c = self._cells[channel]
        except KeyError:
            raise KeyError(f"run {self.id} has no channel {channel} "
                           f"(channels: {', '.join(map(str, self._cells)) or 'none'})") from None
        return {k: c.get(k) for k in CELL_KEYS}

    def outcome(self, channel: int) -> dict[str, Any] | None:
        """The protocol's result for a channel (the dict ``rig show --json`` prints)."""
        self.cell(channel)
        text = self._cells[channel].get("outcome_json")
        return json.loads(text) if text else None

    def summary(self, channel: int | None = None) -> dict[str, Any]:
        """Exactly what ``rig show RUN --json [--channel N]`` prints, as a dict."""
        from rig.show import summarize

        return summarize(self._conn, self.info, channel)

    # ---- data -------------------------------------------------------------------------

    def samples(self, channel: int | None = None, t_from: float | None = None,
                t_to: float | None = None, max_points: int | None = None) -> pd.DataFrame:
        """Samples in time order (``SAMPLE_COLUMNS``), ``t_from <= t <= t_to`` (Unix s).
        ``channel=None``: every channel, with a ``channel`` column. ``max_points``: at most
        that many per channel (the first sample of each of ``max_points`` equal time slices).
        """
        if channel is None:
            parts = [self.samples(ch, t_from, t_to, max_points).assign(channel=ch)
                     for ch in self._cells]
            cols = ["channel", *SAMPLE_COLUMNS]
            out = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(
                columns=cols)
            return self._frame(out)
        self.cell(channel)
        if max_points is None:
            chunks = list(self.iter_samples(channel, t_from, t_to))
            frame = (pd.concat(chunks, ignore_index=True) if chunks
                     else self._samples_frame([]))
            frame.attrs = {}
        else:
            frame = self._samples_frame(_read.get_samples(self._conn, self.key, channel, t_from,
                                                          t_to, max_points))
        return self._frame(frame, channel)

    def iter_samples(self, channel: int, t_from: float | None = None,
                     t_to: float | None = None,
                     chunk_rows: int = _frames.DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The same samples as ``samples(channel, ...)``, as DataFrames of ``chunk_rows``."""
        self.cell(channel)
        for rows in _frames.iter_samples(self._conn, self.key, channel, t_from, t_to,
                                         chunk_rows):
            yield self._frame(self._samples_frame(rows), channel)

    def n_samples(self, channel: int | None = None) -> int:
        """How many samples a channel (or the whole run) holds, without reading them."""
        return _frames.count_samples(self._conn, self.key, channel)

    def _samples_frame(self, rows: list[tuple]) -> pd.DataFrame:
        df = pd.DataFrame.from_records(rows, columns=["t", "step", "cycle", "e", "i", "q"])
        df.insert(1, "test_time_s", df["t"] - self.started_at)
        return df.astype({"t": "float64", "test_time_s": "float64", "step": "int64",
                          "cycle": "int64", "e": "float64", "i": "float64", "q": "float64"})

    def steps(self, channel: int) -> pd.DataFrame:
        """One row per executed step: step, cycle, label, kind, half_cycle, t_start, t_end
        (Unix s), end_reason, charge_C, e_mean_abs_V, e_end_V, n_samples."""
        from rig.store.schema import STEP_COLUMNS

        self.cell(channel)
        rows = _read.get_steps(self._conn, self.key, channel)
        return self._frame(pd.DataFrame(rows, columns=["run_key", "channel", *STEP_COLUMNS])
                           .drop(columns=["run_key", "channel"]), channel)

    def cycles(self, channel: int) -> pd.DataFrame:
        """One row per cycle (SI): cycle, plated_C, stripped_C, ce, eta_plate_V, eta_strip_V,
        eta_plate_end_V, eta_strip_end_V, t_start, t_end, duration_s, e_plate_end_V,
        e_strip_end_V, current_density_A_m2. ``attrs["ce_meaningful"]`` is False for a
        symmetric cell (its half-cycles pass a fixed charge). The same numbers as ``rig show``
        (there in mAh, mV, h, mA/cm²)."""
        from rig.show import NOT_MEANINGFUL_CE, cycle_rows

        cell = self.cell(channel)
        rows = cycle_rows(_read.get_steps(self._conn, self.key, channel), cell["area_cm2"])
        df = self._frame(pd.DataFrame(rows), channel)
        df.attrs["ce_meaningful"] = cell["cell_type"] not in NOT_MEANINGFUL_CE
        return df

    def eis(self, channel: int, sweep: int | None = None) -> pd.DataFrame:
        """EIS points: sweep, t (Unix s, the sweep's start), f_Hz, z_re, z_im (ohm; z_im < 0 is
        capacitive)."""
        self.cell(channel)
        rows = _read.get_eis(self._conn, self.key, channel, sweep)
        return self._frame(pd.DataFrame(rows, columns=["sweep", "t", "f_Hz", "z_re", "z_im"]),
                           channel)

    def eis_fits(self, channel: int) -> pd.DataFrame:
        """One row per sweep: its fit to R0-p(R1,CPE1)-p(R2,CPE2)-W1 with each parameter's
        standard error (``*_err``), ``residual``, ``chi_square``, or ``fit_ok`` False and the
        ``reason`` (as in ``rig show``)."""
        from rig.show import eis_fits

        self.cell(channel)
        rows = eis_fits(_read.get_eis(self._conn, self.key, channel), self.outcome(channel))
        return self._frame(pd.DataFrame(rows), channel)

    def sensors(self, sensor: str | None = None, quantity: str | None = None,
                t_from: float | None = None, t_to: float | None = None,
                wide: bool = False) -> pd.DataFrame:
        """Station sensor readings: t, sensor, quantity, value (SI: pressure_Pa, temperature_K,
        o2_ppm, h2o_ppm, ... the unit is in the quantity's name). ``wide``: one column per
        ``sensor/quantity``, indexed by t."""
        rows = _read.get_sensors(self._conn, self.key, sensor, quantity, t_from, t_to)
        df = pd.DataFrame(rows, columns=["t", "sensor", "quantity", "value"])
        if wide:
            df = df.assign(series=df["sensor"] + "/" + df["quantity"]).pivot_table(
                index="t", columns="series", values="value", aggfunc="last")
            df.columns.name = None
        return self._frame(df)

    def sensor_series(self) -> pd.DataFrame:
        """Which series the sensors recorded: sensor, quantity, n."""
        return self._frame(pd.DataFrame(_frames.sensor_series(self._conn, self.key),
                                        columns=["sensor", "quantity", "n"]))

    def events(self, channel: int | None = None) -> pd.DataFrame:
        """Events in order: id, channel (None: run-wide), t (Unix s), level, kind, message.
        ``channel``: that channel's and the run-wide ones."""
        rows = _read.get_events(self._conn, self.key, channel)
        cols = ["id", "run_key", "channel", "t", "level", "kind", "message"]
        return self._frame(pd.DataFrame(rows, columns=cols).drop(columns=["run_key"]))

    def _frame(self, df: pd.DataFrame, channel: int | None = None) -> pd.DataFrame:
        df.attrs["run"] = self.id
        if channel is not None:
            df.attrs["cell"] = self.cell(channel)
        return df
