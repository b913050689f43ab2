"""The instrument stays safe without its host: an EmStat4 step longer than the station's
``host_watchdog`` runs as chunks that each end with the cell off, so a host that stops reading
leaves the cell off within the bound; and a step that runs across chunk boundaries measures
what one long script would. All on the virtual clock: time moves only when the test says."""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path

import pytest

from drivers.emstat import EmStat4
from protocols.plan import (
    CellSpec,
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    Eis,
    Plan,
    RecordRule,
    Safety,
)
from rig.clock import VirtualClock
from rig.engine.link import Link
from rig.engine.run import execute
from rig.sim.cell import NaCell, electrolyte_for
from rig.sim.emstat import FaultProfile, SimulatedEmStat4
from rig.sim.serve import OutputWatch
from rig.sim.station import simulated_station
from rig.station import ChannelHardware, Station, StationError, parse_station
from rig.store import RunWriter, get_eis, get_events, get_samples, get_steps, open_reader
from tests.support.station_runs import run

GLYME = "1 M NaPF6 in diglyme"
AREA = 1.13
STATION = ('[[instruments]]\nname = "a"\ndriver = "emstat4"\nport = "/dev/ttyACM0"\n'
           '[[channels]]\nchannel = 0\ninstrument = "a"\n')


def glyme_cell() -> NaCell:
    return NaCell("symmetric", AREA, electrolyte_for(GLYME), seed=7)


# ---------------------------------------------------------------- the station field

def test_host_watchdog_defaults_to_a_minute_and_takes_a_time() -> None:
    assert parse_station(STATION, "lab.toml").interlocks.host_watchdog == 60.0
    config = parse_station(STATION + '[interlocks]\nhost_watchdog = "5 s"\n', "lab.toml")
    assert config.interlocks.host_watchdog == 5.0


@pytest.mark.parametrize("value", ['"0.5 s"', '"2 h"'])
def test_a_host_watchdog_outside_its_bounds_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(StationError) as info:
        parse_station(STATION + f"[interlocks]\nhost_watchdog = {value}\n", "lab.toml")
    assert any("interlocks.host_watchdog" in p and "1 s .. 60 min" in p
               for p in info.value.problems)


def test_the_built_in_station_arms_no_watchdog_but_its_served_station_file_does() -> None:
    """In-process simulators die with the engine (nothing to bound); the same instruments served
    on their own (`rig sim serve` writes this station file) get the default bound."""
    from rig.sim.serve import SimulatedInstruments, builtin_station_data
    from rig.station import open_station

    plan = Plan("t", "t", Safety(-1.0, 1.0, 0.01),
                (ChannelPlan(CellSpec(0, "c0", "symmetric", AREA, GLYME), ()),))
    station = simulated_station(plan, VirtualClock())
    try:
        assert station.channels[0].driver.host_watchdog_s is None
    finally:
        station.close()
    clock = VirtualClock()
    sims = SimulatedInstruments(builtin_station_data(plan), plan, clock)
    try:
        served = open_station(sims.config, clock)
        try:
            assert served.channels[0].driver.host_watchdog_s == 60.0
        finally:
            served.close()
    finally:
        sims.close()


# ---------------------------------------------------------------- a host that stops reading

def test_an_emstat_whose_host_stops_reading_has_its_cell_off_within_the_bound() -> None:
    clock = VirtualClock()
    with SimulatedEmStat4(glyme_cell(), clock) as sim:
        es = EmStat4(sim.port, host_watchdog_s=5.0, now=clock.now)
        es.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)   # an hour, in 5-s chunks
        t0 = clock.now()
        clock.advance(5.0)
        samples, ended = es.read_samples(5.0)   # the host reads once, at the first chunk's end
        assert len(samples) == 5 and not ended and es.chunks_started == 1
        assert sim.output_on
        # ... and then never again: the instrument keeps the cell on only to the chunk's end
        on_until = None
        while clock.now() < t0 + 60.0:
            clock.advance(0.25)
            if not sim.output_on and on_until is None:
                on_until = clock.now()
        assert on_until is not None and on_until - (t0 + 5.0) <= 5.0 + 1e-6
        assert not sim.output_on and not sim.running   # no script runs: it stays off


def test_a_long_step_without_a_watchdog_would_keep_the_cell_on() -> None:
    """The reproduction: one script for the whole step (today's behaviour, a watchdog as long
    as the step) keeps the cell on after the host stopped reading."""
    clock = VirtualClock()
    with SimulatedEmStat4(glyme_cell(), clock) as sim:
        es = EmStat4(sim.port, host_watchdog_s=3600.0, now=clock.now)
        es.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
        clock.advance(5.0)
        es.read_samples(5.0)
        clock.advance(600.0)
        assert sim.output_on


def test_sim_serve_prints_each_output_switch_from_the_simulator() -> None:
    clock = VirtualClock()
    with SimulatedEmStat4(glyme_cell(), clock) as sim:
        out = io.StringIO()
        watch = OutputWatch({"es4-ch0": sim}, clock, out)
        es = EmStat4(sim.port, host_watchdog_s=5.0, now=clock.now)
        es.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
        watch.poll()
        clock.advance(5.0)
        watch.poll()
        es.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("rig sim serve: es4-ch0 output on at t=")
    assert lines[1] == f"rig sim serve: es4-ch0 output off at t={clock.now():.3f}"


# ---------------------------------------------------------------- a step across chunks

def run_plan(tmp_path: Path, steps: tuple, watchdog_s: float, name: str,
             fault: FaultProfile | None = None, timeout_s: float = 2.0
             ) -> tuple[dict, list[tuple], list[tuple], EmStat4]:
    """One channel through the whole stack; the EmStat4 driver with this host watchdog."""
    spec = CellSpec(0, "cell", "symmetric", AREA, GLYME)
    plan = Plan("sequence", "watchdog test", Safety(-1.0, 1.0, 0.01),
                (ChannelPlan(spec, steps),))
    clock = VirtualClock()
    sim = SimulatedEmStat4(glyme_cell(), clock, fault=fault).start()
    es = EmStat4(sim.port, host_watchdog_s=watchdog_s, now=clock.now, timeout_s=timeout_s)
    station = Station("test", True, {0: ChannelHardware(es, Link("ch0"), "sim")},
                      closers=[sim.close])
    result, conn = run(plan, tmp_path / f"{name}.db", station, clock=clock, sensor_floor_s=None)
    steps_rows = get_steps(conn, result.run_key, 0)
    samples = get_samples(conn, result.run_key, 0)
    eis = get_eis(conn, result.run_key, 0)
    conn.close()
    assert result.reasons == {0: "completed"}
    return steps_rows[0], samples, eis, es


def plate_strip() -> tuple[ConstantCurrent, ConstantCurrent]:
    q = 3.6 * AREA   # 1 mAh/cm^2
    rec = RecordRule(every_s=10.0)
    return (ConstantCurrent(-1.13e-3, (EndCondition("charge", q),), rec, label="plate",
                            half_cycle="plate"),
            ConstantCurrent(1.13e-3, (EndCondition("charge", q),), rec, label="strip",
                            half_cycle="strip"))


def test_a_step_across_chunk_boundaries_measures_what_one_long_script_would(
        tmp_path: Path) -> None:
    one_step, one_samples, _, one = run_plan(tmp_path, plate_strip(), 3600.0, "one")
    step, samples, _, chunked = run_plan(tmp_path, plate_strip(), 60.0, "chunked")
    assert one.chunks_started == 0 and chunked.chunks_started == 2 * 59   # 60 per hour
    assert step["n_samples"] == one_step["n_samples"] == 360
    assert step["charge_C"] == pytest.approx(one_step["charge_C"], rel=1e-12)
    assert len(samples) == len(one_samples)
    times = [s[0] for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)   # continuous, monotonic
    for a, b in zip(samples, one_samples):
        assert a[0] == pytest.approx(b[0], abs=1e-6)
        assert a[1:4] == b[1:4] and a[4] == b[4]        # step, cycle, E, I: the same cell
        assert a[5] == pytest.approx(b[5], rel=1e-12)   # the charge so far


def test_a_lost_reply_at_a_chunk_boundary_is_resynced_and_the_step_completes(
        tmp_path: Path) -> None:
    faults = FaultProfile(no_reply=0.05, seed=3)
    step, samples, _, es = run_plan(tmp_path, plate_strip()[:1], 60.0, "faults",
                                    fault=faults, timeout_s=0.2)
    assert es.resyncs >= 1 and es.chunks_started == 59
    assert step["n_samples"] == 360
    assert step["charge_C"] == pytest.approx(-3.6 * AREA, rel=1e-9)


def test_an_eis_sweep_longer_than_the_bound_runs_in_chunks_with_every_point(
        tmp_path: Path) -> None:
    sweep = (Eis(1e5, 0.1, points_per_decade=5, amplitude_V=0.01, dc_V=0.0, label="eis"),)
    _, _, one_points, one = run_plan(tmp_path, sweep, 3600.0, "eis-one")
    _, _, points, chunked = run_plan(tmp_path, sweep, 40.0, "eis-chunked")
    assert one.chunks_started == 0 and chunked.chunks_started >= 2
    assert len(points) == len(one_points) == 31
    for a, b in zip(points, one_points):
        assert a[2] == pytest.approx(b[2], rel=1e-5)                     # f
        assert complex(a[3], a[4]) == pytest.approx(complex(b[3], b[4]), rel=1e-5)   # Z


def test_an_eis_point_longer_than_the_bound_is_refused() -> None:
    clock = VirtualClock()
    with SimulatedEmStat4(glyme_cell(), clock) as sim:
        es = EmStat4(sim.port, host_watchdog_s=20.0, now=clock.now)
        with pytest.raises(ValueError, match=r"0\.1 Hz takes 30 s, longer than the host "
                                             r"watchdog 20 s"):
            es.start_eis(1e5, 0.1, 31, 0.01, 0.0)
        assert not sim.output_on and not sim.running


def test_an_interval_longer_than_the_bound_is_refused() -> None:
    clock = VirtualClock()
    with SimulatedEmStat4(glyme_cell(), clock) as sim:
        es = EmStat4(sim.port, host_watchdog_s=5.0, now=clock.now)
        with pytest.raises(ValueError, match="interval 10 s is longer than the host watchdog"):
            es.start_current(1e-3, 10.0, 3600.0, -1.0, 1.0)
        assert math.isinf(es.chunk_end_s) and not sim.output_on


def test_a_run_whose_interval_exceeds_the_bound_ends_bad_plan_with_one_clear_event(
        tmp_path: Path) -> None:
    spec = CellSpec(0, "cell", "symmetric", AREA, GLYME)
    step = ConstantCurrent(1.13e-3, (EndCondition("time", 3600.0),), RecordRule(every_s=10.0),
                           label="plate")
    plan = Plan("sequence", "watchdog test", Safety(-1.0, 1.0, 0.01), (ChannelPlan(spec, (step,)),))
    clock = VirtualClock()
    sim = SimulatedEmStat4(glyme_cell(), clock).start()
    es = EmStat4(sim.port, host_watchdog_s=5.0, now=clock.now)
    station = Station("test", True, {0: ChannelHardware(es, Link("ch0"), "sim")},
                      closers=[sim.close])
    writer = RunWriter(tmp_path / "bad.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="test"))
        assert not sim.output_on
    finally:
        station.close()
        writer.close()
    assert result.reasons == {0: "bad_plan"}
    conn = open_reader(tmp_path / "bad.db")
    events = [e for e in get_events(conn, result.run_key) if e["kind"] == "bad_plan"]
    conn.close()
    assert len(events) == 1
    assert events[0]["message"] == ('step plate: interval 10 s is longer than the host watchdog '
                                    '5 s: a chunk must hold at least one sample (record more '
                                    'often, or lengthen [interlocks] host_watchdog)')


def test_validate_refuses_a_plan_the_station_watchdog_cannot_keep_before_anything_starts(
        tmp_path: Path) -> None:
    """`rig validate --station` (and `rig run`, through the drivers' ranges) say it up front:
    a current step recorded less often than the watchdog, an EIS point longer than it."""
    from drivers.emstat import EMSTAT4_LR_RANGES, within_watchdog
    from rig.station import station_ranges
    from rig.validate import check_ranges

    station = tmp_path / "lab.toml"
    station.write_text(STATION + '[interlocks]\nhost_watchdog = "5 s"\n', encoding="utf-8")
    ranges = station_ranges(station)
    assert ranges[0][1] == within_watchdog(EMSTAT4_LR_RANGES, 5.0)
    spec = CellSpec(0, "c0", "symmetric", AREA, GLYME)
    steps = (ConstantCurrent(1.13e-3, (EndCondition("time", 3600.0),), RecordRule(every_s=10.0),
                             label="plate"),
             Eis(1e5, 0.1, points_per_decade=5, amplitude_V=0.01, label="eis"))
    plan = Plan("sequence", "t", Safety(-1.0, 1.0, 0.01), (ChannelPlan(spec, steps),))
    assert check_ranges(plan, ranges, "p.toml") == [
        "p.toml: cells[0] (c0, channel 0): EIS step \"eis\" sweeps down to 0.1 Hz, a point "
        "longer (3 periods) than EmStat4 a on /dev/ttyACM0 can keep its output on without word "
        "from the rig (the station's host_watchdog); start at 0.6 Hz or above, or lengthen "
        "[interlocks] host_watchdog",
        "p.toml: cells[0] (c0, channel 0): step \"plate\" acquire every 10 s, less often than "
        "EmStat4 a on /dev/ttyACM0 can keep its output on without word from the rig (the "
        "station's host_watchdog, 5 s); record more often, or lengthen [interlocks] "
        "host_watchdog"]
    default = {0: ("EmStat4", within_watchdog(EMSTAT4_LR_RANGES, 60.0))}
    assert check_ranges(plan, default, "p.toml") == []
