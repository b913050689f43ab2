"""The interlock state machines, edge by edge (bluesky's suspenders taught us which edges)."""

from __future__ import annotations

import math

from rig.engine.interlocks import (
    AtmosphereInterlock,
    AtmosphereLimits,
    PressureLimits,
    PressureWatch,
)

LIM = AtmosphereLimits(o2_max_ppm=1.0, h2o_max_ppm=1.0, hysteresis_ppm=0.2, hold_off_s=30,
                       clear_for_s=600, sensor_timeout_s=60)


def feed(lock, readings):
    """readings: (t, o2, h2o) -> the transitions, as (t, action)."""
    out = []
    for t, o2, h2o in readings:
        tr = lock.reading(t, o2, h2o)
        if tr:
            out.append((t, tr.action))
    return out


def test_a_short_spike_under_the_hold_off_does_not_hold():
    lock = AtmosphereInterlock(LIM, 0)
    assert feed(lock, [(0, 0.2, 0.2), (10, 3.0, 0.2), (20, 3.0, 0.2), (30, 0.3, 0.2)]) == []
    assert not lock.held


def test_above_threshold_past_the_hold_off_holds_then_releases_after_a_clear_spell():
    lock = AtmosphereInterlock(LIM, 0)
    readings = [(t, 2.0, 0.2) for t in range(0, 50, 10)] + \
               [(t, 0.3, 0.2) for t in range(50, 700, 10)]
    assert feed(lock, readings) == [(30, "hold"), (650, "release")]


def test_already_above_threshold_at_start_holds_after_the_hold_off():
    lock = AtmosphereInterlock(LIM, 0)
    assert feed(lock, [(0, 0.2, 5.0), (30, 0.2, 5.0)]) == [(30, "hold")]


def test_crossing_again_while_held_restarts_the_clear_spell():
    lock = AtmosphereInterlock(LIM, 0)
    feed(lock, [(0, 2.0, 0.2), (30, 2.0, 0.2)])
    seq = [(t, 0.3, 0.2) for t in range(40, 400, 10)] + [(400, 1.5, 0.2)] + \
          [(t, 0.3, 0.2) for t in range(410, 1100, 10)]
    assert feed(lock, seq) == [(1010, "release")]


def test_inside_the_hysteresis_band_is_not_clear():
    lock = AtmosphereInterlock(LIM, 0)
    feed(lock, [(0, 2.0, 0.2), (30, 2.0, 0.2)])
    assert feed(lock, [(t, 0.9, 0.2) for t in range(40, 2000, 10)]) == []  # 0.9 > 1.0 - 0.2
    assert lock.held


def test_a_silent_sensor_is_unsafe_after_its_timeout():
    lock = AtmosphereInterlock(LIM, 0)
    feed(lock, [(0, 0.2, 0.2)])
    assert lock.silence(30) is None
    tr = lock.silence(60)
    assert tr.action == "hold" and "no valid atmosphere reading" in tr.message
    nan = feed(lock, [(70, math.nan, 0.2)])
    assert nan == [] and lock.held


def test_without_resume_when_clear_the_alarm_clears_but_channels_stay_held():
    lim = AtmosphereLimits(hold_off_s=0, clear_for_s=100, resume_when_clear=False)
    lock = AtmosphereInterlock(lim, 0)
    out = feed(lock, [(0, 5.0, 0.1), (10, 0.1, 0.1), (110, 0.1, 0.1)])
    assert out == [(0, "hold"), (110, "alarm_cleared_manual")] and lock.held


def test_pressure_over_the_limit_ends_and_a_fast_rise_warns_first():
    watch = PressureWatch(PressureLimits(limit_Pa=150_000, rate_warning_Pa_per_s=1.0,
                                         rate_window_s=600))
    actions = []
    p = 101_325.0
    for t in range(0, 40_000, 60):
        p += 2.0 * 60  # 2 Pa/s: above the warning rate
        tr = watch.reading(t, p)
        if tr:
            actions.append(tr.action)
            if tr.action == "overpressure":
                break
    assert actions[0] == "rate_warning" and actions[-1] == "overpressure"
    assert actions.count("rate_warning") >= 2  # repeated, but at most once per window


def test_an_interlock_clearing_during_a_pause_leaves_the_channel_paused(tmp_path):
    """Hold and pause are separate: the atmosphere clearing releases the interlock's hold,
    but a channel a person paused stays paused until resumed."""
    from protocols.plan import CellSpec, ChannelPlan, Safety
    from rig.clock import VirtualClock
    from rig.engine.channel import ChannelRunner
    from rig.engine.interlocks import Transition
    from rig.engine.run import RunContext
    from rig.engine.sensors import SensorHub
    from rig.store import RunWriter, get_events, open_reader

    writer = RunWriter(tmp_path / "s.db")
    key = writer.create_run(run_id="r1", name="t", kind="t", protocol_path=None,
                            protocol_text=None, plan_json=None, station_json=None,
                            software_version=None, started_at=0.0, clock="virtual")
    ctx = RunContext(clock=VirtualClock(start=0.0), writer=writer, run_key=key, run_id="r1",
                     safety=Safety(-1, 1, 0.01))
    cells = [ChannelPlan(CellSpec(n, f"c{n}", "symmetric", 1.13, "glyme"), ()) for n in (0, 1)]
    paused, other = (ChannelRunner(ctx, cp, None, None) for cp in cells)
    hub = SensorHub(ctx, None, [paused, other])

    paused.request("pause")
    hub._apply(Transition("hold", "O2 high"), 100.0)
    assert paused.holding and other.holding and other.hold_requested
    hub._apply(Transition("release", "clear"), 900.0)
    assert not other.holding             # only held: it resumes
    assert paused.holding                # still paused by the person
    paused.request("resume")
    assert not paused.holding
    writer.close()
    kinds = [e["kind"] for e in get_events(open_reader(tmp_path / "s.db"), key)]
    assert kinds == ["interlock_hold", "interlock_release"]
