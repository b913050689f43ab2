"""`rig monitor`, driven by its Pilot against real stores: a finished run and a live one."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from rig.tui import MonitorApp
from rig.tui.widgets import ChannelTable, ConfirmScreen, EventLog, StatusLine
from tests.support.monitor import (
    ROOT,
    SIZE,
    query,
    rig_cmd,
    table_text,
    wait_until,
    write_protocol,
)


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory) -> Path:
    """A store holding one short completed run (3 cycles, 2 channels), run by
    `rig run --monitor` into a pipe."""
    tmp = tmp_path_factory.mktemp("finished")
    db = tmp / "store.db"
    out = subprocess.run(rig_cmd("run", str(write_protocol(tmp, 3)), "--db", str(db),
                                 "--monitor"),
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    # not a terminal: --monitor is ignored with a note, and the run runs as without it
    assert "--monitor ignored: not a terminal" in out.stderr
    assert "completed" in out.stdout
    return db


def commands(db: Path) -> list[tuple]:
    return query(db, "SELECT channel, command FROM commands ORDER BY id")


async def test_finished_run_shows_every_channel_ended_and_its_events(finished_db):
    app = MonitorApp(finished_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2)
        rows = table_text(app)
        assert [r[:2] for r in rows] == [["0", "G1"], ["1", "C1"]]
        for r in rows:
            assert "ended" in r[3] and "completed" in r[3]
            assert r[4] == "strip"  # the last step's label
            assert r[5] == "3 of 3" and r[11] == "0:00"
            assert r[9] == "n/a"  # Na||Na: CE means nothing (issue 10); r[7]: output off
            assert r[7] == "off"
            # the capacity of the last half-cycle: 0.5 mAh/cm^2 x 1.13 cm^2, stripped
            assert float(r[8]) == pytest.approx(0.565, abs=0.002)
        assert "has ended: completed" in app.query_one(StatusLine).message
        log = app.query_one(EventLog)
        kinds = [str(log.get_row_at(i)[3]) for i in range(log.row_count)]
        assert "run_start" in kinds
        first_id = query(finished_db, "SELECT max(id) FROM events")[0][0]
        assert app.last_snapshot is not None
        assert str(log.get_row_at(0)[3]) == query(
            finished_db, "SELECT kind FROM events WHERE id = ?", first_id)[0][0]  # newest first
        assert app.last_snapshot.trace and app.last_snapshot.etas  # plots have data
        await pilot.press("q")
    assert query(finished_db, "SELECT count(*) FROM commands") == [(0,)]


async def test_pause_asks_first_and_n_sends_nothing_y_sends_for_selected_channel(finished_db):
    app = MonitorApp(finished_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2)
        before = commands(finished_db)
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen)
        run_id = app.view.run_id
        assert app.screen.question == f"pause channel 0 of run {run_id}?"
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.pause(0.2)
        assert commands(finished_db) == before

        await pilot.press("down")  # select channel 1
        await pilot.press("p", "y")
        await wait_until(pilot, lambda: len(commands(finished_db)) == len(before) + 1)
        assert commands(finished_db)[-1] == (1, "pause")

        await pilot.press("A")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == f"abort the whole run {run_id}?"  # not "... of run"
        await pilot.press("y")
        await wait_until(pilot, lambda: len(commands(finished_db)) == len(before) + 2)
        assert commands(finished_db)[-1] == (None, "abort")


@pytest.fixture
def live_run(tmp_path):
    """A long run (5000 cycles, virtual clock) writing in another process; killed if left over."""
    db, log = tmp_path / "store.db", tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            rig_cmd("run", str(write_protocol(tmp_path, 5000, "1 mAh/cm^2")), "--db", str(db)),
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 20
        while not (db.exists() and (query(db, "SELECT count(*) FROM samples") or [(0,)])[0][0]
                   > 50):
            assert time.monotonic() < end and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        yield proc, db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def rig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(rig_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=30,
                          check=False)


async def test_pause_from_the_monitor_pauses_a_live_run_in_another_process(live_run):
    proc, db = live_run
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2)
        assert table_text(app)[0][3] == "running"
        await pilot.press("p", "y")
        await wait_until(pilot, lambda: table_text(app)[0][3] == "paused", timeout=60)
        assert table_text(app)[1][3] == "running"  # the other channel carries on
        status = app.query_one(StatusLine)
        assert "running" in status.message
        run_id = query(db, "SELECT id FROM runs")[0][0]
        out = await asyncio.to_thread(rig, "abort", run_id, "--db", str(db))
        assert out.returncode == 0, out.stderr
        try:
            await wait_until(pilot, lambda: "has ended" in status.message, timeout=60)
        except AssertionError:
            raise AssertionError(status.message + " | " + str(table_text(app)))
        await wait_until(pilot, lambda: all("aborted" in r[3] for r in table_text(app)))
    assert proc.wait(timeout=30) == 1  # ended early: aborted
    assert query(db, "SELECT DISTINCT end_reason FROM channels") == [("aborted",)]


def test_rig_monitor_refuses_a_missing_store_or_run_with_one_message(tmp_path, finished_db):
    out = rig("monitor", "--db", str(tmp_path / "none.db"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = rig("monitor", str(tmp_path / "none.db"))  # the store may also be given bare
    assert out.returncode == 2 and "none.db does not exist" in out.stderr
    out = rig("monitor", "--db", str(finished_db), "--run", "19990101")
    assert out.returncode == 2 and "no run matches" in out.stderr and "Traceback" not in out.stderr


async def test_a_busy_store_is_reported_and_the_monitor_keeps_polling(finished_db, monkeypatch):
    app = MonitorApp(finished_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2)
        real_poll = app.view.poll

        def locked(selected, log_channel=None, span_s=None):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(app.view, "poll", locked)
        status = app.query_one(StatusLine)
        await wait_until(pilot, lambda: status.message == "store busy, retrying")
        assert status.has_class("busy") and app.query_one(ChannelTable).row_count == 2
        monkeypatch.setattr(app.view, "poll", real_poll)
        await wait_until(pilot, lambda: "has ended" in status.message)
        assert not status.has_class("busy")


async def test_alarms_are_highlighted_and_listed_first(finished_db):
    app = MonitorApp(finished_db)
    async with app.run_test(size=SIZE) as pilot:
        log = app.query_one(EventLog)
        await wait_until(pilot, lambda: log.row_count > 0)
        log.events = ({"id": 10**6, "t": 4e9, "channel": 1, "level": "alarm",
                       "kind": "short_circuit", "message": "E collapsed"},)
        await pilot.pause()
        kind = log.get_row_at(0)[3]
        assert str(kind) == "short_circuit" and "red" in str(kind.style)
        assert "red" not in str(log.get_row_at(1)[3].style)
