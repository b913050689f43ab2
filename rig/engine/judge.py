"""The step judge: a running segment's samples in, verdicts out.

Pure: no clock, no instrument, no store. The channel reads a batch of samples, hands it to the
judge and acts on the verdict (switch the output off, write the rows, log the events). So every
decision about a sample -- safety first, then charge, the step's ends, shorts and the recording
rule -- is tested on plain lists of samples.

Safety comes first on every sample: a sample outside the safety window trips the channel,
unless it is the step's own potential cutoff overshot in one sample (the instrument stopped
there: the step ends as planned, with an overshoot note):

>>> from drivers.base import Sample
>>> from protocols.plan import ConstantCurrent, EndCondition, RecordRule, Safety
>>> strip = ConstantCurrent(1e-3, (EndCondition("potential_above", 0.5),
...                                EndCondition("time", 3600.0)), RecordRule(10.0))
>>> judge = StepJudge(strip, Safety(-1.0, 1.0, 0.01), t0=100.0, step_no=2, cycle=1,
...                   duration=3600.0)
>>> v = judge.judge([Sample(10.0, 0.02, 1e-3), Sample(20.0, 0.03, 1e-3)])
>>> [row.t for row in v.rows], v.stop
([110.0, 120.0], None)
>>> v = judge.judge([Sample(30.0, 1.4, 1e-3)])      # past 0.5 V and past the 1 V window
>>> type(v.notes[0]).__name__, v.stop
('Overshoot', Reached(end=EndCondition(kind='potential_above', value=0.5, then='next')))
>>> round(judge.totals().q, 9)                      # C, signed, over the step's samples
0.03
>>> judge.end(stopped=False, holding=False)
SegmentEnd(reason='potential_above', then='next', paused=False)

A current over the limit always trips, cutoff or not:

>>> judge = StepJudge(strip, Safety(-1.0, 1.0, 0.01), t0=0.0, step_no=1, cycle=1,
...                   duration=3600.0)
>>> judge.judge([Sample(10.0, 0.6, 0.05)]).stop
Trip(t=10.0, e=0.6, i=0.05, overload=False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.base import Sample
from protocols.plan import (
    ConstantCurrent,
    ConstantPotential,
    EndCondition,
    FailureCriteria,
    RecordRule,
    Rest,
    Safety,
)
from rig.engine import conditions as cond
from rig.engine.recording import Recorder
from rig.store.schema import SampleRow


@dataclass
class StepTotals:
    """What a step has done so far, across the segments a pause splits it into."""

    q: float = 0.0          # C, signed
    e_abs_dt: float = 0.0   # V*s, for the mean overpotential
    t_active: float = 0.0   # s under the step's own control (pauses excluded)
    n: int = 0
    e_end: float = math.nan


# ---- verdicts ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Trip:
    """A sample outside the safety window: output off, the channel ends (``safety_window``)."""

    t: float
    e: float
    i: float
    overload: bool


@dataclass(frozen=True, slots=True)
class Overshoot:
    """The step's own potential cutoff and the safety window passed in one sample: the
    instrument stopped at its cutoff, the step ends as planned (a note, not a trip)."""

    t: float
    e: float
    cutoff: EndCondition


@dataclass(frozen=True, slots=True)
class Short:
    """A short seen in the data; ``ends``: the channel ends on it (output off first)."""

    kind: str   # "short_hard" | "short_soft"
    t: float
    e: float
    i: float
    ends: bool


@dataclass(frozen=True, slots=True)
class Reached:
    """One of the step's ends was met by a sample (a cutoff, the charge, |dE/dt|)."""

    end: EndCondition


Stop = Trip | Short | Reached
SampledStep = ConstantCurrent | ConstantPotential | Rest


@dataclass(slots=True)
class Verdict:
    """What a batch of samples asks for: the rows to store, notes that happened while the step
    carried on (overshoots, soft shorts it may run on through), and why it stops, if it does.
    Samples after a stop are not judged."""

    rows: list[SampleRow]
    notes: list[Overshoot | Short]
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """How a segment ended: the step's end ``reason`` and its ``then``; or ``paused``."""

    reason: str
    then: str = "next"
    paused: bool = False


PAUSED = SegmentEnd("paused", paused=True)

# SampleRow(...) without the Python-level __new__ NamedTuple adds: a row per sample is the hot
# path, and this keeps its cost that of a plain tuple's
_row = tuple.__new__


def acquire_every(rule: RecordRule) -> float:
    """How often the instrument measures: the recording interval, or ten times finer when the
    rule also records on a change of E or I (so such a change is seen when it happens).

    >>> acquire_every(RecordRule(10.0)), acquire_every(RecordRule(10.0, every_dE_V=0.005))
    (10.0, 1.0)
    """
    if rule.every_dE_V is None and rule.every_dI_A is None:
        return rule.every_s
    return max(rule.every_s / 10, 0.1)


class StepJudge:
    """Judges one segment of a running step (CC, CP or rest) sample by sample.

    ``t0``: the segment's start on the run clock (sample times are relative to it);
    ``duration``: how long the segment was started for; ``limit``: the time or charge end that
    set that duration (the step's end reason if it runs out); ``totals``: what earlier segments
    of the step did.
    """

    def __init__(self, step: SampledStep, safety: Safety, failure: FailureCriteria | None = None, *,
                 t0: float, step_no: int, cycle: int, duration: float,
                 limit: EndCondition | None = None, totals: StepTotals | None = None,
                 e_range_V: float | None = None) -> None:
        failure = failure or FailureCriteria()
        # the instrument's potential range: a reading pinned there past the step's own cutoff
        # is that cutoff, crossed (conditions.planned_cutoff)
        self.e_range_V = e_range_V
        self.safety = safety
        self.soft_short_ends = failure.soft_short_ends
        self.ends = cond.sample_ends(step.ends)
        self.charge_end = cond.charge_end(step.ends)
        self.q_end = self.charge_end.value if self.charge_end is not None else math.inf
        self.interval_s = acquire_every(step.record)
        self.dedt = [cond.DeDtWatcher(c, self.interval_s) for c in step.ends
                     if c.kind == "dEdt_below"]
        shorts = cond.ShortDetector(failure) if isinstance(step, ConstantCurrent) else None
        self.shorts = shorts if shorts is not None and shorts.active else None
        self.recorder = Recorder(step.record)
        self.t0, self.step_no, self.cycle = t0, step_no, cycle
        self.duration, self.limit = duration, limit
        before = totals or StepTotals()
        self._before = before
        self.q, self.e_abs_dt = before.q, before.e_abs_dt
        self.last_ts, self.e, self.i, self.n = 0.0, math.nan, 0.0, 0
        self.hit: EndCondition | None = None

    @property
    def early(self) -> bool:
        """The step may end before its duration (a cutoff, |dE/dt|): read in shorter batches,
        so its end is seen close to when it happens."""
        return bool(self.ends or self.dedt)

    def judge(self, samples: Sequence[Sample]) -> Verdict:
        """Judge a batch, in order; stops at the first sample that ends the step or channel."""
        rows: list[SampleRow] = []
        notes: list[Overshoot | Short] = []
        safety, ends, dedt, shorts, recorder = (self.safety, self.ends, self.dedt, self.shorts,
                                                self.recorder)
        e_min, e_max, i_max = safety.e_min_V, safety.e_max_V, safety.i_max_A
        t0, step_no, cycle, q_end = self.t0, self.step_no, self.cycle, self.q_end
        q, e_abs_dt, last_ts, n = self.q, self.e_abs_dt, self.last_ts, self.n
        e, i = self.e, self.i
        hit: EndCondition | None = None
        stop: Stop | None = None
        for s in samples:
            e, i, ts = s.potential_V, s.current_A, s.t_s
            if not (e_min <= e <= e_max) or abs(i) > i_max or s.overload:
                planned = cond.planned_cutoff(ends, e, i, s.overload, i_max, self.e_range_V)
                if planned is None:  # nothing measured is lost: the tripping sample is stored
                    dt = ts - last_ts  # and counts in the step's totals (its steps row)
                    q += i * dt
                    e_abs_dt += abs(e) * dt
                    last_ts = ts
                    n += 1
                    rows.append(_row(SampleRow, (t0 + ts, step_no, cycle, e, i, q)))
                    stop = Trip(t0 + ts, e, i, s.overload)
                    break
                notes.append(Overshoot(t0 + ts, e, planned))
            dt = ts - last_ts
            q += i * dt
            e_abs_dt += abs(e) * dt
            last_ts = ts
            n += 1
            if recorder.wants(ts, e, i):
                rows.append(_row(SampleRow, (t0 + ts, step_no, cycle, e, i, q)))
            hit = cond.first_end(ends, e, i) if ends else None
            if hit is None and abs(q) >= q_end * (1 - 1e-9):
                hit = self.charge_end
            for watcher in dedt:
                hit = hit or watcher.check(ts, e)
            if shorts is not None:
                kind = shorts.check(ts, e)
                if kind is not None:
                    if not rows or rows[-1].t != t0 + ts:
                        rows.append(SampleRow(t0 + ts, step_no, cycle, e, i, q))
                    short = Short(kind, t0 + ts, e, i, self._short_ends(kind))
                    if short.ends:
                        stop = short
                        break
                    notes.append(short)
            if hit is not None:
                stop = Reached(hit)
                break
        self.q, self.e_abs_dt, self.last_ts, self.n, self.e, self.i = (q, e_abs_dt, last_ts, n,
                                                                        e, i)
        self.hit = hit
        return Verdict(rows, notes, stop)

    def _short_ends(self, kind: str) -> bool:
        return kind == "short_hard" or self.soft_short_ends

    @property
    def last(self) -> tuple[float, float, float] | None:
        """The latest judged sample (t on the run clock, E, I), None before the first."""
        return (self.t0 + self.last_ts, self.e, self.i) if self.n else None

    def pending_short(self) -> Short | None:
        """The segment ended inside a short's watch window: judged on the last sample."""
        shorts = self.shorts
        if shorts is None or shorts.suspect_since is None or not self.n:
            return None
        kind = shorts.classify(abs(self.e))
        return Short(kind, self.t0 + self.last_ts, self.e, self.i, self._short_ends(kind))

    def last_row(self) -> SampleRow | None:
        """The segment's last sample, stored even if the recording rule did not keep it."""
        if self.n and self.recorder.force(self.last_ts, self.e, self.i):
            return SampleRow(self.t0 + self.last_ts, self.step_no, self.cycle, self.e, self.i,
                             self.q)
        return None

    def totals(self) -> StepTotals:
        """The step's totals with this segment's samples added."""
        b = self._before
        return StepTotals(self.q, self.e_abs_dt, b.t_active + self.last_ts, b.n + self.n,
                          self.e if self.n else b.e_end)

    def end(self, stopped: bool, holding: bool) -> SegmentEnd:
        """Why the segment ended, once the instrument stopped (``stopped``: it ended on its
        own; ``holding``: a pause or an interlock hold is asked)."""
        if self.hit is not None:
            return SegmentEnd(self.hit.kind, self.hit.then)
        if holding and not stopped:
            return PAUSED
        charge = self.charge_end
        if self.limit is not None and (
                self.last_ts >= self.duration - 1e-6
                or (charge is not None and abs(self.q) >= self.q_end * 0.999)):
            return SegmentEnd(self.limit.kind, self.limit.then)
        if holding:
            return PAUSED
        return SegmentEnd("instrument_stopped")
