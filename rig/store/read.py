"""Readers: what the monitor, the CLI and analysis ask of the store.

Every reader takes a connection from ``open_reader`` — read-only at the SQLite level, never
holding a write lock, so it works while a run writes (WAL). Each query is its own short read
(autocommit), so a poll always sees the latest commit. Results are plain dicts (one per row,
keyed by column) or, for bulk data, tuples in the column order given by ``SAMPLE_COLUMNS``.

    >>> conn = open_reader(default_db_path())
    >>> run = resolve_run(conn, "latest")
    >>> get_samples(conn, run["key"], 1, max_points=2000)[:1]
    [(1795535350.0, 0, 0, 0.0021, 0.0, 0.0)]

Commands are the one thing other processes write: ``send_command`` opens its own short write
connection; the engine polls ``pending_commands`` and marks each with ``mark_command_handled``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rig.store.errors import AmbiguousRun, BadStore, RunNotFound, StoreError
from rig.store.schema import BUSY_TIMEOUT_S, COMMANDS, check_narig_db, check_store_path

F = TypeVar("F", bound=Callable[..., Any])

_RETRIES = 5
_LIST_COLUMNS = (
    "key, id, name, kind, protocol_path, software_version, status, end_reason, started_at, "
    "ended_at, heartbeat_at, pid, host, clock")
_SAMPLE_SELECT = "SELECT t, step, cycle, e, i, q FROM samples"


def open_reader(path: str | os.PathLike) -> sqlite3.Connection:
    """A read-only connection to an existing store (``mode=ro``; ``query_only`` on).

    Usable from any one thread at a time (``check_same_thread=False``).
    """
    path = Path(path)
    _check_existing_store(path)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise BadStore(f"{path}: cannot open the store: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA query_only = ON")
        check_narig_db(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_existing_store(path: Path) -> None:
    check_store_path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path}")


def _retry_busy(fn: F) -> F:
    """Retry a read a few times on SQLITE_BUSY (e.g. while another process recovers the WAL)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(_RETRIES):
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def _dicts(cur: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur]


# ---- runs and channels ------------------------------------------------------------------

@_retry_busy
def list_runs(conn: sqlite3.Connection) -> list[dict]:
    """Every run, oldest first, without its big texts; ``n_channels`` added.

    >>> [r["id"] for r in list_runs(conn)]
    ['20261124-154230-3fa2', '20261125-090000-0b1c']
    """
    return _dicts(conn.execute(
        f"SELECT {_LIST_COLUMNS}, "
        "(SELECT count(*) FROM channels c WHERE c.run_key = runs.key) AS n_channels "
        "FROM runs ORDER BY key"))


@_retry_busy
def get_run(conn: sqlite3.Connection, run_key: int) -> dict:
    """All columns of one run (protocol text, plan and station JSON included)."""
    rows = _dicts(conn.execute("SELECT * FROM runs WHERE key = ?", (run_key,)))
    if not rows:
        raise RunNotFound(f"no run with key {run_key}")
    return rows[0]


@_retry_busy
def resolve_run(conn: sqlite3.Connection, id_or_prefix: str) -> dict:
    """The run whose id is ``id_or_prefix``, or the one run it is a prefix of; "latest" = newest.

    >>> resolve_run(conn, "20261124")["id"]
    '20261124-154230-3fa2'
    """
    text = id_or_prefix.strip()
    if text == "latest":
        row = conn.execute("SELECT key FROM runs ORDER BY key DESC LIMIT 1").fetchone()
        if row is None:
            raise RunNotFound("there are no runs in this store yet")
        return get_run(conn, row[0])
    if not text:
        raise RunNotFound("give a run id, a unique prefix of one, or 'latest'")
    exact = conn.execute("SELECT key FROM runs WHERE id = ?", (text,)).fetchone()
    if exact:
        return get_run(conn, exact[0])
    matches = conn.execute(
        "SELECT key, id, status FROM runs WHERE substr(id, 1, ?) = ? ORDER BY key DESC LIMIT 11",
        (len(text), text)).fetchall()
    if len(matches) == 1:
        return get_run(conn, matches[0][0])
    if not matches:
        recent = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY key DESC LIMIT 5")]
        hint = f"recent runs: {', '.join(recent)}" if recent else "this store has no runs"
        raise RunNotFound(f"no run matches {text!r} ({hint})")
    listed = ", ".join(f"{m[1]} ({m[2]})" for m in matches[:10])
    more = " and more" if len(matches) > 10 else ""
    raise AmbiguousRun(f"{text!r} matches several runs: {listed}{more}; give more of the id")


@_retry_busy
def get_channels(conn: sqlite3.Connection, run_key: int) -> list[dict]:
    """The channels of a run (cell description, instrument, status, end reason), by number."""
    return _dicts(conn.execute(
        "SELECT * FROM channels WHERE run_key = ? ORDER BY channel", (run_key,)))


@_retry_busy
def get_steps(conn: sqlite3.Connection, run_key: int, channel: int) -> list[dict]:
    """One dict per executed step of a channel, in order."""
    return _dicts(conn.execute(
        "SELECT * FROM steps WHERE run_key = ? AND channel = ? ORDER BY step", (run_key, channel)))


@_retry_busy
def get_checkpoint(conn: sqlite3.Connection, run_key: int, channel: int) -> dict | None:
    """The latest committed position of a channel: ``{'t': ..., 'state': {...}}`` or None."""
    row = conn.execute("SELECT t, state_json FROM checkpoints WHERE run_key = ? AND channel = ?",
                       (run_key, channel)).fetchone()
    return None if row is None else {"t": row[0], "state": json.loads(row[1])}


# ---- bulk data --------------------------------------------------------------------------

def _range_sql(t_from: float | None, t_to: float | None) -> tuple[str, tuple]:
    sql = ""
    params: tuple[Any, ...] = ()
    if t_from is not None:
        sql, params = sql + " AND t >= ?", params + (t_from,)
    if t_to is not None:
        sql, params = sql + " AND t <= ?", params + (t_to,)
    return sql, params


@_retry_busy
def get_samples(conn: sqlite3.Connection, run_key: int, channel: int,
                t_from: float | None = None, t_to: float | None = None,
                max_points: int | None = None) -> list[tuple]:
    """Samples ``(t, step, cycle, e, i, q)`` of one channel in time order, ``t_from <= t <= t_to``.

    With ``max_points``, at most that many, for plots: the range is cut into ``max_points``
    equal time slices and the first sample of each is returned (empty slices give none). Done
    by one index seek per slice in SQL, so it costs the same on 10^3 or 10^7 rows.
    """
    where = "WHERE run_key = ? AND channel = ?"
    rng, rng_params = _range_sql(t_from, t_to)
    params = (run_key, channel) + rng_params
    if max_points is None:
        return conn.execute(f"{_SAMPLE_SELECT} {where}{rng} ORDER BY t", params).fetchall()
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM samples {where}{rng} LIMIT ?)",
                     params + (max_points + 1,)).fetchone()[0]
    if n <= max_points:
        return conn.execute(f"{_SAMPLE_SELECT} {where}{rng} ORDER BY t", params).fetchall()
    t0 = conn.execute(f"SELECT t FROM samples {where}{rng} ORDER BY t LIMIT 1", params).fetchone()
    t1 = conn.execute(f"SELECT t FROM samples {where}{rng} ORDER BY t DESC LIMIT 1",
                      params).fetchone()
    return _decimated(conn, run_key, channel, t0[0], t1[0], max_points)


def _decimated(conn: sqlite3.Connection, run_key: int, channel: int, t0: float, t1: float,
               n: int) -> list[tuple]:
    t_end = math.nextafter(t1, math.inf)  # the last slice includes t1
    width = (t_end - t0) / n
    sql = (
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n) "
        "SELECT s.t, s.step, s.cycle, s.e, s.i, s.q FROM k JOIN samples AS s ON s.rowid = ("
        "  SELECT rowid FROM samples WHERE run_key = :run AND channel = :ch"
        "  AND t >= :t0 + k.i * :w"
        "  AND t < CASE WHEN k.i = :n - 1 THEN :t_end ELSE :t0 + (k.i + 1) * :w END"
        "  ORDER BY t LIMIT 1) "
        "ORDER BY k.i")
    return conn.execute(sql, {"n": n, "run": run_key, "ch": channel, "t0": t0, "w": width,
                              "t_end": t_end}).fetchall()


@_retry_busy
def latest_sample(conn: sqlite3.Connection, run_key: int, channel: int) -> tuple | None:
    """The last committed sample ``(t, step, cycle, e, i, q)`` of a channel, or None."""
    return conn.execute(
        f"{_SAMPLE_SELECT} WHERE run_key = ? AND channel = ? ORDER BY t DESC LIMIT 1",
        (run_key, channel)).fetchone()


@_retry_busy
def get_eis(conn: sqlite3.Connection, run_key: int, channel: int,
            sweep: int | None = None) -> list[tuple]:
    """EIS points ``(sweep, t, f_Hz, z_re, z_im)`` of a channel (one sweep or all)."""
    sql = ("SELECT sweep, t, f_Hz, z_re, z_im FROM eis WHERE run_key = ? AND channel = ?")
    params: tuple = (run_key, channel)
    if sweep is not None:
        sql, params = sql + " AND sweep = ?", params + (sweep,)
    return conn.execute(sql + " ORDER BY sweep, rowid", params).fetchall()


@_retry_busy
def get_sensors(conn: sqlite3.Connection, run_key: int, sensor: str | None = None,
                quantity: str | None = None, t_from: float | None = None,
                t_to: float | None = None) -> list[tuple]:
    """Sensor readings ``(t, sensor, quantity, value)`` of a run, in time order."""
    sql = "SELECT t, sensor, quantity, value FROM sensors WHERE run_key = ?"
    params: tuple[Any, ...] = (run_key,)
    if sensor is not None:
        sql, params = sql + " AND sensor = ?", params + (sensor,)
    if quantity is not None:
        sql, params = sql + " AND quantity = ?", params + (quantity,)
    rng, rng_params = _range_sql(t_from, t_to)
    return conn.execute(sql + rng + " ORDER BY t", params + rng_params).fetchall()


@_retry_busy
def get_events(conn: sqlite3.Connection, run_key: int, channel: int | None = None,
               limit: int | None = None, after_id: int | None = None) -> list[dict]:
    """Events of a run in the order they were queued.

    ``channel``: that channel's events and the run-wide ones. ``limit``: only the last
    ``limit``. ``after_id``: only events newer than that id (for polling).
    """
    sql = "SELECT * FROM events WHERE run_key = ?"
    params: tuple[Any, ...] = (run_key,)
    if channel is not None:
        sql, params = sql + " AND (channel = ? OR channel IS NULL)", params + (channel,)
    if after_id is not None:
        sql, params = sql + " AND id > ?", params + (after_id,)
    if limit is None:
        return _dicts(conn.execute(sql + " ORDER BY id", params))
    rows = _dicts(conn.execute(sql + " ORDER BY id DESC LIMIT ?", params + (limit,)))
    return rows[::-1]


# ---- commands: written by other processes ------------------------------------------------

def _open_command_writer(path: str | os.PathLike) -> sqlite3.Connection:
    path = Path(path)
    _check_existing_store(path)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                               timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        check_narig_db(conn, path)
    except sqlite3.Error as exc:
        raise BadStore(f"{path}: cannot write to the store: {exc}") from None
    return conn


def send_command(path: str | os.PathLike, run_id: str, command: str,
                 channel: int | None = None) -> int:
    """Ask the process running ``run_id`` (id, prefix or "latest") to pause/resume/abort.

    ``channel=None`` addresses the whole run. Returns the command's id.
    """
    if command not in COMMANDS:
        raise ValueError(f"command {command!r} is not one of {', '.join(COMMANDS)}")
    conn = _open_command_writer(path)
    try:
        run = resolve_run(conn, run_id)
        if channel is not None:
            known = [c["channel"] for c in get_channels(conn, run["key"])]
            if channel not in known:
                raise StoreError(f"run {run['id']} has no channel {channel} "
                                 f"(channels: {', '.join(map(str, known)) or 'none'})")
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO commands (run_key, channel, command, issued_at) VALUES (?, ?, ?, ?)",
                (run["key"], channel, command, time.time()))
        if cur.lastrowid is None:  # set by every successful INSERT
            raise StoreError(f"queuing command {command!r} gave no row id")
        return cur.lastrowid
    finally:
        conn.close()


@_retry_busy
def pending_commands(conn: sqlite3.Connection, run_key: int) -> list[dict]:
    """Commands for a run not yet handled, oldest first."""
    return _dicts(conn.execute(
        "SELECT * FROM commands WHERE run_key = ? AND handled_at IS NULL ORDER BY id",
        (run_key,)))


def mark_command_handled(path: str | os.PathLike, command_id: int, result: str,
                         handled_at: float | None = None) -> bool:
    """Record what became of a command (``result``: e.g. "paused", "ignored: not running").

    True if this call marked it; False if it was already handled (so two handlers never both
    act on one command).
    """
    conn = _open_command_writer(path)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "UPDATE commands SET handled_at = ?, result = ? "
                "WHERE id = ? AND handled_at IS NULL",
                (time.time() if handled_at is None else handled_at, result, command_id))
        return cur.rowcount == 1
    finally:
        conn.close()


# ---- incremental reads for the monitor ----------------------------------------------

@_retry_busy
def steps_from(conn: sqlite3.Connection, run_key: int, channel: int, step: int) -> list[dict]:
    """The steps of a channel numbered ``step`` and later, in order (one primary-key range).

    Polling with the last step already seen re-reads that one row, so a replaced step row
    (a resumed step) is picked up too.
    """
    return _dicts(conn.execute(
        "SELECT * FROM steps WHERE run_key = ? AND channel = ? AND step >= ? ORDER BY step",
        (run_key, channel, step)))


@_retry_busy
def last_steps(conn: sqlite3.Connection, run_key: int, channel: int, n: int) -> list[dict]:
    """The last ``n`` steps of a channel, in order: where a poll of a long run starts."""
    rows = _dicts(conn.execute(
        "SELECT * FROM steps WHERE run_key = ? AND channel = ? ORDER BY step DESC LIMIT ?",
        (run_key, channel, n)))
    return rows[::-1]


@_retry_busy
def half_cycle_etas(conn: sqlite3.Connection, run_key: int, channel: int) -> list[tuple]:
    """``(cycle, half_cycle, e_mean_abs_V)`` of every plating and stripping step of a channel,
    in order: the overpotential plot's data, as light tuples (10^4 steps in milliseconds)."""
    return conn.execute(
        "SELECT cycle, half_cycle, e_mean_abs_V FROM steps WHERE run_key = ? AND channel = ? "
        "AND half_cycle IN ('plate', 'strip') ORDER BY step", (run_key, channel)).fetchall()


@_retry_busy
def last_event_of(conn: sqlite3.Connection, run_key: int, kinds: Sequence[str]) -> dict | None:
    """The newest event of the run whose kind is one of ``kinds``, or None."""
    marks = ", ".join("?" for _ in kinds)
    rows = _dicts(conn.execute(
        f"SELECT * FROM events WHERE run_key = ? AND kind IN ({marks}) ORDER BY id DESC LIMIT 1",
        (run_key, *kinds)))
    return rows[0] if rows else None


# ---- what a crashed run had done (rig resume) --------------------------------------------

@_retry_busy
def step_progress(conn: sqlite3.Connection, run_key: int, channel: int,
                  step: int, t_after: float = float("-inf")) -> dict | None:
    """What the committed samples of one step (after ``t_after``) say it had done: ``n``,
    ``t_last``, ``mean_abs_e``, and the last sample's ``q`` and ``e``; None if it has none."""
    where = "run_key = ? AND channel = ? AND step = ? AND t > ?"
    args = (run_key, channel, step, t_after)
    n, t_last, mean_abs_e = conn.execute(
        f"SELECT count(*), max(t), avg(abs(e)) FROM samples WHERE {where}", args).fetchone()
    if not n:
        return None
    q, e = conn.execute(
        f"SELECT q, e FROM samples WHERE {where} ORDER BY t DESC LIMIT 1", args).fetchone()
    return {"n": n, "t_last": t_last, "mean_abs_e": mean_abs_e, "q": q, "e": e}


@_retry_busy
def last_sample_time(conn: sqlite3.Connection, run_key: int) -> float | None:
    """The time of the run's newest committed sample (any channel)."""
    return conn.execute("SELECT max(t) FROM samples WHERE run_key = ?", (run_key,)).fetchone()[0]
