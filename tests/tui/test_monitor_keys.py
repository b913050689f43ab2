"""The monitor's station panel, held banner, and keys s (switch run), f (filter events) and
k (acknowledge alarms); steps read incrementally; `rig run --monitor`'s engine thread."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rig import stop_signals
from rig.store import RunWriter, open_reader
from rig.tui import MonitorApp, data
from rig.tui.data import AlarmBook, ChannelSteps, EtaSeries, StoreView, trend
from rig.tui.demo import DEMO_PROTOCOL, DEMO_RUN_ID, screen_text, simulate_run
from rig.tui.live import Relay, run_with_monitor
from rig.tui.widgets import (
    AlarmBadge,
    ChannelTable,
    EventLog,
    HeldBanner,
    RunPicker,
    StationPanel,
    sparkline,
)
from tests.support.monitor import (
    HOLD_MESSAGE,
    SIZE,
    T0,
    held_store,
    log_rows,
    new_run,
    table_text,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def held(tmp_path):
    """A store whose running run is held by the atmosphere interlock; the writer stays open."""
    db = tmp_path / "held.db"
    writer, key = held_store(db)
    yield db, writer, key
    writer.close()


def loaded(app: MonitorApp, rows: int = 2):
    return lambda: app.query_one(ChannelTable).row_count == rows and app.last_snapshot


async def ready(pilot, app: MonitorApp) -> None:
    """Until the first poll is on screen (and laid out)."""
    await wait_until(pilot, loaded(app))
    await pilot.pause(0.1)


async def test_a_held_station_shows_a_banner_held_channels_and_the_interlock(held):
    db, writer, key = held
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        banner = app.query_one(HeldBanner)
        assert banner.display and banner.region.height >= 3  # a band, not a line
        text = screen_text(app)
        assert f"STATION HELD: {HOLD_MESSAGE}" in text.replace("\n", " ") or \
            "STATION HELD: atmosphere interlock: O2 5.00 ppm above 1 ppm" in text
        assert "since run time 0:10:00" in text
        assert [r[3] for r in table_text(app)] == ["held", "held"]
        assert "red" in str(app.query_one(ChannelTable).get_row_at(0)[3].style)
        panel = app.query_one(StationPanel)
        names = [(r.group, r.name) for r in panel.readings]
        assert names == [("glovebox", "O2"), ("glovebox", "H2O"), ("ch0 G0", "p"),
                         ("ch0 G0", "T")]
        o2 = panel.readings[0]
        assert o2.value == pytest.approx(5.0) and o2.limit == 1.0 and o2.level == "over"
        p = panel.readings[2]
        assert p.value == pytest.approx(1019.25) and p.limit == 2000.0 and p.level == "ok"
        assert "HELD since 0:10:00" in text and "5.00 ppm" in text and "≤ 2000" in text

        # the release, written while the monitor watches: the banner goes
        writer.event(key, None, T0 + 1300, "info", "interlock_release",
                     "atmosphere clear for 600 s: channels resume where they were")
        for n in (0, 1):
            writer.channel_status(key, n, "running")
        writer.flush()
        await wait_until(pilot, lambda: not banner.display)
        await wait_until(pilot, lambda: [r[3] for r in table_text(app)] == ["running"] * 2)
        assert "interlock  clear" in screen_text(app)


async def test_k_acknowledges_the_alarms_so_they_stop_flashing(held):
    db, writer, key = held
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        badge, banner = app.query_one(AlarmBadge), app.query_one(HeldBanner)
        assert badge.count == 2 and badge.display  # the soft short and the hold
        assert "2 new alarms" in screen_text(app)
        await wait_until(pilot, lambda: banner.has_class("blink"))  # flashes...
        await wait_until(pilot, lambda: badge.has_class("blink"))
        alarm_rows = [r for r in log_rows(app) if r[2] == "alarm"]
        assert len(alarm_rows) == 2
        await pilot.press("k")
        assert badge.count == 0 and not badge.display
        await pilot.pause(1.2)  # two blink periods: neither flashes now
        assert not banner.has_class("blink") and not badge.has_class("blink")
        assert banner.display  # the station is still held: the banner stays, steady
        log = app.query_one(EventLog)
        styles = [str(log.get_row_at(i)[2].style) for i in range(log.row_count)
                  if str(log.get_row_at(i)[2]) == "alarm"]
        assert styles == ["red", "red"]  # still red, no longer bold

        # a new alarm after the acknowledgement is new again
        writer.event(key, 0, T0 + 700, "alarm", "overpressure", "channel 0: pressure high")
        writer.flush()
        await wait_until(pilot, lambda: badge.count == 1)
        assert not banner.has_class("blink") or badge.count == 1
    assert not list(Path(db).parent.glob("*.ack*"))  # nothing written for an acknowledgement


async def test_f_filters_the_event_log_to_the_selected_channel_and_back(held):
    db, writer, key = held
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert {r[1] for r in log_rows(app)} == {"run", "0", "1"}
        await pilot.press("down")  # channel 1
        await pilot.press("f")
        await wait_until(pilot, lambda: {r[1] for r in log_rows(app)} == {"run", "1"})
        assert "events: channel 1" in app.query_one(EventLog).border_title
        await pilot.press("up")  # the filter follows the selection
        await wait_until(pilot, lambda: {r[1] for r in log_rows(app)} == {"run", "0"})
        writer.event(key, 1, T0 + 900, "warning", "noise", "channel 1 noisy")
        writer.event(key, 0, T0 + 901, "warning", "noise", "channel 0 noisy")
        writer.flush()
        await wait_until(pilot, lambda: "channel 0 noisy" in [r[4] for r in log_rows(app)])
        assert "channel 1 noisy" not in [r[4] for r in log_rows(app)]
        await pilot.press("f")
        await wait_until(pilot, lambda: {r[1] for r in log_rows(app)} == {"run", "0", "1"})
        assert "channel 1 noisy" in [r[4] for r in log_rows(app)]


async def test_s_lists_the_runs_and_switches_to_the_one_chosen(held):
    db, _, _ = held
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.sub_title == "20260101-000000-he1d"
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunPicker))
        # the picker lists the runs once it has read them: wait for its text, not a moment
        await wait_until(pilot, lambda: "● 20260101-000000-he1d" in screen_text(app))
        text = screen_text(app)
        assert "● 20260101-000000-he1d" in text and "20251231-120000-0ld1" in text
        await pilot.press("escape")  # stay
        assert not isinstance(app.screen, RunPicker) and app.view.run_id.endswith("he1d")
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunPicker))
        await pilot.press("down", "enter")  # newest first: the old run is second
        await wait_until(pilot, lambda: app.sub_title == "20251231-120000-0ld1")
        await wait_until(pilot, lambda: app.last_snapshot.run_id.endswith("0ld1"))
        assert not app.query_one(HeldBanner).display  # that run was never held
        assert [r[3] for r in table_text(app)] == ["ended (completed)"] * 2
        assert "has ended: completed" in app.status.message
        assert app.query_one(AlarmBadge).count == 0


# ---- the data layer: incremental steps, trends -----------------------------------------------
def step(n: int, cycle: int, half: str, charge_C: float, eta_V: float) -> dict:
    return {"step": n, "cycle": cycle, "label": half, "kind": "constant_current",
            "half_cycle": half, "t_start": T0 + n, "t_end": T0 + n + 1, "end_reason": "charge",
            "charge_C": charge_C, "e_mean_abs_V": eta_V, "e_end_V": eta_V, "n_samples": 1}


def test_steps_are_read_incrementally_from_the_last_one_seen(tmp_path, monkeypatch):
    db = tmp_path / "steps.db"
    calls = []
    for name in ("steps_from", "last_steps", "half_cycle_etas"):
        real = getattr(data, name)

        def spy(conn, run_key, channel, *args, _real=real, _name=name):
            rows = _real(conn, run_key, channel, *args)
            calls.append((_name, channel, *args, len(rows)))
            return rows

        monkeypatch.setattr(data, name, spy)
    with RunWriter(db, commit_interval_s=0.05) as writer:
        key = new_run(writer, "20260101-000000-st3p", channels=1)
        for c in range(1, 31):  # 30 cycles
            writer.step_end(key, 0, step(2 * c - 1, c, "plate", -2.0, 0.020))
            writer.step_end(key, 0, step(2 * c, c, "strip", 1.98, 0.022))
        writer.flush()
        view = StoreView(db)
        row = view.poll(0).rows[0]
        assert row.last_ce == pytest.approx(0.99) and row.eta_mV == pytest.approx(21.0)
        assert ("last_steps", 0, data.STEPS_TAIL, data.STEPS_TAIL) in calls  # the tail only
        assert ("half_cycle_etas", 0, 60) in calls  # the η plot of the selected channel: once
        calls.clear()
        writer.step_end(key, 0, step(61, 31, "plate", -2.0, 0.030))
        writer.step_end(key, 0, step(62, 31, "strip", 1.90, 0.040))
        writer.flush()
        snap = view.poll(0)
        assert calls == [("steps_from", 0, 60, 3)]  # the last one seen, and the 2 new ones
        assert snap.rows[0].last_ce == pytest.approx(0.95)
        assert snap.rows[0].eta_mV == pytest.approx(35.0)
        assert snap.etas[-1] == (31, pytest.approx(30.0), pytest.approx(40.0))
        assert len(snap.etas) == 31
        view.close()


def test_channel_steps_keep_only_their_last_cycles_and_survive_a_replaced_step():
    tracker = ChannelSteps()
    tracker.add([step(k, (k + 1) // 2, "plate" if k % 2 else "strip", -2.0 if k % 2 else 1.9,
                      0.02) for k in range(1, 201)])
    assert tracker.last_step == 200 and tracker.last_ce == pytest.approx(0.95)
    assert len(tracker._recent) <= 4
    tracker.add([step(200, 100, "strip", 2.0, 0.02)])  # the same step, written again
    assert tracker.last_ce == pytest.approx(1.0)


def test_eta_series_is_decimated_for_the_plot_with_the_last_cycle_kept():
    series = EtaSeries(0)
    series.add(step(2 * c + k, c, half, 1.0, 0.01 * c)
               for c in range(1, 5001) for k, half in enumerate(("plate", "strip")))
    points = series.points(500)
    assert len(points) == 500 and points[0][0] == 1 and points[-1][0] == 5000


def test_trends_bucket_the_window_and_keep_the_largest_value_of_each_bucket():
    points = [(float(t), 1.0) for t in range(100)]
    points[50] = (50.0, 9.0)
    values = trend(points, n=10)
    assert len(values) == 10 and max(values) == 9.0 and values.count(9.0) == 1
    assert trend([], n=4) == ()
    assert trend([(5.0, 2.0)], n=3) == (None, None, 2.0)
    assert sparkline([0.0, 1.0, None, math.nan], 0.0, 1.0) == "▁█  "


def test_alarm_book_acknowledges_what_was_seen_only():
    book = AlarmBook()
    book.add([{"id": 1, "level": "alarm"}, {"id": 2, "level": "info"},
              {"id": 3, "level": "error"}])
    assert len(book.unacked) == 2
    assert book.acknowledge() == 2 and book.ack_id == 3 and book.is_acked(3)
    book.add([{"id": 4, "level": "alarm"}])
    assert [e["id"] for e in book.unacked] == [4] and not book.is_acked(4)


# ---- rig run --monitor -------------------------------------------------------------------------
class Console:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run_started(self, run_id, plan):
        self.calls.append(("run_started", run_id))

    def channel_started(self, channel, cell):
        self.calls.append(("channel_started", channel))

    def cycle_done(self, channel, cycle, stats):
        self.calls.append(("cycle_done", channel, cycle))

    def sample(self, channel, t, e, i):
        pass

    def channel_ended(self, channel, reason):
        self.calls.append(("channel_ended", channel, reason))


def test_run_with_monitor_runs_the_engine_while_the_monitor_holds_the_terminal(tmp_path):
    """The monitor (here a stand-in that blocks the main thread until the engine has gone
    on) never holds the engine up; when it closes, the console takes over the progress."""
    engine_went_on = threading.Event()
    monitor_closed = threading.Event()
    console = Console()

    def engine(progress: Relay) -> str:
        progress.run_started("20260101-000000-l1ve", plan=None)
        progress.channel_started(0, "cell")
        progress.cycle_done(0, 1, {})
        engine_went_on.set()  # while the monitor still has the main thread
        assert monitor_closed.wait(5)
        while not console.calls:  # until the console has taken over
            time.sleep(0.01)
        progress.cycle_done(0, 2, {})
        progress.channel_ended(0, "completed")
        return "result"

    shown = []

    def monitor(db: Path, run_id: str) -> None:
        shown.append((db, run_id))
        assert engine_went_on.wait(5)
        monitor_closed.set()

    assert run_with_monitor(tmp_path / "x.db", engine, console, monitor=monitor) == "result"
    assert shown == [(tmp_path / "x.db", "20260101-000000-l1ve")]
    assert console.calls[:2] == [("run_started", "20260101-000000-l1ve"),
                                 ("channel_started", 0)]
    assert ("cycle_done", 0, 1) not in console.calls  # that one went to the monitor's time
    assert console.calls[2:] == [("cycle_done", 0, 2), ("channel_ended", 0, "completed")]


def test_run_with_monitor_raises_what_the_engine_raised_without_showing_a_monitor(tmp_path):
    def engine(progress: Relay) -> None:
        raise ValueError("station on fire")

    with pytest.raises(ValueError, match="station on fire"):
        run_with_monitor(tmp_path / "x.db", engine, Console(),
                         monitor=lambda db, run: pytest.fail("no run: no monitor"))


def test_a_failing_monitor_leaves_the_run_going(held, capsys):
    db, _, _ = held
    run_id = "20260101-000000-he1d"

    def broken(db: Path, run_id: str) -> None:
        raise RuntimeError("terminal too small")

    done = threading.Event()

    def engine_until_done(progress: Relay) -> str:
        progress.run_started(run_id, plan=None)
        assert done.wait(5)
        return "completed"

    threading.Timer(0.3, done.set).start()
    assert run_with_monitor(db, engine_until_done, Console(), broken) == "completed"
    assert "the monitor failed (RuntimeError: terminal too small); the run goes on" in \
        capsys.readouterr().err


LONG_RUN = DEMO_PROTOCOL.format(cycles=5000)  # never ends on its own within a test


def _interrupted(db: Path) -> tuple[str, str, list[str]]:
    with open_reader(db) as conn:
        status, reason = conn.execute("SELECT status, end_reason FROM runs").fetchone()
        events = [m for m, in conn.execute(
            "SELECT message FROM events WHERE kind = 'interrupted'")]
        assert conn.execute("SELECT count(*) FROM commands").fetchone()[0] == 0  # no abort
    return status, reason, events


def test_ctrl_c_in_the_monitor_interrupts_the_real_engine_as_in_a_plain_run(tmp_path, capsys):
    """Ctrl-C, however it reaches the monitor, is SIGINT: the engine (in its thread) switches
    every output off and ends the run 'interrupted' (resumable), not 'aborted'."""
    db = tmp_path / "c.db"

    def ctrl_c(db: Path, run_id: str) -> None:
        raise KeyboardInterrupt

    def engine(progress: Relay) -> str:
        return simulate_run(db, LONG_RUN, progress=progress)

    assert run_with_monitor(db, engine, Console(), ctrl_c) == DEMO_RUN_ID
    status, reason, events = _interrupted(db)
    assert status == "interrupted" and "SIGINT" in reason
    assert len(events) == 1 and "every output switched off" in events[0]
    assert "SIGINT received" in capsys.readouterr().err


def test_a_signal_after_the_monitor_closed_interrupts_the_real_engine(tmp_path, capsys):
    """The monitor closed (q), the run went on in this terminal: SIGTERM (or Ctrl-C) there
    ends it as it ends a plain `rig run`."""
    db = tmp_path / "t.db"
    console = Console()

    def closed(db: Path, run_id: str) -> None:
        return None  # q at once

    def terminate_once_the_console_has_it() -> None:
        wait_for_calls(console)
        if stop_signals.active():  # else SIGTERM would end pytest: the test fails instead
            os.kill(os.getpid(), signal.SIGTERM)

    def engine(progress: Relay) -> str:
        threading.Thread(target=terminate_once_the_console_has_it).start()
        return simulate_run(db, LONG_RUN, progress=progress)

    assert run_with_monitor(db, engine, console, closed) == DEMO_RUN_ID
    assert "goes on here (Ctrl-C interrupts it" in capsys.readouterr().err
    status, reason, events = _interrupted(db)
    assert status == "interrupted" and "SIGTERM" in reason and "SIGTERM" in events[0]
    assert ("run_started", DEMO_RUN_ID) in console.calls  # the console had taken over


def wait_for_calls(console: Console, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not console.calls and time.monotonic() < end:
        time.sleep(0.01)


def test_the_real_engine_and_monitor_share_only_the_store(tmp_path):
    """A real simulated run in the engine thread, the real monitor (headless) in this one."""
    from rig.tui.demo import DEMO_PROTOCOL, simulate_run

    db = tmp_path / "both.db"
    seen: dict[str, object] = {}

    def monitor(db: Path, run_id: str) -> None:
        async def watch() -> None:
            app = MonitorApp(db, run_id, here=True)
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, loaded(app), timeout=20)
                seen["title"] = app.sub_title
                await wait_until(pilot, lambda: app.last_snapshot.ended, timeout=30)
                seen["rows"] = table_text(app)

        asyncio.run(watch())

    def engine(progress: Relay) -> str:
        return simulate_run(db, DEMO_PROTOCOL.format(cycles=2), run_id="20260101-000000-b0th",
                            progress=progress)

    assert run_with_monitor(db, engine, Console(), monitor) == "20260101-000000-b0th"
    assert seen["title"] == "20260101-000000-b0th (running in this terminal)"
    assert [r[3] for r in seen["rows"]] == ["ended (completed)"] * 2


async def test_z_zooms_the_e_plot_from_the_last_12_h_to_the_whole_run_to_2_h(tmp_path,
                                                                             monkeypatch):
    db = tmp_path / "long.db"
    writer = RunWriter(db, commit_interval_s=0.05)
    key = new_run(writer, "20260101-000000-l0ng", channels=1)
    hours = 30  # one sample a minute for 30 h: longer than either span
    writer.samples(key, 0, [(T0 + 60 * k, 1, 1, -0.02, -1.13e-3, 0.0)
                            for k in range(2, hours * 60 + 1)])
    writer.flush()
    writer.close()
    reads: list[tuple] = []
    real = data.get_samples

    def spy(conn, run_key, channel, **kw):
        reads.append((kw.get("t_from"), kw.get("max_points")))
        return real(conn, run_key, channel, **kw)

    monkeypatch.setattr(data, "get_samples", spy)
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, loaded(app, rows=1))
        plot = app.e_plot

        def shown(span: str, first_h: float) -> bool:
            xs = [p[0] for p in plot.points]
            return (plot.span == span and f"E vs t ({span})" in screen_text(app) and bool(xs)
                    and abs(min(xs) - first_h) < 0.02 and abs(max(xs) - hours) < 0.1)

        await wait_until(pilot, lambda: shown("last 12 h", hours - 12))  # the default
        await wait_until(pilot, lambda: "z zoom  q quit" in screen_text(app))  # the footer
        assert reads[-1] == (T0 + (hours - 12) * 3600, data.PLOT_POINTS)  # only that span
        await pilot.press("z")
        await wait_until(pilot, lambda: shown("whole run", 0.0))
        assert reads[-1] == (None, data.PLOT_POINTS) and len(plot.points) <= data.PLOT_POINTS
        await pilot.press("z")
        await wait_until(pilot, lambda: shown("last 2 h", hours - 2))
        assert reads[-1] == (T0 + (hours - 2) * 3600, data.PLOT_POINTS)
        assert len(plot.points) <= data.PLOT_POINTS
        await pilot.press("z")
        await wait_until(pilot, lambda: shown("last 12 h", hours - 12))


def test_a_run_shorter_than_the_span_is_plotted_whole(tmp_path):
    db = tmp_path / "short.db"
    writer = RunWriter(db, commit_interval_s=0.05)
    new_run(writer, "20260101-000000-sh0t", channels=1)  # one minute of samples
    writer.close()
    view = StoreView(db)
    try:
        for span in data.SPANS_S:
            snap = view.poll(0, span_s=span)
            assert snap.trace_span == "whole run" and len(snap.trace) == 6
    finally:
        view.close()


def test_time_left_stands_still_while_a_channel_is_paused_or_held(tmp_path):
    db = tmp_path / "paused.db"
    writer = RunWriter(db, commit_interval_s=0.05)
    key = new_run(writer, "20260101-000000-p4us", channels=2)  # samples up to T0 + 60
    writer.event(key, 0, T0 + 20, "info", "paused", "channel 0 paused: holding at open circuit")
    writer.event(key, 0, T0 + 25, "info", "held", "channel 0 held: holding at open circuit")
    writer.event(key, 0, T0 + 40, "info", "resumed", "channel 0 resumed")
    writer.event(key, 0, T0 + 50, "info", "paused", "channel 0 paused: holding at open circuit")
    writer.flush()
    view = StoreView(db)
    view.durations = {0: 1000.0, 1: 1000.0}
    try:
        rows = view.poll(0).rows
        # channel 0 ran 20 + 10 s of its 60 (paused 20..40, and since 50); channel 1 all 60
        assert [r.time_left_s for r in rows] == [pytest.approx(970.0), pytest.approx(940.0)]
        writer.samples(key, 0, [(T0 + 100, 1, 1, 0.0, 0.0, 0.0)])  # still paused: no change
        writer.flush()
        assert view.poll(0).rows[0].time_left_s == pytest.approx(970.0)
        writer.event(key, 0, T0 + 100, "info", "resumed", "channel 0 resumed")
        writer.samples(key, 0, [(T0 + 130, 1, 1, 0.0, 0.0, 0.0)])  # 30 s running again
        writer.flush()
        assert view.poll(0).rows[0].time_left_s == pytest.approx(940.0)
    finally:
        view.close()
        writer.close()
