"""The store: what a run writes can be read back, while it writes, and survives a crash."""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from protocols.plan import CellSpec
from rig.store import (
    SCHEMA_VERSION,
    AmbiguousRun,
    RunNotFound,
    RunWriter,
    SchemaTooNew,
    StoreError,
    WriterClosed,
    WriterError,
    default_db_path,
    get_channels,
    get_checkpoint,
    get_eis,
    get_events,
    get_run,
    get_samples,
    get_sensors,
    get_steps,
    latest_sample,
    list_runs,
    mark_command_handled,
    new_run_id,
    open_db,
    open_reader,
    pending_commands,
    resolve_run,
    send_command,
)

REPO = Path(__file__).resolve().parents[2]
CELL1 = CellSpec(1, "NaNa-01", "symmetric", 1.13, "1 M NaPF6 in diglyme", 2.5, "first")
CELL2 = CellSpec(2, "NaCu-02", "na_cu", 1.13, "1 M NaPF6 in EC:DEC")


def create_run(w: RunWriter, run_id: str = "20261124-154230-3fa2", started_at: float = 1e9,
               ) -> int:
    key = w.create_run(run_id=run_id, name="ps", kind="plating_stripping",
                       protocol_path="protocols/ps.toml", protocol_text='kind = "ps"',
                       plan_json='{"kind": "ps"}', station_json='{"name": "sim"}',
                       software_version="0.1.0", started_at=started_at, clock="virtual")
    w.add_channel(key, CELL1, "sim-emstat")
    w.add_channel(key, CELL2, "sim-emstat")
    return key


def rows(t0: float, n: int, step: int = 0, cycle: int = 0) -> list[tuple]:
    return [(t0 + k, step, cycle, 0.01 + k * 1e-6, -1e-3, -1e-3 * k) for k in range(n)]


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in another Python process, with this checkout importable."""
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "narig.db"


@pytest.fixture
def writer(db: Path):
    w = RunWriter(db)
    yield w
    try:
        w.close()
    except StoreError:
        pass


# ---- schema -------------------------------------------------------------------------------

def test_open_db_creates_parent_dir_schema_wal_and_portable_types(db: Path) -> None:
    conn = open_db(db)
    assert db.is_file()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert set(tables) >= {"runs", "channels", "samples", "steps", "eis", "sensors", "events",
                           "checkpoints", "commands", "meta"}
    types = {r[0] for t in tables
             for r in conn.execute(f"SELECT type FROM pragma_table_info('{t}')")}
    assert types <= {"INTEGER", "REAL", "TEXT"}
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM samples WHERE run_key = 1 AND "
                        "channel = 1 AND t > 5").fetchall()
    assert "ix_samples_run_key_channel_t" in str(plan)
    conn.close()
    open_db(db).close()  # opening again is harmless


def test_a_store_from_a_newer_narig_is_refused(db: Path) -> None:
    conn = open_db(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade narig"):
        open_db(db)


def test_default_db_path_honours_narig_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NARIG_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("NARIG_DB")
    assert default_db_path().name == "narig.db"
    assert "narig" in default_db_path().parent.parts[-1]


def test_new_run_id_is_utc_time_and_random_suffix() -> None:
    rid = new_run_id(1795535350.0)
    assert re.fullmatch(r"20261124-154910-[0-9a-f]{4}", rid)


# ---- write, read back ---------------------------------------------------------------------

def test_what_a_run_wrote_can_be_read_back(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    writer.samples(key, 1, rows(1e9, 100, step=0))
    writer.samples(key, 2, rows(1e9, 50, step=0))
    writer.step_end(key, 1, {"step": 0, "cycle": 0, "label": "rest", "kind": "rest",
                             "t_start": 1e9, "t_end": 1e9 + 99, "end_reason": "time",
                             "charge_C": 0.0, "e_mean_abs_V": 0.01, "e_end_V": 0.0101,
                             "n_samples": 100})
    writer.checkpoint(key, 1, 1e9 + 99, {"path": [1], "cycle": 0})
    writer.checkpoint(key, 1, 1e9 + 99, {"path": [2], "cycle": 1})  # latest wins
    writer.event(key, 1, 1e9 + 99, "info", "step_end", "rest ended: time")
    writer.event(key, None, 1e9 + 100, "alarm", "atmosphere", "O2 12 ppm > 10 ppm")
    writer.eis_points(key, 2, 0, 1e9 + 5, [(1e5, 2.0, -0.1), (1e4, 2.5, -1.0)])
    writer.sensor_values(key, [(1e9, "glovebox", "O2_ppm", 0.4), (1e9, "holder1", "p_Pa", 1e5)])
    writer.channel_status(key, 1, "running")
    writer.channel_status(key, 2, "ended", "short_circuit", {"cycles": 3})
    writer.heartbeat(key, 1234.5)
    writer.run_status(key, "ended_early", "short_circuit", 1e9 + 200)
    writer.flush()

    conn = open_reader(db)
    run = get_run(conn, key)
    assert run["id"] == "20261124-154230-3fa2" and run["protocol_text"] == 'kind = "ps"'
    assert (run["status"], run["end_reason"], run["ended_at"]) == (
        "ended_early", "short_circuit", 1e9 + 200)
    assert run["heartbeat_at"] == 1234.5 and run["pid"] == os.getpid() and run["clock"] == "virtual"
    [listed] = list_runs(conn)
    assert listed["n_channels"] == 2 and "protocol_text" not in listed
    ch1, ch2 = get_channels(conn, key)
    assert (ch1["cell_id"], ch1["area_cm2"], ch1["headspace_mL"], ch1["notes"]) == (
        "NaNa-01", 1.13, 2.5, "first")
    assert (ch1["status"], ch2["status"], ch2["end_reason"]) == (
        "running", "ended", "short_circuit")
    assert json.loads(ch2["outcome_json"]) == {"cycles": 3}
    assert get_samples(conn, key, 1) == rows(1e9, 100)
    assert len(get_samples(conn, key, 2)) == 50
    assert get_samples(conn, key, 1, t_from=1e9 + 10, t_to=1e9 + 19) == rows(1e9, 100)[10:20]
    assert latest_sample(conn, key, 1) == rows(1e9, 100)[-1]
    assert latest_sample(conn, key, 3) is None
    [step] = get_steps(conn, key, 1)
    assert (step["label"], step["end_reason"], step["n_samples"]) == ("rest", "time", 100)
    assert get_checkpoint(conn, key, 1) == {"t": 1e9 + 99, "state": {"path": [2], "cycle": 1}}
    assert get_checkpoint(conn, key, 2) is None
    events = get_events(conn, key)
    assert [(e["channel"], e["level"], e["kind"]) for e in events] == [
        (1, "info", "step_end"), (None, "alarm", "atmosphere")]
    assert [e["kind"] for e in get_events(conn, key, channel=2)] == ["atmosphere"]
    assert [e["kind"] for e in get_events(conn, key, limit=1)] == ["atmosphere"]
    assert get_events(conn, key, after_id=events[-1]["id"]) == []
    assert get_eis(conn, key, 2) == [(0, 1e9 + 5, 1e5, 2.0, -0.1), (0, 1e9 + 5, 1e4, 2.5, -1.0)]
    assert get_sensors(conn, key, quantity="O2_ppm") == [(1e9, "glovebox", "O2_ppm", 0.4)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stats = writer.stats
    assert stats.samples_written == 150 and stats.commits >= 1


def test_a_second_writer_continues_an_existing_run(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    writer.run_status(key, "crashed", "no heartbeat")
    writer.close()
    with RunWriter(db, run_id="20261124-154230-3fa2") as w2:
        assert w2.run_key == key
        w2.adopt_run(key, wall_time=99.0)
        w2.samples(key, 1, rows(2e9, 3))
    run = get_run(open_reader(db), key)
    assert (run["status"], run["end_reason"], run["heartbeat_at"]) == ("running", None, 99.0)
    with pytest.raises(RunNotFound):
        RunWriter(db, run_id="nope")


def test_synchronous_calls_raise_their_own_errors(writer: RunWriter) -> None:
    key = create_run(writer)
    with pytest.raises(StoreError, match="already exists"):
        create_run(writer)
    with pytest.raises(StoreError, match="already has a channel 1"):
        writer.add_channel(key, CELL1, "x")
    writer.samples(key, 1, rows(0, 3))  # the writer still works
    writer.flush()


def test_the_caller_may_reuse_its_sample_buffer(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    buf = rows(0, 10)
    writer.samples(key, 1, buf)
    buf.clear()
    writer.flush()
    assert len(get_samples(open_reader(db), key, 1)) == 10


def test_bad_values_are_refused_at_the_call(writer: RunWriter) -> None:
    key = create_run(writer)
    with pytest.raises(ValueError, match="event level"):
        writer.event(key, 1, 0.0, "panic", "x", "y")
    with pytest.raises(ValueError, match="channel status"):
        writer.channel_status(key, 1, "done")
    with pytest.raises(ValueError, match="run status"):
        writer.run_status(key, "finished")
    with pytest.raises(ValueError, match="unknown step columns"):
        writer.step_end(key, 1, {"step": 1, "colour": "red"})
    with pytest.raises(ValueError, match="sample row"):
        writer.samples(key, 1, [(0.0, 1.0)])
    with pytest.raises(TypeError):
        writer.checkpoint(key, 1, 0.0, {"x": object()})
    writer.flush()  # nothing bad reached the thread


# ---- batching, flush, transactions ----------------------------------------------------------

def test_batches_are_committed_within_a_second_without_flush(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    writer.samples(key, 1, rows(0, 500))
    writer.event(key, 1, 1.0, "info", "x", "queued")
    other = open_reader(db)
    # committed by the writer's own timer (0.5 s): no flush, no close; polled, so a busy disk
    # or a starved thread only makes it slower
    deadline = time.monotonic() + 30
    while len(get_samples(other, key, 1)) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(get_samples(other, key, 1)) == 500
    assert len(get_events(other, key)) == 1


def test_flush_returns_once_everything_queued_is_committed(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    other = open_reader(db)
    for k in range(20):
        writer.samples(key, 1, rows(k * 100, 100))
    writer.heartbeat(key, 42.0)
    writer.flush()
    assert len(get_samples(other, key, 1)) == 2000
    assert get_run(other, key)["heartbeat_at"] == 42.0
    writer.flush()  # nothing queued: returns at once


def test_a_large_stream_is_split_into_bounded_batches(db: Path) -> None:
    with RunWriter(db, max_batch_rows=1000, commit_interval_s=60) as w:
        key = create_run(w)
        for k in range(10):
            w.samples(key, 1, rows(k * 500, 500))
        deadline = time.monotonic() + 5
        while w.stats.samples_written < 4000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.stats.samples_written >= 4000  # committed without flush or interval
        w.flush()
        assert w.stats.commits >= 5


def test_checkpoint_is_never_ahead_of_the_samples_before_it(db: Path) -> None:
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def read_loop(key: int) -> None:
        conn = open_reader(db)
        while not stop.is_set():
            ck = get_checkpoint(conn, key, 1)  # read the checkpoint first ...
            last = latest_sample(conn, key, 1)  # ... then samples at least as new must exist
            if ck is not None:
                seen.append(ck["state"]["n"])
                if last is None or last[0] < ck["t"]:
                    problems.append(f"checkpoint {ck['t']} ahead of sample {last}")

    with RunWriter(db, commit_interval_s=0.01, max_batch_rows=70) as w:
        key = create_run(w)
        reader = threading.Thread(target=read_loop, args=(key,))
        reader.start()
        t = 0.0
        for n in range(1500):
            w.samples(key, 1, rows(t, 7))
            t += 7
            w.checkpoint(key, 1, t - 1, {"n": n})
            if n % 100 == 0:
                time.sleep(0.01)
        w.flush()
        time.sleep(0.05)
        stop.set()
        reader.join()
    assert not problems, problems[:3]
    assert len(set(seen)) > 5  # the reader really saw the checkpoint move


# ---- readers while writing -------------------------------------------------------------------

def _stream(w: RunWriter, key: int, stop: threading.Event) -> int:
    """About 10,000 samples/s on channel 1, with events and heartbeats, until stopped."""
    t, n = 0.0, 0
    while not stop.is_set():
        w.samples(key, 1, rows(t, 50))
        w.event(key, 1, t, "info", "tick", "")
        w.heartbeat(key, time.time())
        t += 50
        n += 50
        time.sleep(0.005)
    return n


def test_a_reader_thread_reads_while_the_writer_writes(db: Path) -> None:
    writer = RunWriter(db, commit_interval_s=0.1)  # many commits to read across
    key = create_run(writer)
    errors: list[BaseException] = []
    seen: set[tuple | None] = set()

    def read_loop() -> None:  # until 4 different commits were seen
        conn = open_reader(db)
        end = time.monotonic() + 10
        try:
            while len(seen) < 4 and time.monotonic() < end:
                last = latest_sample(conn, key, 1)
                seen.add(last)
                get_samples(conn, key, 1, t_from=last[0] - 500 if last else None)
                get_samples(conn, key, 1, max_points=100)
                get_events(conn, key, limit=10)
                list_runs(conn)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    stop = threading.Event()
    streamer = threading.Thread(target=_stream, args=(writer, key, stop))
    streamer.start()
    reader = threading.Thread(target=read_loop)
    reader.start()
    reader.join()
    stop.set()
    streamer.join()
    writer.close()
    assert not errors, errors
    assert len(seen) >= 4  # the reader saw the data grow


def test_a_reader_process_reads_while_the_writer_writes(db: Path) -> None:
    writer = RunWriter(db, commit_interval_s=0.1)  # many commits to read across
    key = create_run(writer)
    code = textwrap.dedent(f"""
        import json, sys, time
        from rig.store import open_reader, get_samples, latest_sample, list_runs, get_events
        conn = open_reader({str(db)!r})
        seen, end = set(), time.monotonic() + 10
        while len(seen) < 4 and time.monotonic() < end:  # until 4 commits were seen
            last = latest_sample(conn, {key}, 1)
            seen.add(last)
            get_samples(conn, {key}, 1, t_from=last[0] - 200 if last else None)
            get_samples(conn, {key}, 1, max_points=50)
            get_events(conn, {key}, limit=5)
            list_runs(conn)
        print(json.dumps({{"distinct": len(seen)}}))
    """)
    stop = threading.Event()
    streamer = threading.Thread(target=_stream, args=(writer, key, stop))
    streamer.start()
    try:
        proc = run_python(code)
    finally:
        stop.set()
        streamer.join()
        writer.close()
    assert proc.returncode == 0, proc.stderr
    assert "locked" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["distinct"] >= 4, result


def test_a_command_can_be_sent_while_the_writer_writes(db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    stop = threading.Event()
    streamer = threading.Thread(target=_stream, args=(writer, key, stop))
    streamer.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        cid = send_command(db, "20261124", "pause", channel=2)
        assert time.monotonic() - t0 < 5.0  # a commit holds the lock for milliseconds
    finally:
        stop.set()
        streamer.join()
    conn = open_reader(db)
    [cmd] = pending_commands(conn, key)
    assert (cmd["id"], cmd["command"], cmd["channel"], cmd["handled_at"]) == (cid, "pause", 2, None)
    assert mark_command_handled(db, cid, "paused", handled_at=5.0) is True
    assert mark_command_handled(db, cid, "paused again") is False
    assert pending_commands(conn, key) == []
    run_wide = send_command(db, "latest", "abort")
    assert [c["id"] for c in pending_commands(conn, key)] == [run_wide]


def test_bad_commands_are_refused_with_a_reason(db: Path, writer: RunWriter) -> None:
    create_run(writer)
    with pytest.raises(ValueError, match="pause, resume, abort"):
        send_command(db, "latest", "explode")
    with pytest.raises(StoreError, match=r"has no channel 7 \(channels: 1, 2\)"):
        send_command(db, "latest", "pause", channel=7)
    with pytest.raises(RunNotFound):
        send_command(db, "19990101", "abort")
    with pytest.raises(StoreError, match="no store at"):
        send_command(db.with_name("missing.db"), "latest", "abort")


# ---- failures ---------------------------------------------------------------------------------

def test_writing_after_close_raises(writer: RunWriter) -> None:
    key = create_run(writer)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(WriterClosed):
        writer.samples(key, 1, rows(0, 1))
    with pytest.raises(WriterClosed):
        writer.flush()


def test_a_writer_thread_failure_surfaces_and_good_data_is_kept(db: Path) -> None:
    w = RunWriter(db, commit_interval_s=5)
    key = create_run(w)
    w.samples(key, 2, rows(0, 10))
    w.samples(key, 1, rows(0, 5) + [(5.0, 0)])  # a short row past the first: fails in the thread
    w.checkpoint(key, 1, 5.0, {"n": 1})  # must not land ahead of the lost samples
    w.checkpoint(key, 2, 9.0, {"n": 1})
    w.channel_status(key, 9, "running")  # no such channel
    with pytest.raises(WriterError, match="3 of 5 queued writes not stored"):
        w.flush()
    with pytest.raises(WriterError):  # sticky: every later call says so
        w.event(key, None, 0.0, "error", "x", "y")
    assert len(w.unwritten) == 3
    with pytest.raises(WriterError):
        w.close()
    conn = open_reader(db)
    assert len(get_samples(conn, key, 2)) == 10
    assert get_samples(conn, key, 1) == []
    assert get_checkpoint(conn, key, 1) is None
    assert get_checkpoint(conn, key, 2) == {"t": 9.0, "state": {"n": 1}}


def test_a_crash_loses_nothing_that_was_committed(db: Path) -> None:
    code = textwrap.dedent(f"""
        import os, signal
        from rig.store import RunWriter
        rows = lambda t0, n: [(t0 + k, 0, 0, 0.01 + k * 1e-6, -1e-3, -1e-3 * k) for k in range(n)]
        w = RunWriter({str(db)!r})
        key = w.create_run(run_id="r", name="ps", kind="ps", protocol_path=None,
                           protocol_text=None, plan_json=None, station_json=None,
                           software_version=None, started_at=0.0, clock="real")
        for k in range(50):
            w.samples(key, 1, rows(k * 100, 100))
        w.checkpoint(key, 1, 4999, {{"n": 50}})
        w.flush()
        print("flushed", flush=True)
        for k in range(50, 80):
            w.samples(key, 1, rows(k * 100, 100))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_python(code)
    assert proc.stdout.strip() == "flushed", proc.stderr
    assert proc.returncode != 0
    conn = open_reader(db)
    samples = get_samples(conn, 1, 1)
    assert len(samples) >= 5000
    assert samples[:5000] == [r for k in range(50) for r in rows(k * 100, 100)]
    assert get_checkpoint(conn, 1, 1) == {"t": 4999, "state": {"n": 50}}
    assert get_run(conn, 1)["status"] == "running"  # what `rig resume` looks for
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with RunWriter(db) as w:  # the store opens cleanly again for the resume
        w.samples(1, 1, rows(10_000, 1))


# ---- readers --------------------------------------------------------------------------------

def test_resolve_run_by_id_prefix_or_latest_with_clear_errors(db: Path, writer: RunWriter) -> None:
    with pytest.raises(StoreError, match="no store at"):
        open_reader(db.with_name("missing.db"))
    a = create_run(writer, "20261124-154230-3fa2")
    b = create_run(writer, "20261124-160000-0b1c")
    c = create_run(writer, "20261125-090000-77aa")
    conn = open_reader(db)
    assert resolve_run(conn, "20261124-154230-3fa2")["key"] == a
    assert resolve_run(conn, "20261124-16")["key"] == b
    assert resolve_run(conn, "20261125")["key"] == c
    assert resolve_run(conn, "latest")["key"] == c
    with pytest.raises(AmbiguousRun) as amb:
        resolve_run(conn, "20261124")
    assert "20261124-154230-3fa2" in str(amb.value) and "20261124-160000-0b1c" in str(amb.value)
    assert "give more of the id" in str(amb.value)
    with pytest.raises(RunNotFound, match=r"no run matches '2027' \(recent runs: 20261125"):
        resolve_run(conn, "2027")
    with pytest.raises(RunNotFound):
        get_run(conn, 999)


def test_resolve_run_in_an_empty_store_says_so(db: Path) -> None:
    open_db(db).close()
    conn = open_reader(db)
    with pytest.raises(RunNotFound, match="no runs"):
        resolve_run(conn, "latest")
    with pytest.raises(RunNotFound, match="has no runs"):
        resolve_run(conn, "2026")


def test_decimated_samples_span_the_whole_range_within_max_points(db: Path,
                                                                  writer: RunWriter) -> None:
    key = create_run(writer)
    writer.samples(key, 1, rows(1000.0, 10_000))  # t = 1000 .. 10999
    writer.samples(key, 1, rows(50_000.0, 3))  # a sparse tail after a gap
    writer.samples(key, 2, rows(0.0, 20_000))  # another channel in between
    writer.flush()
    conn = open_reader(db)
    pts = get_samples(conn, key, 1, max_points=100)
    ts = [p[0] for p in pts]
    assert 10 < len(pts) <= 100
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert ts[0] == 1000.0 and ts[-1] >= 50_000.0
    dense = get_samples(conn, key, 1, t_from=1000.0, t_to=10_999.0, max_points=100)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(dense)]
    assert 95 <= len(dense) <= 100 and dense[0][0] == 1000.0 and dense[-1][0] >= 10_899.0
    assert max(gaps) <= 2 * 10_000 / 100  # evenly spread, no holes
    assert get_samples(conn, key, 1, t_from=1000.0, t_to=1009.0, max_points=100) == rows(1000, 10)
    assert len(get_samples(conn, key, 1, max_points=1)) == 1
    with pytest.raises(ValueError):
        get_samples(conn, key, 1, max_points=0)


def test_readers_never_write(db: Path, writer: RunWriter) -> None:
    create_run(writer)
    writer.flush()
    conn = open_reader(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM runs")
    assert [r["id"] for r in list_runs(conn)] == ["20261124-154230-3fa2"]


def test_the_writer_waits_out_another_connection_holding_the_write_lock(
        db: Path, writer: RunWriter) -> None:
    key = create_run(writer)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. a command being written, or a DB browser
    writer.samples(key, 1, rows(0, 100))
    time.sleep(0.7)  # the writer's commit is due meanwhile and must wait, not fail
    other.execute("COMMIT")
    other.close()
    writer.flush()
    assert len(get_samples(open_reader(db), key, 1)) == 100


def test_a_forgotten_close_still_commits_at_exit(db: Path) -> None:
    code = textwrap.dedent(f"""
        from rig.store import RunWriter
        w = RunWriter({str(db)!r}, commit_interval_s=60)
        key = w.create_run(run_id="r", name="ps", kind="ps", protocol_path=None,
                           protocol_text=None, plan_json=None, station_json=None,
                           software_version=None, started_at=0.0, clock="real")
        w.samples(key, 1, [(float(k), 0, 0, 0.0, 0.0, 0.0) for k in range(10)])
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert len(get_samples(open_reader(db), 1, 1)) == 10
