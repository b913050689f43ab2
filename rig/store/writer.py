"""The batched writer: the one connection that writes a run's data.

The engine calls the hot-path methods (``samples``, ``event``, ``checkpoint`` ...) from its
asyncio loop; each only checks its arguments and puts an ``Op`` on a queue. One thread owns the
write connection, drains the queue and commits in short transactions: at the latest
``commit_interval_s`` after the oldest pending item was queued, sooner when a batch exceeds
``max_batch_rows`` rows, and at once for ``flush`` and the synchronous calls. So a crash loses
at most the last ``commit_interval_s`` of data, and readers are never kept waiting.

Everything queued before a ``checkpoint`` is committed in the same transaction as the
checkpoint or an earlier one: a committed checkpoint is never ahead of committed samples.

A failure in the thread is never swallowed: it is logged, told to every ``on_failure``
listener (the engine, which then makes every cell safe) and raised (``WriterError``) by the
caller's next call, ``flush`` or ``close``. What could still be stored from the failed batch is
stored (op by op); what could not is kept in ``unwritten``. The writer stops at its first
failed commit: nothing queued after it is committed (a later checkpoint would claim steps whose
data is lost), it all goes to ``unwritten``; only ``record_failure`` still tries the store, to
leave the run's end and reason in it.

    >>> w = RunWriter(tmp / "narig.db")
    >>> key = w.create_run(run_id=new_run_id(clock.now()), name="ps", kind="plating_stripping",
    ...                    protocol_path="ps.toml", protocol_text=text, plan_json=plan.to_json(),
    ...                    station_json="{}", software_version="0.1.0",
    ...                    started_at=clock.now(), clock="virtual")
    >>> w.samples(key, 1, [(t, 3, 1, 0.012, -1e-3, -0.36)])
    >>> w.close()
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, cast

from rig.store.errors import RunNotFound, StoreError, WriterClosed, WriterError
from rig.store.schema import (
    CHANNEL_STATUSES,
    EVENT_LEVELS,
    RUN_STATUSES,
    SAMPLE_COLUMNS,
    SampleRow,
    STEP_COLUMNS,
    open_db,
)

if TYPE_CHECKING:  # importing protocols at run time would load pint for every reader
    from protocols.plan import CellSpec

log = logging.getLogger("rig.store")

REAL_CLOCK_COMMIT_INTERVAL_S = 0.1
"""The commit interval for a run on a real clock: a sample is in the store at most this long
(plus the engine's read) after it was due, so a crash loses at most that much measured data.
Data come at most a few rows a second a channel there, so short transactions cost nothing; a
virtual-clock run keeps the default 0.5 s (its batches are large)."""


def commit_interval_for(real_clock: bool) -> float:
    return REAL_CLOCK_COMMIT_INTERVAL_S if real_clock else 0.5


class OpKind(IntEnum):
    """What a queued write is; the writer thread batches them into transactions."""

    SAMPLES = 0
    EIS = 1
    SENSORS = 2
    EVENT = 3
    STEP = 4
    CHECKPOINT = 5
    CH_STATUS = 6
    RUN_STATUS = 7
    HEARTBEAT = 8


_SAMPLES, _EIS, _SENSORS, _EVENT, _STEP, _CHECKPOINT, _CH_STATUS, _RUN_STATUS, _HEARTBEAT = OpKind


class Op(NamedTuple):
    """One queued write: ``payload`` is what its SQL binds; ``n_rows`` counts towards a batch."""

    kind: OpKind
    queued_at: float      # time.monotonic() when queued
    run_key: int
    channel: int | None
    payload: Any
    n_rows: int


class _Flush(NamedTuple):
    """Commit everything queued before me, then set ``done``."""

    done: threading.Event


class _Stop(NamedTuple):
    """Commit what is queued and end the writer thread."""


def new_run_id(clock_now: float) -> str:
    """A run id from the run's start time (UTC) and 4 random hex digits.

    >>> new_run_id(1795535350.0)
    '20261124-154910-3fa2'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock_now))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of what the writer thread has done."""

    rows_written: int  # all tables
    samples_written: int
    commits: int
    max_batch_latency_s: float  # from the oldest item's enqueue to its commit
    max_commit_s: float  # time spent executing + committing one batch
    queued: int  # items waiting in the queue now


class _Call:
    """A synchronous request run by the writer thread in its own transaction."""

    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class RunWriter:
    """The one writer of a store file: a thread with its own connection, fed by a queue.

    ``run_id``: an existing run to continue (``rig resume``); its key is ``self.run_key``.
    ``create_run`` sets ``run_key`` too. Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike, run_id: str | None = None, *,
                 commit_interval_s: float = 0.5, max_batch_rows: int = 20_000,
                 busy_retry_s: float = 30.0) -> None:
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self.max_batch_rows = max_batch_rows
        self.busy_retry_s = busy_retry_s
        self.run_key: int | None = None
        self.unwritten: list[Op] = []  # queue items that could not be stored
        self._q: queue.SimpleQueue[Op | _Flush | _Call | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._error: WriterError | None = None
        self._listeners: list[Callable[[WriterError], None]] = []
        self._conn: sqlite3.Connection | None = None
        self._rows = self._samples_rows = self._commits = 0
        self._max_latency = self._max_commit = 0.0
        ready = _Call(lambda: None, ())
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name=f"narig-store-writer:{self.path.name}", daemon=True)
        self._thread.start()
        ready.done.wait()
        if ready.error is not None:
            self._closed = True
            raise ready.error
        atexit.register(self._close_at_exit)  # a forgotten close() still commits the queue
        if run_id is not None:
            self.run_key = self._call(_run_key_of, run_id)

    # ---- synchronous calls: committed before they return -------------------------------

    def create_run(self, *, run_id: str, name: str, kind: str, protocol_path: str | None,
                   protocol_text: str | None, plan_json: str | None, station_json: str | None,
                   software_version: str | None, started_at: float, clock: str) -> int:
        """Record a new run (status 'running', this process's pid and host); its key."""
        row = (run_id, name, kind, None if protocol_path is None else str(protocol_path),
               protocol_text, plan_json, station_json, software_version, started_at,
               time.time(), os.getpid(), socket.gethostname(), clock)
        key = self._call(_insert_run, row)
        if self.run_key is None:
            self.run_key = key
        return key

    def add_channel(self, run_key: int, cell: CellSpec, instrument: str) -> None:
        """Record the cell on one channel of a run (status 'pending')."""
        row = (run_key, cell.channel, cell.cell_id, cell.cell_type, cell.area_cm2,
               cell.electrolyte, cell.headspace_mL, cell.notes, instrument)
        self._call(_insert_channel, row)

    def adopt_run(self, run_key: int, wall_time: float | None = None) -> None:
        """Take over a run after a crash: status back to 'running', this pid/host, heartbeat."""
        row = (os.getpid(), socket.gethostname(),
               time.time() if wall_time is None else wall_time, run_key)
        self._call(_adopt_run, row)

    def record_end(self, run_key: int, status: str, end_reason: str, ended_at: float,
                   channel_reason: str, level: str, kind: str, message: str) -> None:
        """End a run from outside its normal path (a failed store or engine, an abort of a
        dead run): its status and reason, every channel not yet ended ended with
        ``channel_reason``, and one event — in one transaction, even when the writer has
        stopped after a failure. Raises the store's error if it cannot take even that."""
        _check_in(status, RUN_STATUSES, "run status")
        _check_in(level, EVENT_LEVELS, "event level")
        self._call(_record_end, (run_key, status, end_reason, ended_at, channel_reason, level,
                                 kind, message), force=True)

    def on_failure(self, listener: Callable[[WriterError], None]) -> Callable[[], None]:
        """Call ``listener(error)`` (from the writer thread) when a commit fails; at once if
        the writer has already failed. Returns the function that unsubscribes it."""
        self._listeners.append(listener)
        if self._error is not None:
            listener(self._error)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    @property
    def failed(self) -> WriterError | None:
        return self._error

    # ---- the hot path: check, enqueue, return ------------------------------------------

    def samples(self, run_key: int, channel: int,
                rows: Sequence[SampleRow]) -> None:
        """Queue samples ``(t, step, cycle, e, i, q)`` of one channel (SI: s, V, A, C)."""
        rows = list(rows)  # the caller may reuse its buffer
        if not rows:
            return
        if len(rows[0]) != len(SAMPLE_COLUMNS):
            raise ValueError(f"a sample row is {SAMPLE_COLUMNS}, got {rows[0]!r}")
        self._put(Op(_SAMPLES, time.monotonic(), run_key, channel, rows, len(rows)))

    def eis_points(self, run_key: int, channel: int, sweep: int, t: float,
                   points: Iterable[tuple[float, float, float]]) -> None:
        """Queue one EIS sweep's points ``(f_Hz, z_re, z_im)`` (ohm)."""
        rows = [(run_key, channel, sweep, t, f, re, im) for f, re, im in points]
        if rows:
            self._put(Op(_EIS, time.monotonic(), run_key, channel, rows, len(rows)))

    def sensor_values(self, run_key: int,
                      rows: Iterable[tuple[float, str, str, float]]) -> None:
        """Queue station sensor readings ``(t, sensor, quantity, value)``."""
        params = [(run_key, t, sensor, quantity, value) for t, sensor, quantity, value in rows]
        if params:
            self._put(Op(_SENSORS, time.monotonic(), run_key, None, params, len(params)))

    def event(self, run_key: int, channel: int | None, t: float, level: str, kind: str,
              message: str) -> None:
        """Queue an event; ``channel=None`` for a run-wide one."""
        _check_in(level, EVENT_LEVELS, "event level")
        row = (run_key, channel, t, level, kind, message)
        self._put(Op(_EVENT, time.monotonic(), run_key, channel, row, 1))

    def step_end(self, run_key: int, channel: int, row: dict) -> None:
        """Queue the summary of one executed step (keys: ``STEP_COLUMNS``; ``step`` required).

        A second row for the same step number replaces the first.
        """
        unknown = set(row) - set(STEP_COLUMNS)
        if unknown:
            raise ValueError(f"unknown step columns {sorted(unknown)}; known: {STEP_COLUMNS}")
        if row.get("step") is None:
            raise ValueError("a step row needs its 'step' number")
        values = (run_key, channel) + tuple(row.get(c) for c in STEP_COLUMNS)
        self._put(Op(_STEP, time.monotonic(), run_key, channel, values, 1))

    def checkpoint(self, run_key: int, channel: int, t: float, state: dict) -> None:
        """Queue the channel's position; committed with (or after) everything queued before."""
        state_json = json.dumps(state)  # fails here, not in the thread; snapshots the dict
        self._put(Op(_CHECKPOINT, time.monotonic(), run_key, channel, (t, state_json), 1))

    def channel_status(self, run_key: int, channel: int, status: str,
                       end_reason: str | None = None, outcome: dict | None = None) -> None:
        """Queue a channel's new status and reason; ``outcome`` replaces the stored one if given."""
        _check_in(status, CHANNEL_STATUSES, "channel status")
        outcome_json = None if outcome is None else json.dumps(outcome)
        row = (status, end_reason, outcome_json, run_key, channel)
        self._put(Op(_CH_STATUS, time.monotonic(), run_key, channel, row, 1))

    def run_status(self, run_key: int, status: str, end_reason: str | None = None,
                   ended_at: float | None = None) -> None:
        """Queue a run's new status, end reason and end time (run clock), as given."""
        _check_in(status, RUN_STATUSES, "run status")
        row = (status, end_reason, ended_at, run_key)
        self._put(Op(_RUN_STATUS, time.monotonic(), run_key, None, row, 1))

    def heartbeat(self, run_key: int, wall_time: float) -> None:
        """Queue 'this run's process is alive at wall_time'."""
        self._put(Op(_HEARTBEAT, time.monotonic(), run_key, None, wall_time, 1))

    # ---- control ------------------------------------------------------------------------

    def flush(self, timeout: float = 10) -> None:
        """Block until everything queued so far is committed; raise a writer failure."""
        done = threading.Event()
        self._put(_Flush(done))
        if not self._wait(done, timeout):
            raise TimeoutError(
                f"store writer did not commit within {timeout} s "
                f"({self._q.qsize()} items still queued)")
        self._raise_error()

    def close(self) -> None:
        """Commit what is queued, stop the thread, close the connection. Idempotent.

        Raises the writer's failure, if any, after closing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._q.put(_Stop())
        atexit.unregister(self._close_at_exit)
        self._thread.join()
        self._raise_error()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except StoreError:
            log.exception("store writer: failure while closing at exit")

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._rows, self._samples_rows, self._commits, self._max_latency,
                           self._max_commit, self._q.qsize())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: Op | _Flush | _Call | _Stop, force: bool = False) -> None:
        with self._lock:
            if not force:
                self._raise_error()
            if self._closed:
                raise WriterClosed(f"the writer of {self.path} is closed")
            self._q.put(item)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wait(self, done: threading.Event, timeout: float | None) -> bool:
        """Wait for the writer thread to set ``done``; raise if the thread died meanwhile."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.25):
            if not self._thread.is_alive():
                self._raise_error()
                raise WriterClosed(f"the writer of {self.path} stopped")
            if give_up is not None and time.monotonic() > give_up:
                return False
        return True

    def _call(self, fn: Callable[..., Any], *args: Any, force: bool = False) -> Any:
        call = _Call(fn, args)
        self._put(call, force=force)
        self._wait(call.done, None)
        if call.error is not None:
            raise call.error
        return call.result

    # ---- the writer thread --------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        """The writer thread's connection; open before ``_loop`` runs."""
        if self._conn is None:
            raise WriterError(f"store writer for {self.path} has no open connection")
        return self._conn

    def _run(self, ready: _Call) -> None:
        try:
            self._conn = open_db(self.path)
        except BaseException as exc:  # noqa: BLE001 - handed to __init__
            ready.error = exc
            ready.done.set()
            return
        ready.done.set()
        try:
            self._loop()
        except BaseException as exc:
            log.exception("store writer thread crashed")
            self._fail(WriterError(f"store writer thread crashed: {exc!r}"), exc)
            self._closed = True
            self._release_waiters()
        finally:
            self._conn.close()

    def _loop(self) -> None:
        q, n_rows, deadline = self._q, 0, 0.0
        ops: list[Op] = []
        while True:
            try:
                item = q.get(timeout=max(0.0, deadline - time.monotonic())) if ops else q.get()
            except queue.Empty:
                self._commit(ops)
                ops, n_rows = [], 0
                continue
            if isinstance(item, Op):
                if not ops:  # the batch's clock starts when the writer picks it up
                    deadline = time.monotonic() + self.commit_interval_s
                ops.append(item)
                n_rows += item[5]
                if n_rows >= self.max_batch_rows or time.monotonic() >= deadline:
                    self._commit(ops)
                    ops, n_rows = [], 0
                continue
            self._commit(ops)
            ops, n_rows = [], 0
            if isinstance(item, _Flush):
                item.done.set()
            elif isinstance(item, _Call):
                self._run_call(item)
            else:  # _Stop
                return

    def _commit(self, ops: list[Op]) -> None:
        if not ops:
            return
        if self._error is not None:  # stopped at the first failed commit: keep, never commit
            self.unwritten.extend(ops)
            return
        t0 = time.monotonic()
        try:
            self._transaction(lambda: _apply(self._db, ops))
        except Exception as exc:  # noqa: BLE001 - salvaged, logged and re-raised to the caller
            self._salvage(ops, exc)
            return
        done = time.monotonic()
        self._commits += 1
        self._rows += sum(op[5] for op in ops)
        self._samples_rows += sum(op[5] for op in ops if op[0] == _SAMPLES)
        self._max_commit = max(self._max_commit, done - t0)
        self._max_latency = max(self._max_latency, done - ops[0][1])  # FIFO: ops[0] oldest

    def _transaction(self, body: Callable[[], Any]) -> Any:
        """BEGIN IMMEDIATE; body; COMMIT — retried while another process holds the lock."""
        give_up = time.monotonic() + self.busy_retry_s
        pause = 0.05
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = body()
                    self._db.execute("COMMIT")
                    return result
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > give_up:
                    raise
                log.warning("store %s is locked by another connection; retrying", self.path)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _salvage(self, ops: list[Op], exc: Exception) -> None:
        """Store the failed batch op by op, keeping the rest; record the failure."""
        log.error("store writer: committing %d queued items failed: %r", len(ops), exc)
        failed: list[Op] = []

        def one_by_one() -> None:
            failed.clear()  # in case the transaction is retried
            broken: set[tuple] = set()  # (run_key, channel) whose data failed
            for op in ops:
                if op[0] == _CHECKPOINT and (op[2], op[3]) in broken:
                    failed.append(op)  # never commit a checkpoint ahead of lost samples
                    continue
                self._db.execute("SAVEPOINT op")
                try:
                    _apply(self._db, [op])
                except Exception:  # noqa: BLE001 - collected into `failed`
                    self._db.execute("ROLLBACK TO op")
                    failed.append(op)
                    broken.add((op[2], op[3]))
                self._db.execute("RELEASE op")

        try:
            self._transaction(one_by_one)
            self._commits += 1
        except Exception as exc2:  # noqa: BLE001 - nothing could be stored
            log.error("store writer: salvage failed too: %r", exc2)
            failed = list(ops)
        self.unwritten.extend(failed)
        self._fail(WriterError(
            f"store writer failed to commit to {self.path}: {exc} "
            f"({len(failed)} of {len(ops)} queued writes not stored; see RunWriter.unwritten)"),
            exc)

    def _fail(self, error: WriterError, cause: BaseException) -> None:
        error.__cause__ = cause
        if self._error is not None:
            return
        self._error = error
        for listener in list(self._listeners):
            try:
                listener(error)
            except Exception:  # noqa: BLE001 - a listener must not stop the others
                log.exception("store writer: a failure listener failed")

    def _run_call(self, call: _Call) -> None:
        try:
            call.result = self._transaction(lambda: call.fn(self._conn, *call.args))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            call.error = exc
        call.done.set()

    def _release_waiters(self) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Flush):
                item.done.set()
            elif isinstance(item, _Call):
                item.error = self._error
                item.done.set()
            elif isinstance(item, Op):
                self.unwritten.append(item)


# ---- SQL, run on the writer thread ------------------------------------------------------

_STEP_SQL = (
    f"INSERT INTO steps (run_key, channel, {', '.join(STEP_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(STEP_COLUMNS) + 2))}) "
    "ON CONFLICT (run_key, channel, step) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STEP_COLUMNS[1:])
)
_CHECKPOINT_SQL = (
    "INSERT INTO checkpoints (run_key, channel, t, state_json) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_key, channel) DO UPDATE SET t = excluded.t, state_json = excluded.state_json"
)
_EVENT_SQL = ("INSERT INTO events (run_key, channel, t, level, kind, message) "
              "VALUES (?, ?, ?, ?, ?, ?)")
_EIS_SQL = ("INSERT INTO eis (run_key, channel, sweep, t, f_Hz, z_re, z_im) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)")
_SENSORS_SQL = "INSERT INTO sensors (run_key, t, sensor, quantity, value) VALUES (?, ?, ?, ?, ?)"
_CH_STATUS_SQL = (
    "UPDATE channels SET status = ?, end_reason = ?, outcome_json = COALESCE(?, outcome_json) "
    "WHERE run_key = ? AND channel = ?")
_RUN_STATUS_SQL = "UPDATE runs SET status = ?, end_reason = ?, ended_at = ? WHERE key = ?"
_HEARTBEAT_SQL = "UPDATE runs SET heartbeat_at = ? WHERE key = ?"


@lru_cache(maxsize=1024)
def _samples_sql(run_key: int, channel: int) -> str:
    # run_key and channel inlined (as ints) so the caller's row tuples bind unchanged
    return ("INSERT INTO samples (run_key, channel, t, step, cycle, e, i, q) "
            f"VALUES ({int(run_key)}, {int(channel)}, ?, ?, ?, ?, ?, ?)")


def _apply(conn: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """Execute a batch: executemany per table, updates in queue order, checkpoints last."""
    samples: dict[tuple[int, int], list[list]] = {}
    by_kind: dict[int, list] = {k: [] for k in (_EIS, _SENSORS, _EVENT, _STEP)}
    updates: list[tuple[str, tuple]] = []
    checkpoints: dict[tuple[int, int], tuple] = {}
    heartbeats: dict[int, float] = {}
    for kind, _, run_key, channel, payload, _ in ops:
        if kind == _SAMPLES:  # samples() and checkpoint() queue an int channel
            samples.setdefault((run_key, cast(int, channel)), []).append(payload)
        elif kind in (_EIS, _SENSORS):
            by_kind[kind].extend(payload)
        elif kind in (_EVENT, _STEP):
            by_kind[kind].append(payload)
        elif kind == _CHECKPOINT:
            checkpoints[(run_key, cast(int, channel))] = (run_key, channel) + payload
        elif kind == _CH_STATUS:
            updates.append((_CH_STATUS_SQL, payload))
        elif kind == _RUN_STATUS:
            updates.append((_RUN_STATUS_SQL, payload))
        else:  # _HEARTBEAT
            heartbeats[run_key] = payload
    for (run_key, channel), chunks in samples.items():
        conn.executemany(_samples_sql(run_key, channel), chain.from_iterable(chunks))
    for kind, sql in ((_EIS, _EIS_SQL), (_SENSORS, _SENSORS_SQL), (_EVENT, _EVENT_SQL),
                      (_STEP, _STEP_SQL)):
        if by_kind[kind]:
            conn.executemany(sql, by_kind[kind])
    for sql, params in updates:
        if conn.execute(sql, params).rowcount != 1:
            raise StoreError(f"status update for an unknown run/channel: {params!r}")
    if heartbeats:
        conn.executemany(_HEARTBEAT_SQL, [(w, k) for k, w in heartbeats.items()])
    if checkpoints:
        conn.executemany(_CHECKPOINT_SQL, list(checkpoints.values()))


def _insert_run(conn: sqlite3.Connection, row: tuple) -> int:
    try:
        cur = conn.execute(
            "INSERT INTO runs (id, name, kind, protocol_path, protocol_text, plan_json, "
            "station_json, software_version, status, started_at, heartbeat_at, pid, host, clock) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)", row)
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"a run with id {row[0]!r} already exists") from exc
    if cur.lastrowid is None:  # set by every successful INSERT
        raise StoreError(f"inserting run {row[0]!r} gave no row id")
    return cur.lastrowid


def _insert_channel(conn: sqlite3.Connection, row: tuple) -> None:
    if not conn.execute("SELECT 1 FROM runs WHERE key = ?", (row[0],)).fetchone():
        raise RunNotFound(f"no run with key {row[0]}")
    try:
        conn.execute(
            "INSERT INTO channels (run_key, channel, cell_id, cell_type, area_cm2, electrolyte, "
            "headspace_mL, notes, instrument, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')", row)
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"run key {row[0]} already has a channel {row[1]}") from exc


def _adopt_run(conn: sqlite3.Connection, row: tuple) -> None:
    cur = conn.execute(
        "UPDATE runs SET status = 'running', end_reason = NULL, ended_at = NULL, pid = ?, "
        "host = ?, heartbeat_at = ? WHERE key = ?", row)
    if cur.rowcount != 1:
        raise RunNotFound(f"no run with key {row[-1]}")


def _record_end(conn: sqlite3.Connection, row: tuple) -> None:
    run_key, status, end_reason, ended_at, channel_reason, level, kind, message = row
    conn.execute("UPDATE runs SET status = ?, end_reason = ?, ended_at = ? WHERE key = ?",
                 (status, end_reason, ended_at, run_key))
    conn.execute("UPDATE channels SET status = 'ended', end_reason = ? "
                 "WHERE run_key = ? AND status != 'ended'", (channel_reason, run_key))
    conn.execute(_EVENT_SQL, (run_key, None, ended_at, level, kind, message))


def _run_key_of(conn: sqlite3.Connection, run_id: str) -> int:
    row = conn.execute("SELECT key FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id!r} in this store")
    return row[0]


def _check_in(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text
