"""One channel runs its plan: a step is start -> read, judge, act -> end.

The decisions are elsewhere and pure: where the plan goes next is the cursor's
(rig/engine/cursor.py), what each sample means is the step judge's (rig/engine/judge.py: safety
first on every sample, then charge, the step's ends, shorts and the recording rule). This module
does what they decide, in the order that keeps a cell safe: a trip switches the output off
first and logs second; nothing measured is lost; every end leaves the output off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import Any

from drivers.base import (
    InstrumentError,
    InstrumentTimeout,
    OutputNotConfirmedOff,
    Potentiostat,
    Sample,
)
from protocols.plan import (
    ChannelPlan,
    ConstantCurrent,
    ConstantPotential,
    Eis,
    EndCondition,
    RecordRule,
    Rest,
    Step,
)
from rig.clock import RealClock, VirtualClock
from rig.engine import conditions as cond
from rig.engine.context import RunContext
from rig.engine.cursor import NEXT, NoSuchLabel, PlanCursor, Position, Then
from rig.engine.link import Link
from rig.engine.judge import (
    Overshoot,
    SampledStep,
    Short,
    StepJudge,
    StepTotals,
    Trip,
    Verdict,
    acquire_every,
)
from rig.engine.recording import Recorder
from rig.events import EventKind
from rig.store.schema import SampleRow

log = logging.getLogger(__name__)


class ChannelEnded(Exception):
    """Ends the channel's plan early with a reason (safety_window, aborted, instrument_fault, or
    the name of an ``end:<outcome>`` end condition)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass
class StepResult:
    end_reason: str
    charge_C: float
    e_mean_abs_V: float
    e_end_V: float
    n_samples: int
    then: Then = NEXT


@dataclass
class ChannelState:
    """Where the channel is: what a checkpoint stores and the monitor shows."""

    step_no: int = 0
    cycle: int = 0
    path: list[int] = field(default_factory=list)
    loop_iterations: list[int] = field(default_factory=list)
    status: str = "pending"
    end_reason: str | None = None
    last_e: float = math.nan
    last_i: float = 0.0
    # per-cycle bookkeeping of half-cycles, for progress and CE
    plate_C: float = 0.0
    plate_eta_V: float = math.nan
    cycle_etas: list[float] = field(default_factory=list)  # mean |E| per cycle, for divergence
    eis_sweeps: int = 0


@dataclass(frozen=True)
class Resume:
    """Where a crashed channel continues: the checkpoint's position and what the interrupted
    step had already done (read back from its committed samples)."""

    path: tuple[int, ...]
    loop_iterations: tuple[int, ...]
    cycle: int
    step_no: int
    step_done: bool
    totals: StepTotals
    then: str = "next"            # what the finished checkpointed step said comes next
    memory: dict[str, Any] = field(default_factory=dict)  # see ChannelRunner.memory()
    t_start: float | None = None  # when the interrupted step began (its steps.t_start)

    @property
    def position(self) -> Position:
        return Position(self.path, self.loop_iterations, self.cycle)


class ChannelRunner:
    def __init__(self, ctx: RunContext, plan: ChannelPlan, driver: Potentiostat,
                 link: Link) -> None:
        self.ctx = ctx
        self.plan = plan
        self.channel = plan.cell.channel
        self.driver = driver
        self.link = link
        self.state = ChannelState()
        self.pause_requested = False   # by a person (commands table)
        self.hold_requested = False    # by a station interlock; independent of a pause
        self.end_requested: str | None = None  # "aborted", "overpressure", ...
        self.resume: Resume | None = None
        self._wake: asyncio.Future[None] | None = None
        self._nudged = False
        self._t_start = math.nan    # when the running step began
        self._output_off = False    # switched off (or tried to) since the last step started
        self._resyncs_seen = getattr(driver, "resyncs", 0)  # lost replies already logged

    def nudge(self) -> None:
        """Wake the channel now (a command or an interlock wants it to act before its next
        planned read)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        else:
            self._nudged = True

    async def _sleep_until(self, t: float) -> float:
        """Sleep on the clock until ``t``, or until nudged; returns the time woken at."""
        clock = self.ctx.clock
        if not self._nudged:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await clock.sleep_until(t, self._wake)
            finally:
                self._wake = None
        self._nudged = False
        return min(t, clock.now())

    @property
    def holding(self) -> bool:
        return self.pause_requested or self.hold_requested

    @property
    def abort_requested(self) -> bool:
        return self.end_requested is not None

    def request(self, command: str) -> None:
        """pause / resume / abort, from the commands table (acted on at the next read)."""
        if command == "pause":
            self.pause_requested = True
        elif command == "resume":
            self.pause_requested = False
        elif command == "abort":
            self.end_requested = "aborted"
        self.nudge()

    def request_end(self, reason: str) -> None:
        """End the channel at its next read (output off first), e.g. on overpressure."""
        if self.end_requested is None:
            self.end_requested = reason
        self.nudge()

    # ---- the plan --------------------------------------------------------------------------
    async def run(self) -> str:
        """Run the whole plan; returns the end reason ('completed' when it ran as planned).
        However it ends, the output is off afterwards."""
        ctx, ch = self.ctx, self.channel
        self.state.status = "running"
        ctx.writer.channel_status(ctx.run_key, ch, "running")
        ctx.progress.channel_started(ch, self.plan.cell)
        try:
            reason = await self._run_plan()
        except ChannelEnded as end:
            reason = end.reason
        except (NoSuchLabel, cond.BadPlan) as exc:
            reason = "bad_plan"
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", EventKind.BAD_PLAN,
                             str(exc))
        except InstrumentError as exc:
            self._log_retried()  # the attempts that came before the one that failed
            await self._safe_off()
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error",
                             EventKind.INSTRUMENT_FAULT, f"{type(exc).__name__}: {exc}")
            reason = "instrument_fault"
        except Exception as exc:
            await self._safe_off()
            reason = "engine_error"
            log.exception("channel %s: engine error", ch)
            with contextlib.suppress(Exception):
                ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error",
                                 EventKind.ENGINE_ERROR,
                                 f"{type(exc).__name__}: {exc}: output off")
        if not self._output_off:  # completed, or a planned end: the cell is left off too
            with contextlib.suppress(Exception):
                await self._safe_off()
        self.state.status, self.state.end_reason = "ended", reason
        outcome = await ctx.outcome_of(self.plan.cell, reason)
        ctx.writer.channel_status(ctx.run_key, ch, "ended", end_reason=reason, outcome=outcome)
        ctx.writer.event(ctx.run_key, ch, ctx.clock.now(),
                         "info" if reason == "completed" else "warning", EventKind.CHANNEL_END,
                         f"channel {ch} ({self.plan.cell.cell_id}) ended: {reason}")
        ctx.progress.channel_ended(ch, reason)
        return reason

    async def _run_plan(self) -> str:
        """Step after step where the cursor says; returns how the plan ended ('completed' or
        the name of an ``end:<name>``)."""
        resumed, self.resume = self.resume, None
        cursor = PlanCursor(self.plan.steps, resumed.position if resumed else None)
        if resumed is not None and resumed.step_done and cursor.step is not None:
            # the checkpointed step had finished: go where it said, as if it just ended
            cursor.advance(Then.parse(resumed.then))
            resumed = None
        while (step := cursor.step) is not None:
            s = self.state
            s.path, s.loop_iterations = list(cursor.path), list(cursor.loop_iterations)
            s.cycle = cursor.cycle
            result = await self._run_step(step, resumed)
            resumed = None
            cursor.advance(result.then)
        return cursor.end_reason or "completed"

    # ---- one step ----------------------------------------------------------------------------
    async def _run_step(self, step: Step, resumed: Resume | None = None) -> StepResult:
        """Run one step (``resumed``: the step a crash interrupted, continued with what it still
        owes and under its own start time)."""
        ctx = self.ctx
        totals = resumed.totals if resumed is not None else StepTotals()
        self.state.step_no += 1
        now = ctx.clock.now()
        t_start = resumed.t_start if resumed is not None and resumed.t_start is not None else now
        self._t_start, self._output_off = t_start, False
        ctx.writer.checkpoint(ctx.run_key, self.channel, now,
                              self.checkpoint_state(step_done=False, totals=totals))
        run = STEP_KINDS.get(step.kind)
        if run is None:
            raise cond.BadPlan(f"{step.kind} steps are not supported")
        try:
            result = await run(self, step, totals)
        except ChannelEnded as end:  # a trip or a short: the step still gets its row
            self._step_row(step, t_start, self._result(step, totals, end.reason))
            raise
        t_end = self._step_row(step, t_start, result)
        ctx.writer.checkpoint(ctx.run_key, self.channel, t_end,
                              self.checkpoint_state(step_done=True, then=str(result.then)))
        ctx.writer.event(ctx.run_key, self.channel, t_end, "info", EventKind.STEP_END,
                         f"step {self.state.step_no} {step.label or step.kind} (cycle "
                         f"{self.state.cycle}) ended on {result.end_reason}: "
                         f"{result.charge_C / 3.6:+.4f} mAh, mean |E| "
                         f"{result.e_mean_abs_V * 1e3:.1f} mV")
        self._report_half_cycle(step, result)
        return result

    def _step_row(self, step: Step, t_start: float, result: StepResult) -> float:
        """Store the step's summary row; returns its end time."""
        ctx = self.ctx
        t_end = ctx.clock.now()
        ctx.writer.step_end(ctx.run_key, self.channel, {
            "step": self.state.step_no, "cycle": self.state.cycle, "label": step.label,
            "kind": step.kind, "half_cycle": getattr(step, "half_cycle", None),
            "t_start": t_start, "t_end": t_end, "end_reason": result.end_reason,
            "charge_C": result.charge_C, "e_mean_abs_V": result.e_mean_abs_V,
            "e_end_V": result.e_end_V, "n_samples": result.n_samples,
        })
        return t_end

    def checkpoint_state(self, step_done: bool, totals: StepTotals | None = None,
                         then: str = "next", holding: bool = False) -> dict[str, Any]:
        """The channel's position; ``totals``: what the running step had done when the
        checkpoint was written (samples after it add to it, unless ``holding``: then they are
        open-circuit readings of a pause)."""
        s = self.state
        return {"step_no": s.step_no, "cycle": s.cycle, "path": list(s.path),
                "loop_iterations": list(s.loop_iterations), "step_done": step_done,
                "then": then, "holding": holding, "t_start": self._t_start,
                "totals": dataclasses.asdict(totals) if totals is not None else None,
                "memory": self.memory()}

    def memory(self) -> dict[str, Any]:
        """What later steps need of earlier ones: the plated charge and η of the open cycle,
        the divergence reference, the EIS sweep count."""
        s, n = self.state, self.ctx.failure.divergence_reference_cycles
        return {"plate_C": s.plate_C, "plate_eta_V": s.plate_eta_V,
                "reference_etas": s.cycle_etas[:n], "eis_sweeps": s.eis_sweeps}

    def restore(self, memory: dict[str, Any]) -> None:
        s = self.state
        s.plate_C = memory.get("plate_C", 0.0)
        s.plate_eta_V = memory.get("plate_eta_V", math.nan)
        s.cycle_etas = list(memory.get("reference_etas", []))
        s.eis_sweeps = memory.get("eis_sweeps", 0)

    def _report_half_cycle(self, step: Step, result: StepResult) -> None:
        half = getattr(step, "half_cycle", None)
        if half in ("plate", "strip"):
            self._check_divergence(result.e_mean_abs_V)
        if half == "plate":
            self.state.plate_C, self.state.plate_eta_V = abs(result.charge_C), result.e_mean_abs_V
        elif half == "strip":
            plated = self.state.plate_C
            ce = abs(result.charge_C) / plated if plated > 0 else math.nan
            self.ctx.progress.cycle_done(self.channel, self.state.cycle, {
                "plated_C": plated, "stripped_C": abs(result.charge_C), "ce": ce,
                "eta_plate_V": self.state.plate_eta_V, "eta_strip_V": result.e_mean_abs_V,
            })
            self.state.cycle_etas.append(0.5 * (self.state.plate_eta_V + result.e_mean_abs_V))

    def _check_divergence(self, eta: float) -> None:
        fc = self.ctx.failure
        ref = cond.diverged(self.state.cycle_etas, eta, fc)
        if ref is None:
            return
        ctx = self.ctx
        ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "alarm",
                         EventKind.OVERPOTENTIAL_DIVERGENCE,
                         f"cycle {self.state.cycle}: mean overpotential {eta * 1e3:.1f} mV "
                         f"exceeds {fc.divergence_factor:g} x {ref * 1e3:.1f} mV (the mean of "
                         f"cycles 1-{fc.divergence_reference_cycles})")
        raise ChannelEnded("overpotential_divergence")

    async def _run_current(self, step: ConstantCurrent, totals: StepTotals) -> StepResult:
        i_abs = abs(step.current_A)
        e_min, e_max = cond.instrument_window(step.ends, self.ctx.safety)

        def start(duration: float) -> Any:
            return self.link.call(self.driver.start_current, step.current_A,
                                  acquire_every(step.record), duration, e_min, e_max)
        return await self._run_segments(step, totals, i_abs, start)

    async def _run_rest(self, step: Rest, totals: StepTotals) -> StepResult:
        def start(duration: float) -> Any:
            return self.link.call(self.driver.start_open_circuit, acquire_every(step.record),
                                  duration)
        return await self._run_segments(step, totals, 0.0, start)

    async def _run_potential(self, step: ConstantPotential, totals: StepTotals) -> StepResult:
        i_max = self.ctx.safety.i_max_A

        def start(duration: float) -> Any:
            return self.link.call(self.driver.start_potential, step.potential_V,
                                  acquire_every(step.record), duration, i_max)
        return await self._run_segments(step, totals, 0.0, start)

    async def _run_eis(self, step: Eis, totals: StepTotals) -> StepResult:
        """A potentiostatic sweep, streamed point by point into the store's eis table."""
        ctx, clock = self.ctx, self.ctx.clock
        dc = step.dc_V if step.dc_V is not None else await self._open_circuit_potential()
        decades = abs(math.log10(step.f_start_Hz / step.f_end_Hz))
        n_points = max(2, round(decades * step.points_per_decade) + 1)
        try:
            await self.link.call(self.driver.start_eis, step.f_start_Hz, step.f_end_Hz,
                                 n_points, step.amplitude_V, dc)
        except ValueError as exc:  # a point longer than the host watchdog, say
            raise cond.BadPlan(f"step {step.label or step.kind}: {exc}") from None
        self.state.eis_sweeps += 1
        sweep = self.state.eis_sweeps
        # how long the sweep takes is the instrument's to say (its own pace per frequency)
        expected = self.driver.eis_sweep_duration_s(step.f_start_Hz, step.f_end_Hz, n_points)
        t0, ended, n = clock.now(), False, 0
        while not ended:
            target = await self._sleep_until(min(t0 + expected,
                                                 clock.now() + ctx.read_window(1.0),
                                                 t0 + _chunk_end(self.driver)))
            until = target - t0 if target < t0 + expected else math.inf
            points, ended = await self.link.call(self.driver.read_eis, until)
            self._log_recovered()
            if points:
                n += len(points)
                ctx.writer.eis_points(ctx.run_key, self.channel, sweep, t0,
                                      [(f, z.real, z.imag) for _, f, z in points])
            if self.end_requested:
                await self._end_now()
        return StepResult("sweep_done", 0.0, math.nan, dc, n)

    async def _open_circuit_potential(self, seconds: float = 10.0) -> float:
        """The OCP to centre an EIS sweep on: a short rest, its last reading."""
        await self.link.call(self.driver.start_open_circuit, 1.0, seconds)
        await self.ctx.clock.sleep(seconds)
        samples, _ = await self.link.call(self.driver.read_samples, math.inf)
        if not samples:
            raise cond.BadPlan("no open-circuit reading to centre the EIS sweep on")
        return samples[-1].potential_V

    async def _run_segments(self, step: SampledStep, totals: StepTotals, i_abs: float,
                            start: Callable[[float], Awaitable[None]]) -> StepResult:
        """Run a step to its end; a pause splits it into segments with an open-circuit hold
        between them, and the step still passes the charge (or time) it owes."""
        time_end = cond.time_end(step.ends)
        charge_end = cond.charge_end(step.ends)
        if time_end is None and (charge_end is None or i_abs == 0):
            raise cond.BadPlan(f"step {step.label or step.kind} has neither a time nor a "
                               "charge limit")
        while True:
            # which limit comes first decides the segment's length, and the step's end reason
            t_left = time_end.value - totals.t_active if time_end else math.inf
            q_left = ((charge_end.value - abs(totals.q)) / i_abs
                      if charge_end is not None and i_abs > 0 else math.inf)
            limit = time_end if t_left <= q_left else charge_end
            assert limit is not None  # one of them is finite (checked above)
            duration = min(t_left, q_left)
            if duration <= 1e-9:
                return self._result(step, totals, limit.kind, limit.then)
            try:
                await start(duration)
            except ValueError as exc:  # the driver cannot run it (host_watchdog vs interval)
                raise cond.BadPlan(f"step {step.label or step.kind}: {exc}") from None
            outcome = await self._stream(step, duration, totals, limit)
            if outcome is not None:
                return outcome
            ctx = self.ctx  # paused: hold at open circuit, then the rest of the step
            ctx.writer.checkpoint(ctx.run_key, self.channel, ctx.clock.now(),
                                  self.checkpoint_state(False, totals, holding=True))
            await self._hold(q=totals.q)
            ctx.writer.checkpoint(ctx.run_key, self.channel, ctx.clock.now(),
                                  self.checkpoint_state(False, totals))

    def _result(self, step: Step, totals: StepTotals, reason: str,
                then: str = "next") -> StepResult:
        mean = totals.e_abs_dt / totals.t_active if totals.t_active > 0 else math.nan
        return StepResult(reason, totals.q, mean, totals.e_end, totals.n, Then.parse(then))

    async def _stream(self, step: SampledStep, duration: float, totals: StepTotals,
                      limit: EndCondition) -> StepResult | None:
        """Read a running segment's samples until it ends (``limit``: the time or charge end
        that sets its ``duration``): read, judge, act. Returns the step's result, or None when
        a pause interrupted it (the instrument is already stopped)."""
        ctx, ch, clock = self.ctx, self.channel, self.ctx.clock
        t0 = clock.now()
        judge = StepJudge(step, ctx.safety, ctx.failure, t0=t0, step_no=self.state.step_no,
                          cycle=self.state.cycle, duration=duration, limit=limit,
                          totals=totals, e_range_V=self.driver.ranges.max_potential_V)
        # a step that may end before its duration (a cutoff, |dE/dt|) is read in shorter
        # batches on the virtual clock, so its end is seen close to when it happens (a short is
        # seen at its exact sample either way; only the output-off comes up to a batch later
        # in simulated time)
        interval = judge.interval_s
        window = self._window(interval, judge.early)
        ended = False
        while not ended:
            target = await self._sleep_until(min(t0 + duration,
                                                 _next_read(clock, t0, window, interval),
                                                 t0 + _chunk_end(self.driver)))
            until = target - t0 if target < t0 + duration else math.inf
            samples, ended = await self._read(until)
            verdict = judge.judge(samples)
            try:
                await self._act(verdict)
            except ChannelEnded:  # a trip or a short: the step's row gets what it had done
                _copy_totals(judge.totals(), totals)
                raise
            last = judge.last
            if last is not None:
                self.state.last_e, self.state.last_i = last[1], last[2]
                ctx.progress.sample(ch, *last)
            if verdict.stop is not None or self.end_requested or self.holding:
                if not ended:
                    await self.link.call(self.driver.abort)
                break
        _copy_totals(judge.totals(), totals)
        short = judge.pending_short()
        if short is not None:
            await self._act(Verdict([], [], short) if short.ends else Verdict([], [short]))
        row = judge.last_row()
        if row is not None:
            ctx.writer.samples(ctx.run_key, ch, [row])
        if self.end_requested:
            await self._end_now()
        end = judge.end(stopped=ended, holding=self.holding)
        return None if end.paused else self._result(step, totals, end.reason, end.then)

    async def _act(self, verdict: Verdict) -> None:
        """Do what a verdict asks: a stop that ends the channel switches the output off first;
        then the data is stored (nothing measured is lost), then the events are logged."""
        stop = verdict.stop
        ending = isinstance(stop, Trip) or (isinstance(stop, Short) and stop.ends)
        if ending:
            await self._safe_off()
        if verdict.rows:
            self.ctx.writer.samples(self.ctx.run_key, self.channel, verdict.rows)
        for note in verdict.notes:
            self._log(note)
        if ending:
            assert isinstance(stop, (Trip, Short))
            self._log(stop)
            raise ChannelEnded("safety_window" if isinstance(stop, Trip) else stop.kind)

    def _log(self, finding: Trip | Short | Overshoot) -> None:
        ctx, sf = self.ctx, self.ctx.safety
        if isinstance(finding, Trip):
            ctx.writer.event(ctx.run_key, self.channel, finding.t, "alarm",
                             EventKind.SAFETY_TRIP,
                             f"E={finding.e:.4f} V, I={finding.i * 1e3:.4f} mA outside the "
                             f"safety limits [{sf.e_min_V:g}, {sf.e_max_V:g}] V, "
                             f"|I| <= {sf.i_max_A * 1e3:g} mA: output off")
        elif isinstance(finding, Overshoot):
            c = finding.cutoff
            ctx.writer.event(ctx.run_key, self.channel, finding.t, "warning",
                             EventKind.OVERSHOOT,
                             f"E={finding.e:.4f} V passed the step's {c.kind} "
                             f"{c.value:g} V cutoff and the safety window [{sf.e_min_V:g}, "
                             f"{sf.e_max_V:g}] V in one sample; the instrument stopped at the "
                             "cutoff (its own limit): the step ends as planned")
        else:
            word = "hard short" if finding.kind == "short_hard" else "soft short"
            ctx.writer.event(ctx.run_key, self.channel, finding.t, "alarm",
                             EventKind(finding.kind),
                             f"{word} in cycle {self.state.cycle}: E={finding.e * 1e3:.2f} mV "
                             f"at I={finding.i * 1e3:.3f} mA"
                             + (": output off" if finding.ends else ": carrying on"))

    def _window(self, interval_s: float, early: bool = True) -> float:
        """How long to sleep between reads. An instrument that does not stream (the Keithley
        measures when asked) is read once per acquisition interval, on any clock."""
        if not self.driver.streaming:
            return interval_s
        return self.ctx.read_window(interval_s, early)

    async def _read(self, until: float, tolerated_timeouts: int = 3) -> tuple[list[Sample], bool]:
        """The streaming read, with the instrument's hiccups logged: a garbled package is
        skipped by the driver and logged here; a few timeouts in a row are waited out (a slow
        instrument), more mean the instrument is gone (the caller puts the cell in a safe
        state)."""
        ctx = self.ctx
        for attempt in range(tolerated_timeouts + 1):
            try:
                samples, ended = await self.link.call(self.driver.read_samples, until)
                break
            except InstrumentTimeout as exc:
                if attempt == tolerated_timeouts:
                    raise
                ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                                 EventKind.INSTRUMENT_TIMEOUT, f"{exc}; waiting again")
        self._log_rejected()
        self._log_retried()
        self._log_recovered()
        return samples, ended

    def _log_rejected(self) -> None:
        """One event per garbled package or line the driver skipped."""
        ctx, rejected = self.ctx, self.driver.rejected
        if rejected:
            for why in rejected:
                ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                                 EventKind.GARBLED_PACKAGE, f"package skipped: {why}")
            rejected.clear()

    def _log_retried(self) -> None:
        """One event per attempt the driver failed and retried (a step setup redone on a new
        connection, a reply asked again): cured faults are faults on the wire all the same."""
        retried = getattr(self.driver, "retried", None)
        if retried is None:
            return
        count, kept = retried.take()
        ctx = self.ctx
        for why in kept:
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                             EventKind.INSTRUMENT_RETRIED, why)
        if count > len(kept):
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                             EventKind.INSTRUMENT_RETRIED,
                             f"{count - len(kept)} more failed attempts retried")

    def _log_recovered(self) -> None:
        """Replies the driver lost or found garbled and recovered from (re-synchronised and
        asked again, ``resyncs``): each is a fault on the wire even though the step went on, so
        each is counted in an event (as a sensor's retried attempts are)."""
        resyncs = getattr(self.driver, "resyncs", 0)
        n, self._resyncs_seen = resyncs - self._resyncs_seen, resyncs
        if n > 0:
            ctx = self.ctx
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                             EventKind.INSTRUMENT_RETRIED,
                             f"{n} lost or garbled repl{'ies' if n > 1 else 'y'} recovered: the "
                             f"driver re-synchronised and asked again")

    async def _end_now(self) -> None:
        """An end asked from outside the plan (abort, overpressure): output off, then log."""
        await self._safe_off()
        ctx, reason = self.ctx, self.end_requested or "aborted"
        ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning", EventKind(reason),
                         f"channel {self.channel} ended ({reason}): output off")
        raise ChannelEnded(reason)

    async def _hold(self, interval_s: float = 10.0, q: float = 0.0) -> None:
        """Paused or held by an interlock: open circuit and keep recording, until neither."""
        ctx, ch, clock = self.ctx, self.channel, self.ctx.clock
        status = "paused" if self.pause_requested else "held"
        self.state.status = status
        ctx.writer.channel_status(ctx.run_key, ch, status)
        ctx.writer.event(ctx.run_key, ch, clock.now(), "info", EventKind(status),
                         f"channel {ch} {status}: holding at open circuit")
        recorder = Recorder(RecordRule(every_s=interval_s))
        window = self._window(interval_s)
        ended = True
        while self.holding and not self.end_requested:
            now_status = "paused" if self.pause_requested else "held"
            if now_status != self.state.status:  # a pause inside a hold, or the reverse
                self.state.status = now_status
                ctx.writer.channel_status(ctx.run_key, ch, now_status)
            if ended:
                await self.link.call(self.driver.start_open_circuit, interval_s, 1e7)
                t0, ended = clock.now(), False
            target = await self._sleep_until(clock.now() + window)
            samples, ended = await self.link.call(self.driver.read_samples, target - t0)
            self._log_recovered()
            rows = [SampleRow(t0 + s.t_s, self.state.step_no, self.state.cycle, s.potential_V,
                              s.current_A, q) for s in samples
                    if recorder.wants(t0 + s.t_s, s.potential_V, s.current_A)]
            if rows:
                ctx.writer.samples(ctx.run_key, ch, rows)
        if not ended:
            await self.link.call(self.driver.abort)
        if self.end_requested:
            await self._end_now()
        self.state.status = "running"
        ctx.writer.channel_status(ctx.run_key, ch, "running")
        ctx.writer.event(ctx.run_key, ch, clock.now(), "info", EventKind.RESUMED,
                         f"channel {ch} resumed")

    async def _safe_off(self) -> None:
        self._output_off = True
        try:
            await self.link.call(self.driver.output_off)
        except OutputNotConfirmedOff as exc:  # retried with reconnects: it may still drive
            ctx = self.ctx
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "alarm",
                             EventKind.OUTPUT_OFF,
                             f"THE OUTPUT MAY STILL BE ON: switch it off at the instrument: {exc}")
        except InstrumentError as exc:
            ctx = self.ctx
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "error",
                             EventKind.OUTPUT_OFF,
                             f"could not switch the output off: {exc}")
        self._log_rejected()   # garbled lines the abort before it dropped
        self._log_recovered()  # its lost replies, cured or not
        self._log_retried()  # output-off's own retries (a link that dropped as it ended)


def _copy_totals(new: StepTotals, totals: StepTotals) -> None:
    """The judge's totals into the step's (they outlive a segment: a pause, a trip's row)."""
    totals.q, totals.e_abs_dt, totals.t_active = new.q, new.e_abs_dt, new.t_active
    totals.n, totals.e_end = new.n, new.e_end


StepRun = Callable[[ChannelRunner, Any, StepTotals], Awaitable[StepResult]]
STEP_KINDS: dict[str, StepRun] = {
    "constant_current": ChannelRunner._run_current,
    "rest": ChannelRunner._run_rest,
    "constant_potential": ChannelRunner._run_potential,
    "eis": ChannelRunner._run_eis,
}
"""How each kind of step is run (a Loop is the cursor's, never run)."""


def _chunk_end(driver: Any) -> float:
    """When the instrument's running chunk of the step ends (seconds after the step started):
    a driver whose instrument switches its output off without word from the host runs a long
    step as several scripts (drivers.base.Potentiostat, host_watchdog_s); read then, so the
    next chunk starts without a gap. math.inf: nothing to do before the step's own end."""
    end: float = getattr(driver, "chunk_end_s", math.inf)
    return end


def _next_read(clock: RealClock | VirtualClock, t0: float, window: float, interval: float) -> float:
    """When to read next. On the virtual clock: a batch later. On a real clock: at the moment
    the next package is due (the instrument's schedule, t0 + k x interval), so a sample waits
    only for its own transport, not for a read loop that has drifted off the schedule."""
    now = clock.now()
    if clock.is_virtual or window > interval:
        return now + window
    k = math.floor((now - t0) / interval + 1e-9) + 1
    return t0 + k * interval
