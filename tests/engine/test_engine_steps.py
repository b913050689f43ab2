"""Every step type, end condition, goto, nested loop, recording rule and failure criterion,
executed by the engine on simulated cells through the production EmStat4 driver."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from drivers.emstat import EmStat4
from protocols.plan import (
    CellSpec,
    ChannelPlan,
    ConstantCurrent,
    ConstantPotential,
    Eis,
    EndCondition,
    FailureCriteria,
    Loop,
    Plan,
    RecordRule,
    Rest,
    Safety,
)
from rig.clock import VirtualClock
from rig.engine.link import Link
from rig.engine.run import execute
from rig.sim.cell import NaCell, electrolyte_for
from rig.sim.emstat import SimulatedEmStat4
from rig.station import ChannelHardware, Station
from rig.store import (
    RunWriter,
    get_channels,
    get_eis,
    get_events,
    get_samples,
    get_steps,
    open_reader,
)

AREA = 1.13
MA = 1e-3
Q1 = 3.6 * AREA  # 1 mAh/cm^2 on 1.13 cm^2, in C
GLYME, CARBONATE = "1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC"
REC = RecordRule(every_s=10.0)


def cc(current_mA: float, *ends: EndCondition, label: str = "", half=None,
       record: RecordRule = REC) -> ConstantCurrent:
    return ConstantCurrent(current_mA * MA, tuple(ends), record, label=label, half_cycle=half)


def plate_strip(q: float = Q1) -> tuple[ConstantCurrent, ConstantCurrent]:
    return (cc(-1.13, EndCondition("charge", q), label="plate", half="plate"),
            cc(1.13, EndCondition("charge", q), label="strip", half="strip"))


NO_FAILURE = FailureCriteria()
WINDOW_1V = Safety(-1.0, 1.0, 0.01)


def run_steps(tmp_path: Path, steps, *, cell_type="symmetric", electrolyte=GLYME,
              failure=NO_FAILURE, safety=WINDOW_1V, outcome=None, expected_ends=(),
              **overrides):
    """One channel, one simulated cell (with model overrides), the whole stack."""
    spec = CellSpec(0, "cell", cell_type, AREA, electrolyte)
    plan = Plan("sequence", "steps test", safety, (ChannelPlan(spec, tuple(steps)),),
                failure=failure, outcome=outcome, expected_ends=expected_ends)
    clock = VirtualClock()
    cell = NaCell(cell_type, AREA, electrolyte_for(electrolyte), seed=7, **overrides)
    sim = SimulatedEmStat4(cell, clock).start()
    station = Station("test", True, {0: ChannelHardware(EmStat4(sim.port), Link("ch0"), "sim")},
                      closers=[sim.close])
    db = tmp_path / "s.db"
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="test"))
    finally:
        station.close()
        writer.close()
    conn = open_reader(db)
    return result, conn, result.run_key


def labels(conn, key) -> list[str]:
    return [s["label"] for s in get_steps(conn, key, 0)]


def test_rest_ends_when_the_potential_is_stable(tmp_path):
    rest = Rest((EndCondition("time", 10 * 3600), EndCondition("dEdt_below", 1e-3 / 3600)),
                REC, label="settle")
    result, conn, key = run_steps(tmp_path, [rest])
    step = get_steps(conn, key, 0)[0]
    assert step["end_reason"] == "dEdt_below"
    assert step["t_end"] - step["t_start"] < 3600  # long before the 10 h limit
    assert result.status == "completed"


def test_constant_potential_ends_on_current(tmp_path):
    cp = ConstantPotential(0.02, (EndCondition("time", 3600), EndCondition("current_above",
                                                                          0.5e-3)), REC,
                           label="hold")
    _, conn, key = run_steps(tmp_path, [cp])
    step = get_steps(conn, key, 0)[0]
    assert step["end_reason"] == "current_above" and step["kind"] == "constant_potential"
    i = get_samples(conn, key, 0)[0][4]
    assert i > 0.5e-3  # 20 mV across a glyme cell drives ~1 mA


def test_eis_sweep_lands_in_the_eis_table(tmp_path):
    sweep = Eis(f_start_Hz=1e5, f_end_Hz=0.1, points_per_decade=4, amplitude_V=0.01)
    _, conn, key = run_steps(tmp_path, [sweep])
    points = get_eis(conn, key, 0)
    assert len(points) == 25  # 6 decades x 4 + 1
    freqs = [p[2] for p in points]
    assert freqs == sorted(freqs, reverse=True)
    assert all(p[3] > 0 for p in points)  # Z' positive
    assert points[-1][3] > points[0][3]   # low frequency sees R_SEI and Rct too


def test_goto_skips_to_the_labelled_step(tmp_path):
    steps = [cc(-1.13, EndCondition("charge", Q1 / 4, then="finish"), label="plate"),
             cc(1.13, EndCondition("charge", Q1 / 4), label="skipped"),
             Rest((EndCondition("time", 60),), REC, label="finish")]
    _, conn, key = run_steps(tmp_path, steps)
    assert labels(conn, key) == ["plate", "finish"]


def test_goto_backwards_repeats_until_a_potential_end(tmp_path):
    # Na||Cu: plate a little, then strip until the Na runs out -> end the channel by name
    steps = [cc(-1.13, EndCondition("charge", Q1 / 2), label="plate", half="plate"),
             cc(1.13, EndCondition("potential_above", 0.5, then="end:stripped"),
                EndCondition("time", 3600, then="plate"), label="strip", half="strip")]
    result, conn, key = run_steps(tmp_path, steps, cell_type="na_cu",
                                  safety=Safety(-1.0, 3.0, 0.01), expected_ends=("stripped",))
    assert labels(conn, key) == ["plate", "strip"]
    assert result.reasons[0] == "stripped" and result.status == "completed"
    assert result.exit_code == 0  # a named end the plan expects is its planned result


def test_a_time_end_takes_its_then_and_an_unexpected_named_end_is_an_early_end(tmp_path):
    steps = [cc(1.13, EndCondition("charge", 10 * Q1), EndCondition("time", 600,
                                                                    then="end:timed_out"),
                label="long"),
             Rest((EndCondition("time", 60),), REC, label="never")]
    result, conn, key = run_steps(tmp_path, steps)
    (step,) = get_steps(conn, key, 0)
    assert step["end_reason"] == "time"  # the time end came first, not the charge
    assert result.reasons[0] == "timed_out" and result.exit_code == 1


def test_nested_loops_number_cycles_globally(tmp_path):
    inner = Loop(3, plate_strip(Q1 / 10), counts_cycles=True)
    _, conn, key = run_steps(tmp_path, [Loop(2, (inner,))])
    cycles = [s["cycle"] for s in get_steps(conn, key, 0)]
    assert cycles == [c for c in range(1, 7) for _ in (0, 1)]


def test_recording_on_dE_keeps_more_samples_of_a_noisy_cell(tmp_path):
    plain = RecordRule(every_s=60.0)
    on_change = RecordRule(every_s=60.0, every_dE_V=0.002)
    (tmp_path / "plain").mkdir()
    (tmp_path / "dE").mkdir()
    _, conn, key = run_steps(tmp_path / "plain",
                             [cc(1.13, EndCondition("time", 3600), record=plain)],
                             electrolyte=CARBONATE)
    n_plain = len(get_samples(conn, key, 0))
    _, conn2, key2 = run_steps(tmp_path / "dE",
                               [cc(1.13, EndCondition("time", 3600), record=on_change)],
                               electrolyte=CARBONATE)
    n_change = len(get_samples(conn2, key2, 0))
    assert n_plain == pytest.approx(61, abs=2)
    assert n_change > 2 * n_plain


def test_hard_short_ends_the_channel_with_its_reason(tmp_path):
    result, conn, key = run_steps(
        tmp_path, [Loop(20, plate_strip(), counts_cycles=True)],
        failure=FailureCriteria(short_below_V=0.005), short_at_charge_C=5 * Q1,
        short_kind="hard")
    assert result.reasons[0] == "short_hard" and result.exit_code == 1
    events = [e for e in get_events(conn, key, 0) if e["kind"] == "short_hard"]
    assert len(events) == 1 and "hard short in cycle 3" in events[0]["message"]


def test_soft_short_is_told_apart_from_a_hard_one(tmp_path):
    result, _, _ = run_steps(
        tmp_path, [Loop(20, plate_strip(), counts_cycles=True)],
        failure=FailureCriteria(short_below_V=0.002, short_drop_fraction=0.4),
        short_at_charge_C=5 * Q1, short_kind="soft")
    assert result.reasons[0] == "short_soft"


def test_overpotential_divergence_ends_a_carbonate_cell(tmp_path):
    result, conn, key = run_steps(
        tmp_path, [Loop(300, plate_strip(), counts_cycles=True)], electrolyte=CARBONATE,
        failure=FailureCriteria(divergence_factor=1.3, divergence_reference_cycles=3))
    assert result.reasons[0] == "overpotential_divergence"
    ch = get_channels(conn, key)[0]
    assert ch["end_reason"] == "overpotential_divergence"
    steps = get_steps(conn, key, 0)
    first = sum(s["e_mean_abs_V"] for s in steps[:6]) / 6
    assert steps[-1]["e_mean_abs_V"] > 1.3 * first * 0.98
    assert math.isfinite(first)


def test_expected_end_counts_as_completed(tmp_path):
    result, _, _ = run_steps(
        tmp_path, [Loop(20, plate_strip(), counts_cycles=True)],
        failure=FailureCriteria(short_below_V=0.005), short_at_charge_C=3 * Q1,
        expected_ends=("short_hard",))
    assert result.reasons[0] == "short_hard" and result.status == "completed"


def test_a_run_through_a_faulty_wire_completes_with_every_fault_logged(tmp_path):
    """Truncated packages on the wire: each is skipped by the driver and logged by the engine;
    every other sample is kept and the charge-limited half-cycles still pass their charge."""
    from rig.sim.emstat import FaultProfile

    spec = CellSpec(0, "cell", "symmetric", AREA, GLYME)
    plan = Plan("sequence", "faults", WINDOW_1V,
                (ChannelPlan(spec, (Loop(3, plate_strip(), counts_cycles=True),)),))
    clock = VirtualClock()
    cell = NaCell("symmetric", AREA, electrolyte_for(GLYME), seed=3)
    sim = SimulatedEmStat4(cell, clock, fault=FaultProfile(truncated_package=0.01, seed=5))
    sim.start()
    station = Station("test", True, {0: ChannelHardware(EmStat4(sim.port), Link("ch0"), "sim")},
                      closers=[sim.close])
    writer = RunWriter(tmp_path / "s.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="test"))
    finally:
        station.close()
        writer.close()
    injected = sim.faults_injected["truncated_package"]
    assert injected > 10
    conn = open_reader(tmp_path / "s.db")
    logged = [e for e in get_events(conn, result.run_key, 0) if e["kind"] == "garbled_package"]
    assert result.status == "completed"
    steps = [s for s in get_steps(conn, result.run_key, 0) if s["half_cycle"]]
    acquired = sum(s["n_samples"] for s in steps)
    # a package cut exactly before a field can still parse; every other one is logged
    assert injected * 0.8 <= len(logged) <= injected
    assert acquired + len(logged) == pytest.approx(6 * 360, abs=6)
    for s in steps:
        assert abs(s["charge_C"]) == pytest.approx(Q1, rel=0.01)


def test_a_current_over_the_limit_trips_even_past_a_planned_cutoff():
    from rig.engine.conditions import planned_cutoff

    ends = (EndCondition("potential_above", 0.9),)
    assert planned_cutoff(ends, 1.3, 5e-3, False, 0.01) == ends[0]   # cutoff overshoot
    assert planned_cutoff(ends, 1.3, 50e-3, False, 0.01) is None     # over the current limit
    assert planned_cutoff(ends, 1.3, 5e-3, True, 0.01) is None       # instrument overload


class FailingStore(RunWriter):
    """A store that fails mid-run (a full disk): the engine must still switch the cell off."""

    def step_end(self, run_key, channel, row):
        if channel == 0 and row["step"] >= 2:
            raise OSError("No space left on device")
        super().step_end(run_key, channel, row)


def test_an_unexpected_error_switches_that_cell_off_and_the_others_complete(tmp_path):
    cells = [CellSpec(n, f"c{n}", "symmetric", AREA, GLYME) for n in (0, 1)]
    plan = Plan("sequence", "engine error", WINDOW_1V,
                tuple(ChannelPlan(c, (Loop(2, plate_strip(Q1 / 4), counts_cycles=True),))
                      for c in cells))
    clock = VirtualClock()
    sims = [SimulatedEmStat4(NaCell("symmetric", AREA, electrolyte_for(GLYME), seed=n),
                             clock).start() for n in (0, 1)]
    station = Station("test", True, {n: ChannelHardware(EmStat4(sims[n].port), Link(f"ch{n}"),
                                                        "sim") for n in (0, 1)},
                      closers=[s.close for s in sims])
    writer = FailingStore(tmp_path / "s.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="test"))
        assert not sims[0].output_on  # switched off by the engine, before anything else
    finally:
        station.close()
        writer.close()
    assert result.reasons == {0: "engine_error", 1: "completed"}
    conn = open_reader(tmp_path / "s.db")
    assert len(get_steps(conn, result.run_key, 1)) == 4
    assert any(e["kind"] == "engine_error" and "No space left" in e["message"]
               for e in get_events(conn, result.run_key, 0))
