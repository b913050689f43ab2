"""Bulk reads for notebooks and exports: whole series in bounded memory.

``read.py`` answers the monitor and the CLI (a few rows, decimated plots); this module reads
everything a run holds, in chunks, so a 10^7-sample channel is never one Python list. Each
iterator holds one read transaction (one SQLite snapshot) until it is exhausted or closed, so
a chunked export of a live run is consistent with itself; the writer is never blocked (WAL).

    >>> conn = open_reader(db)
    >>> n = count_samples(conn, run_key, 0)
    >>> sum(len(chunk) for chunk in iter_samples(conn, run_key, 0, chunk_rows=1000)) == n
    True
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from rig.store.read import _range_sql, _retry_busy

DEFAULT_CHUNK_ROWS = 200_000


def _chunks(cur: sqlite3.Cursor, chunk_rows: int) -> Iterator[list[tuple]]:
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    try:
        while True:
            rows = cur.fetchmany(chunk_rows)
            if not rows:
                return
            yield rows
    finally:
        cur.close()  # ends the read transaction even when the caller stops early


def iter_samples(conn: sqlite3.Connection, run_key: int, channel: int,
                 t_from: float | None = None, t_to: float | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[list[tuple]]:
    """Samples ``(t, step, cycle, e, i, q)`` of one channel in time order, ``chunk_rows`` at a
    time (the last chunk may be shorter), ``t_from <= t <= t_to``. Equal times keep the order
    they were written in."""
    rng, params = _range_sql(t_from, t_to)
    cur = conn.execute(
        "SELECT t, step, cycle, e, i, q FROM samples WHERE run_key = ? AND channel = ?"
        f"{rng} ORDER BY t, rowid", (run_key, channel, *params))
    return _chunks(cur, chunk_rows)


@_retry_busy
def count_samples(conn: sqlite3.Connection, run_key: int, channel: int | None = None) -> int:
    """How many samples a channel (or, with ``channel=None``, the whole run) holds."""
    if channel is None:
        return conn.execute("SELECT count(*) FROM samples WHERE run_key = ?",
                            (run_key,)).fetchone()[0]
    return conn.execute("SELECT count(*) FROM samples WHERE run_key = ? AND channel = ?",
                        (run_key, channel)).fetchone()[0]


@_retry_busy
def sensor_series(conn: sqlite3.Connection, run_key: int) -> list[tuple[str, str, int]]:
    """``(sensor, quantity, n_readings)`` of every series a run's sensors recorded."""
    return conn.execute(
        "SELECT sensor, quantity, count(*) FROM sensors WHERE run_key = ? "
        "GROUP BY sensor, quantity ORDER BY sensor, quantity", (run_key,)).fetchall()


@_retry_busy
def eis_sweeps(conn: sqlite3.Connection, run_key: int,
               channel: int) -> list[tuple[int, float, int]]:
    """``(sweep, t, n_points)`` of every EIS sweep of a channel, in sweep order."""
    return conn.execute(
        "SELECT sweep, min(t), count(*) FROM eis WHERE run_key = ? AND channel = ? "
        "GROUP BY sweep ORDER BY sweep", (run_key, channel)).fetchall()


def schema_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every table of the store and its columns, as SQLite reports them (docs/store.md is
    checked against this)."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
