"""What the report reads from the store beyond ``rig.store.read``: samples in bounded chunks,
the decimated series of a whole channel, a time window at full resolution, the periods events
mark (holds, pauses).

Every function takes a reader connection (``rig.store.open_reader``). Sample columns are named
as in the samples table (``t, step, cycle, e, i, q``; s, V, A, C).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rig.report.decimate import MinMaxDecimator
from rig.store.schema import SAMPLE_COLUMNS

CHUNK_ROWS = 100_000  # rows per fetch: ~10 MB of Python objects at a time, whatever the run


def _columns(columns: Sequence[str]) -> str:
    bad = [c for c in columns if c not in SAMPLE_COLUMNS]
    if bad:
        raise ValueError(f"unknown sample columns {bad}; known: {', '.join(SAMPLE_COLUMNS)}")
    return ", ".join(columns)


def sample_chunks(conn: sqlite3.Connection, run_key: int, channel: int,
                  columns: Sequence[str] = ("t", "e", "i"), t_from: float | None = None,
                  t_to: float | None = None, chunk_rows: int = CHUNK_ROWS,
                  cycle: int | None = None) -> Iterator[np.ndarray]:
    """One channel's samples in time order, ``chunk_rows`` at a time, as float arrays of shape
    ``(n, len(columns))``: a run of any length is read in bounded memory. ``cycle``: only the
    samples recorded in that cycle."""
    sql = f"SELECT {_columns(columns)} FROM samples WHERE run_key = ? AND channel = ?"
    params: tuple[Any, ...] = (run_key, channel)
    if t_from is not None:
        sql, params = sql + " AND t >= ?", params + (t_from,)
    if t_to is not None:
        sql, params = sql + " AND t <= ?", params + (t_to,)
    if cycle is not None:
        sql, params = sql + " AND cycle = ?", params + (cycle,)
    cur = conn.execute(sql + " ORDER BY t", params)
    try:
        while True:
            rows = cur.fetchmany(chunk_rows)
            if not rows:
                return
            yield np.array(rows, dtype=float).reshape(len(rows), len(columns))
    finally:
        cur.close()


def time_span(conn: sqlite3.Connection, run_key: int, channel: int) -> tuple[float, float, int]:
    """``(first t, last t, number of samples)`` of a channel; ``(nan, nan, 0)`` without any."""
    first = conn.execute("SELECT t FROM samples WHERE run_key = ? AND channel = ? ORDER BY t "
                         "LIMIT 1", (run_key, channel)).fetchone()
    if first is None:
        return float("nan"), float("nan"), 0
    last = conn.execute("SELECT t FROM samples WHERE run_key = ? AND channel = ? ORDER BY t "
                        "DESC LIMIT 1", (run_key, channel)).fetchone()
    n = conn.execute("SELECT count(*) FROM samples WHERE run_key = ? AND channel = ?",
                     (run_key, channel)).fetchone()[0]
    return float(first[0]), float(last[0]), int(n)


def decimated_series(conn: sqlite3.Connection, run_key: int, channel: int,
                     columns: Sequence[str] = ("e", "i"), buckets: int = 2000,
                     t_from: float | None = None, t_to: float | None = None
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each of ``columns`` against time, at most ``2 x buckets`` points, every bucket's minimum
    and maximum kept (a one-sample spike or short survives). ``{column: (t, values)}``; empty
    arrays for a channel without samples."""
    t0, t1, n = time_span(conn, run_key, channel)
    lo = t0 if t_from is None else max(t0, t_from)
    hi = t1 if t_to is None else min(t1, t_to)
    if n == 0 or hi < lo:
        return {c: (np.empty(0), np.empty(0)) for c in columns}
    dec = MinMaxDecimator(lo, hi, buckets, len(columns))
    for chunk in sample_chunks(conn, run_key, channel, ("t", *columns), lo, hi):
        dec.add(chunk[:, 0], chunk[:, 1:])
    return dict(zip(columns, dec.series()))


def window(conn: sqlite3.Connection, run_key: int, channel: int, t_from: float, t_to: float,
           columns: Sequence[str] = ("t", "e", "i"), max_rows: int = 200_000,
           cycle: int | None = None) -> np.ndarray:
    """Samples of one time window (of one ``cycle``, if given) at full resolution (a cycle for
    the overlay), decimated when the window alone holds more than ``max_rows``."""
    n = conn.execute("SELECT count(*) FROM samples WHERE run_key = ? AND channel = ? AND "
                     "t >= ? AND t <= ?", (run_key, channel, t_from, t_to)).fetchone()[0]
    if n <= max_rows:
        parts = list(sample_chunks(conn, run_key, channel, columns, t_from, t_to,
                                   cycle=cycle))
        return np.vstack(parts) if parts else np.empty((0, len(columns)))
    rest = [c for c in columns if c != "t"]
    series = decimated_series(conn, run_key, channel, rest, max_rows // 4, t_from, t_to)
    t = series[rest[0]][0]
    return np.column_stack([t if c == "t" else series[c][1] for c in columns])


def periods(events: Sequence[dict[str, Any]], start_kinds: Sequence[str],
            end_kinds: Sequence[str], t_end: float) -> list[tuple[float, float]]:
    """``[(t_start, t_end)]`` spans from an event of ``start_kinds`` to the next of
    ``end_kinds`` (or ``t_end`` if none came: still held when the run ended)."""
    spans, since = [], None
    for e in sorted(events, key=lambda e: (e["t"], e["id"])):
        if e["kind"] in start_kinds and since is None:
            since = float(e["t"])
        elif e["kind"] in end_kinds and since is not None:
            spans.append((since, float(e["t"])))
            since = None
    if since is not None:
        spans.append((since, max(t_end, since)))
    return spans
