"""One channel runs its plan: a step is start -> sample loop -> end.

In the sample loop, safety is checked on every sample before anything else: a trip switches the
output off first and logs second. Charge, end conditions and the recording rule come after.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from drivers.base import InstrumentError, InstrumentTimeout, Potentiostat, Sample
from protocols.plan import (
    ChannelPlan,
    ConstantCurrent,
    ConstantPotential,
    Eis,
    EndCondition,
    Loop,
    RecordRule,
    Rest,
    Step,
)
from rig.engine import conditions as cond
from rig.engine.context import RunContext
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



log = logging.getLogger(__name__)


class ChannelEnded(Exception):
    """Ends the channel's plan early with a reason (safety_window, aborted, instrument_fault, or
    the name of an ``end:<outcome>`` end condition)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class Goto(Exception):
    """An end condition named the step to go to next."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.label = label


@dataclass
class StepResult:
    end_reason: str
    charge_C: float
    e_mean_abs_V: float
    e_end_V: float
    n_samples: int
    then: str = "next"


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
        """Run the whole plan; returns the end reason ('completed' when it ran as planned)."""
        ctx, ch = self.ctx, self.channel
        self.state.status = "running"
        ctx.writer.channel_status(ctx.run_key, ch, "running")
        ctx.progress.channel_started(ch, self.plan.cell)
        try:
            await self._run_steps(self.plan.steps)
            reason = "completed"
        except ChannelEnded as end:
            reason = end.reason
        except Goto as goto:
            reason = "bad_plan"
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", "bad_plan",
                             f"no step labelled {goto.label!r} to go to")
        except cond.BadPlan as exc:
            reason = "bad_plan"
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", "bad_plan", str(exc))
        except InstrumentError as exc:
            await self._safe_off()
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", "instrument_fault",
                             f"{type(exc).__name__}: {exc}")
            reason = "instrument_fault"
        except Exception as exc:
            await self._safe_off()
            reason = "engine_error"
            log.exception("channel %s: engine error", ch)
            with contextlib.suppress(Exception):
                ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", "engine_error",
                                 f"{type(exc).__name__}: {exc}: output off")
        self.state.status, self.state.end_reason = "ended", reason
        outcome = await ctx.outcome_of(self.plan.cell, reason)
        ctx.writer.channel_status(ctx.run_key, ch, "ended", end_reason=reason, outcome=outcome)
        ctx.writer.event(ctx.run_key, ch, ctx.clock.now(),
                         "info" if reason == "completed" else "warning", "channel_end",
                         f"channel {ch} ({self.plan.cell.cell_id}) ended: {reason}")
        ctx.progress.channel_ended(ch, reason)
        return reason

    async def _run_steps(self, steps: tuple[Step, ...]) -> None:
        """Run a list of steps in order; a goto jumps to a labelled step of this list or, if
        the label is not here, leaves it for an enclosing list."""
        depth = len(self.state.path)
        index = self.resume.path[depth] if self.resume else 0
        while index < len(steps):
            step = steps[index]
            self.state.path.append(index)
            try:
                if isinstance(step, Loop):
                    await self._run_loop(step)
                elif self.resume and self.resume.step_done:
                    # the checkpointed step had finished: go where it said, as if it just ended
                    then, self.resume = self.resume.then, None
                    if then.startswith("end:"):
                        raise ChannelEnded(then[4:])
                    if then != "next":
                        raise Goto(then)
                else:
                    result = await self._run_step(step)
                    if result.then.startswith("end:"):
                        raise ChannelEnded(result.then[4:])
                    if result.then != "next":
                        raise Goto(result.then)
            except Goto as goto:
                target = next((k for k, st in enumerate(steps) if st.label == goto.label), None)
                if target is None:
                    raise
                index = target
                continue
            finally:
                self.state.path.pop()
            index += 1

    async def _run_loop(self, loop: Loop) -> None:
        level = len(self.state.loop_iterations)
        first = self.resume.loop_iterations[level] if self.resume else 0
        self.state.loop_iterations.append(first)
        try:
            for k in range(first, loop.count):
                self.state.loop_iterations[-1] = k
                if loop.counts_cycles and not self.resume:
                    self.state.cycle += 1  # a resumed iteration keeps its cycle number
                await self._run_steps(loop.steps)
        finally:
            self.state.loop_iterations.pop()

    # ---- one step ----------------------------------------------------------------------------
    async def _run_step(self, step: Step) -> StepResult:
        ctx = self.ctx
        totals = StepTotals()
        if self.resume:  # continue the interrupted step with what it still owes
            totals, self.resume = self.resume.totals, None
        self.state.step_no += 1
        t_start = ctx.clock.now()
        ctx.writer.checkpoint(ctx.run_key, self.channel, t_start,
                              self.checkpoint_state(step_done=False, totals=totals))
        if isinstance(step, ConstantCurrent):
            result = await self._run_current(step, totals)
        elif isinstance(step, Rest):
            result = await self._run_rest(step, totals)
        elif isinstance(step, ConstantPotential):
            result = await self._run_potential(step, totals)
        elif isinstance(step, Eis):
            result = await self._run_eis(step)
        else:
            raise cond.BadPlan(f"{step.kind} steps are not supported")
        t_end = ctx.clock.now()
        ctx.writer.step_end(ctx.run_key, self.channel, {
            "step": self.state.step_no, "cycle": self.state.cycle, "label": step.label,
            "kind": step.kind, "half_cycle": getattr(step, "half_cycle", None),
            "t_start": t_start, "t_end": t_end, "end_reason": result.end_reason,
            "charge_C": result.charge_C, "e_mean_abs_V": result.e_mean_abs_V,
            "e_end_V": result.e_end_V, "n_samples": result.n_samples,
        })
        ctx.writer.checkpoint(ctx.run_key, self.channel, t_end,
                              self.checkpoint_state(step_done=True, then=result.then))
        ctx.writer.event(ctx.run_key, self.channel, t_end, "info", "step_end",
                         f"step {self.state.step_no} {step.label or step.kind} (cycle "
                         f"{self.state.cycle}) ended on {result.end_reason}: "
                         f"{result.charge_C / 3.6:+.4f} mAh, mean |E| "
                         f"{result.e_mean_abs_V * 1e3:.1f} mV")
        self._report_half_cycle(step, result)
        return result

    def checkpoint_state(self, step_done: bool, totals: StepTotals | None = None,
                         then: str = "next", holding: bool = False) -> dict[str, Any]:
        """The channel's position; ``totals``: what the running step had done when the
        checkpoint was written (samples after it add to it, unless ``holding``: then they are
        open-circuit readings of a pause)."""
        s = self.state
        return {"step_no": s.step_no, "cycle": s.cycle, "path": list(s.path),
                "loop_iterations": list(s.loop_iterations), "step_done": step_done,
                "then": then, "holding": holding,
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
                         "overpotential_divergence",
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

    async def _run_eis(self, step: Eis) -> StepResult:
        """A potentiostatic sweep, streamed point by point into the store's eis table."""
        ctx, clock = self.ctx, self.ctx.clock
        dc = step.dc_V if step.dc_V is not None else await self._open_circuit_potential()
        decades = abs(math.log10(step.f_start_Hz / step.f_end_Hz))
        n_points = max(2, round(decades * step.points_per_decade) + 1)
        await self.link.call(self.driver.start_eis, step.f_start_Hz, step.f_end_Hz, n_points,
                             step.amplitude_V, dc)
        self.state.eis_sweeps += 1
        sweep = self.state.eis_sweeps
        ratio = step.f_end_Hz / step.f_start_Hz
        expected = sum(max(1.0, 3.0 / (step.f_start_Hz * ratio ** (k / (n_points - 1))))
                       for k in range(n_points))  # the instrument's own pace, roughly
        t0, ended, n = clock.now(), False, 0
        while not ended:
            target = await self._sleep_until(min(t0 + expected,
                                                 clock.now() + ctx.read_window(1.0)))
            until = target - t0 if target < t0 + expected else math.inf
            points, ended = await self.link.call(self.driver.read_eis, until)
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

    async def _run_segments(self, step: Step, totals: StepTotals, i_abs: float,
                            start: Any) -> StepResult:
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
            duration = min(t_left, q_left)
            if duration <= 1e-9:
                return self._result(step, totals, limit.kind, limit.then)
            await start(duration)
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
        return StepResult(reason, totals.q, mean, totals.e_end, totals.n, then)

    async def _stream(self, step: SampledStep, duration: float, totals: StepTotals,
                      limit: EndCondition) -> StepResult | None:
        """Read a running segment's samples until it ends (``limit``: the time or charge end
        that sets its ``duration``): read, judge, act. Returns the step's result, or None when
        a pause interrupted it (the instrument is already stopped)."""
        ctx, ch, clock = self.ctx, self.channel, self.ctx.clock
        t0 = clock.now()
        judge = StepJudge(step, ctx.safety, ctx.failure, t0=t0, step_no=self.state.step_no,
                          cycle=self.state.cycle, duration=duration, limit=limit,
                          totals=totals)
        # a step that may end before its duration (a cutoff, |dE/dt|) is read in shorter
        # batches on the virtual clock, so its end is seen close to when it happens (a short is
        # seen at its exact sample either way; only the output-off comes up to a batch later
        # in simulated time)
        interval = judge.interval_s
        window = self._window(interval, judge.early)
        ended = False
        while not ended:
            target = await self._sleep_until(min(t0 + duration,
                                                 _next_read(clock, t0, window, interval)))
            until = target - t0 if target < t0 + duration else math.inf
            samples, ended = await self._read(until)
            verdict = judge.judge(samples)
            await self._act(verdict)
            last = judge.last
            if last is not None:
                self.state.last_e, self.state.last_i = last[1], last[2]
                ctx.progress.sample(ch, *last)
            if verdict.stop is not None or self.end_requested or self.holding:
                if not ended:
                    await self.link.call(self.driver.abort)
                break
        short = judge.pending_short()
        if short is not None:
            await self._act(Verdict([], [], short) if short.ends else Verdict([], [short]))
        row = judge.last_row()
        if row is not None:
            ctx.writer.samples(ctx.run_key, ch, [row])
        new = judge.totals()
        totals.q, totals.e_abs_dt, totals.t_active = new.q, new.e_abs_dt, new.t_active
        totals.n, totals.e_end = new.n, new.e_end
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
        if not getattr(self.driver, "streaming", True):
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
                                 "instrument_timeout", f"{exc}; waiting again")
        rejected = getattr(self.driver, "rejected", None)
        if rejected:
            for why in rejected:
                ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning",
                                 "garbled_package", f"package skipped: {why}")
            rejected.clear()
        return samples, ended

    async def _end_now(self) -> None:
        """An end asked from outside the plan (abort, overpressure): output off, then log."""
        await self._safe_off()
        ctx, reason = self.ctx, self.end_requested or "aborted"
        ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "warning", reason,
                         f"channel {self.channel} ended ({reason}): output off")
        raise ChannelEnded(reason)

    async def _hold(self, interval_s: float = 10.0, q: float = 0.0) -> None:
        """Paused or held by an interlock: open circuit and keep recording, until neither."""
        ctx, ch, clock = self.ctx, self.channel, self.ctx.clock
        status = "paused" if self.pause_requested else "held"
        self.state.status = status
        ctx.writer.channel_status(ctx.run_key, ch, status)
        ctx.writer.event(ctx.run_key, ch, clock.now(), "info", status,
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
            rows = [(t0 + s.t_s, self.state.step_no, self.state.cycle, s.potential_V,
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
        ctx.writer.event(ctx.run_key, ch, clock.now(), "info", "resumed", f"channel {ch} resumed")

    async def _safe_off(self) -> None:
        try:
            await self.link.call(self.driver.output_off)
        except InstrumentError as exc:
            ctx = self.ctx
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "error", "output_off",
                             f"could not switch the output off: {exc}")


def _next_read(clock: Any, t0: float, window: float, interval: float) -> float:
    """When to read next. On the virtual clock: a batch later. On a real clock: at the moment
    the next package is due (the instrument's schedule, t0 + k x interval), so a sample waits
    only for its own transport, not for a read loop that has drifted off the schedule."""
    now = clock.now()
    if clock.is_virtual or window > interval:
        return now + window
    k = math.floor((now - t0) / interval + 1e-9) + 1
    return t0 + k * interval
