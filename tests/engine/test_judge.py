"""The step judge on plain lists of samples: no pty, no simulator, no store."""

from __future__ import annotations

import pytest

from drivers.base import Sample
from protocols.plan import (
    ConstantCurrent,
    EndCondition,
    FailureCriteria,
    RecordRule,
    Rest,
    Safety,
)
from rig.engine.judge import (
    Overshoot,
    Reached,
    Short,
    StepJudge,
    StepTotals,
    Trip,
)

SAFETY = Safety(-1.0, 1.0, 0.01)
I = 1e-3  # A


def cc(*ends: EndCondition, every_s: float = 10.0) -> ConstantCurrent:
    return ConstantCurrent(I, ends or (EndCondition("time", 3600.0),), RecordRule(every_s))


def judge_for(step, failure: FailureCriteria | None = None, duration: float = 3600.0,
              totals: StepTotals | None = None, t0: float = 1000.0) -> StepJudge:
    limit = next(c for c in step.ends if c.kind in ("time", "charge"))
    return StepJudge(step, SAFETY, failure, t0=t0, step_no=3, cycle=2, duration=duration,
                     limit=limit, totals=totals)


def ramp(e_of_t, t_from: float = 1.0, t_to: float = 100.0, i: float = I) -> list[Sample]:
    n = round(t_to - t_from) + 1
    return [Sample(t_from + k, e_of_t(t_from + k), i) for k in range(n)]


def test_a_sample_outside_the_window_trips_and_is_itself_stored():
    judge = judge_for(cc())
    samples = [Sample(1.0, 0.02, I), Sample(2.0, 1.3, I), Sample(3.0, 0.02, I)]
    v = judge.judge(samples)
    assert v.stop == Trip(1002.0, 1.3, I, False)
    assert [r.t for r in v.rows] == [1001.0, 1002.0]   # the later sample is not judged
    assert v.rows[-1].q == pytest.approx(2 * I)         # its charge counts the tripping sample
    assert (v.rows[-1].step, v.rows[-1].cycle) == (3, 2)


@pytest.mark.parametrize("sample", [Sample(1.0, 0.02, I, overload=True),
                                    Sample(1.0, 0.6, 0.05)])
def test_an_overload_or_a_current_over_the_limit_trips_even_past_a_cutoff(sample):
    judge = judge_for(cc(EndCondition("potential_above", 0.5), EndCondition("time", 3600.0)))
    assert isinstance(judge.judge([sample]).stop, Trip)


def test_a_cutoff_overshot_in_one_sample_ends_the_step_as_planned_with_a_note():
    cutoff = EndCondition("potential_above", 0.5, then="end:stripped")
    judge = judge_for(cc(cutoff, EndCondition("time", 3600.0)))
    v = judge.judge([Sample(1.0, 0.1, I), Sample(2.0, 1.5, I)])
    assert v.notes == [Overshoot(1002.0, 1.5, cutoff)]
    assert v.stop == Reached(cutoff)
    end = judge.end(stopped=True, holding=False)
    assert (end.reason, end.then) == ("potential_above", "end:stripped")


def test_the_charge_end_is_reached_at_the_planned_charge():
    charge = EndCondition("charge", 50 * I)
    judge = judge_for(cc(charge), duration=50.0)
    v = judge.judge(ramp(lambda t: 0.02, 1.0, 80.0))
    assert v.stop == Reached(charge)
    assert judge.totals().q == pytest.approx(50 * I)
    assert judge.totals().n == 50


def test_the_recording_rule_keeps_every_tenth_second_and_the_last_sample():
    judge = judge_for(cc(EndCondition("time", 25.0)), duration=25.0)
    v = judge.judge(ramp(lambda t: 0.02, 1.0, 25.0))
    assert [r.t - 1000.0 for r in v.rows] == [1.0, 11.0, 21.0]
    last = judge.last_row()
    assert last is not None and last.t == 1025.0
    assert judge.last_row() is None  # forced once only
    assert judge.end(stopped=True, holding=False).reason == "time"


def test_a_pause_before_the_end_is_not_an_end_and_an_early_stop_is_named():
    judge = judge_for(cc(), duration=3600.0)
    judge.judge(ramp(lambda t: 0.02, 1.0, 10.0))
    assert judge.end(stopped=False, holding=True).paused
    assert judge.end(stopped=True, holding=False).reason == "instrument_stopped"


def test_a_second_segment_carries_the_first_ones_totals():
    first = StepTotals(q=100 * I, e_abs_dt=2.0, t_active=100.0, n=100, e_end=0.02)
    charge = EndCondition("charge", 150 * I)
    judge = judge_for(cc(charge), duration=50.0, totals=first)
    assert judge.judge(ramp(lambda t: 0.02, 1.0, 60.0)).stop == Reached(charge)
    total = judge.totals()
    assert total.q == pytest.approx(150 * I) and total.n == 150
    assert total.t_active == pytest.approx(150.0)
    assert total.e_abs_dt == pytest.approx(2.0 + 50 * 0.02)


HARD = FailureCriteria(short_below_V=0.005, short_drop_window_s=60.0)


def test_a_collapse_that_stays_down_is_a_hard_short_that_ends_the_channel():
    judge = judge_for(cc(), HARD)
    v = judge.judge(ramp(lambda t: 0.03 if t < 100 else 0.001, 1.0, 200.0))
    assert isinstance(v.stop, Short) and v.stop.kind == "short_hard" and v.stop.ends
    assert v.stop.t == 1000.0 + 160.0          # judged one watch window after the collapse
    assert v.rows[-1].t == v.stop.t            # the sample it was judged on is stored


def test_a_soft_short_the_protocol_lets_run_on_is_a_note_and_the_step_carries_on():
    soft = FailureCriteria(short_below_V=0.005, short_drop_fraction=0.5,
                           short_drop_window_s=60.0, soft_short_ends=False)
    judge = judge_for(cc(), soft)
    v = judge.judge(ramp(lambda t: 0.03 if t < 100 else 0.012, 1.0, 300.0))
    assert v.stop is None
    assert [(n.kind, n.ends) for n in v.notes] == [("short_soft", False)]


def test_a_segment_ending_inside_the_watch_window_is_judged_on_its_last_sample():
    judge = judge_for(cc(), HARD)
    assert judge.judge(ramp(lambda t: 0.03 if t < 100 else 0.001, 1.0, 120.0)).stop is None
    short = judge.pending_short()
    assert short is not None and short.kind == "short_hard" and short.t == 1120.0


def test_a_rest_ends_when_the_potential_is_stable_over_its_window():
    stable = EndCondition("dEdt_below", 1e-6)
    rest = Rest((stable, EndCondition("time", 7200.0)), RecordRule(60.0))
    judge = judge_for(rest, duration=7200.0)
    assert judge.early
    samples = [Sample(60.0 * k, 0.5 - 0.1 * 0.5 ** k, 0.0) for k in range(1, 100)]
    v = judge.judge(samples)
    assert v.stop == Reached(stable)
    assert 600.0 <= judge.last[0] - 1000.0 < 7200.0
