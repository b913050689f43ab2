"""One channel runs its plan: a step is start -> sample loop -> end.

In the sample loop, safety is checked on every sample before anything else: a trip switches the
output off first and logs second. Charge, end conditions and the recording rule come after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.base import InstrumentError, Potentiostat, Sample
from protocols.plan import ChannelPlan, ConstantCurrent, EndCondition, Loop, Rest, Step
from rig.engine.link import Link
from rig.engine.recording import Recorder

if TYPE_CHECKING:
    from rig.engine.run import RunContext


class ChannelEnded(Exception):
    """Ends the channel's plan early with a reason (safety_window, aborted, instrument_fault...)."""

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


class ChannelRunner:
    def __init__(self, ctx: "RunContext", plan: ChannelPlan, driver: Potentiostat,
                 link: Link) -> None:
        self.ctx = ctx
        self.plan = plan
        self.channel = plan.cell.channel
        self.driver = driver
        self.link = link
        self.state = ChannelState()

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
        except InstrumentError as exc:
            await self._safe_off()
            ctx.writer.event(ctx.run_key, ch, ctx.clock.now(), "error", "instrument_fault",
                             f"{type(exc).__name__}: {exc}")
            reason = "instrument_fault"
        self.state.status, self.state.end_reason = "ended", reason
        ctx.writer.channel_status(ctx.run_key, ch, "ended", end_reason=reason)
        ctx.writer.event(ctx.run_key, ch, ctx.clock.now(),
                         "info" if reason == "completed" else "warning", "channel_end",
                         f"channel {ch} ({self.plan.cell.cell_id}) ended: {reason}")
        ctx.progress.channel_ended(ch, reason)
        return reason

    async def _run_steps(self, steps: tuple[Step, ...]) -> None:
        for index, step in enumerate(steps):
            self.state.path.append(index)
            try:
                if isinstance(step, Loop):
                    await self._run_loop(step)
                else:
                    result = await self._run_step(step)
                    if result.then.startswith("end:"):
                        raise ChannelEnded(result.then[4:])
            finally:
                self.state.path.pop()

    async def _run_loop(self, loop: Loop) -> None:
        self.state.loop_iterations.append(0)
        try:
            for k in range(loop.count):
                self.state.loop_iterations[-1] = k
                if loop.counts_cycles:
                    self.state.cycle += 1
                await self._run_steps(loop.steps)
        finally:
            self.state.loop_iterations.pop()

    # ---- one step ----------------------------------------------------------------------------
    async def _run_step(self, step: Step) -> StepResult:
        ctx = self.ctx
        self.state.step_no += 1
        t_start = ctx.clock.now()
        if isinstance(step, ConstantCurrent):
            result = await self._run_current(step)
        elif isinstance(step, Rest):
            result = await self._run_rest(step)
        else:
            raise ChannelEnded("unsupported_step", f"{step.kind} steps are not supported yet")
        t_end = ctx.clock.now()
        ctx.writer.step_end(ctx.run_key, self.channel, {
            "step": self.state.step_no, "cycle": self.state.cycle, "label": step.label,
            "kind": step.kind, "half_cycle": getattr(step, "half_cycle", None),
            "t_start": t_start, "t_end": t_end, "end_reason": result.end_reason,
            "charge_C": result.charge_C, "e_mean_abs_V": result.e_mean_abs_V,
            "e_end_V": result.e_end_V, "n_samples": result.n_samples,
        })
        ctx.writer.checkpoint(ctx.run_key, self.channel, t_end, self.checkpoint_state())
        self._report_half_cycle(step, result)
        return result

    def checkpoint_state(self) -> dict[str, Any]:
        s = self.state
        return {"step_no": s.step_no, "cycle": s.cycle, "path": list(s.path),
                "loop_iterations": list(s.loop_iterations)}

    def _report_half_cycle(self, step: Step, result: StepResult) -> None:
        half = getattr(step, "half_cycle", None)
        if half == "plate":
            self.state.plate_C, self.state.plate_eta_V = abs(result.charge_C), result.e_mean_abs_V
        elif half == "strip":
            plated = self.state.plate_C
            ce = abs(result.charge_C) / plated if plated > 0 else math.nan
            self.ctx.progress.cycle_done(self.channel, self.state.cycle, {
                "plated_C": plated, "stripped_C": abs(result.charge_C), "ce": ce,
                "eta_plate_V": self.state.plate_eta_V, "eta_strip_V": result.e_mean_abs_V,
            })

    async def _run_current(self, step: ConstantCurrent) -> StepResult:
        i_abs = abs(step.current_A)
        duration = _time_limit(step.ends, i_abs)
        safety = self.ctx.safety
        interval = step.record.every_s
        await self.link.call(self.driver.start_current, step.current_A, interval, duration,
                             safety.e_min_V, safety.e_max_V)
        return await self._stream(step, duration, interval)

    async def _run_rest(self, step: Rest) -> StepResult:
        duration = _time_limit(step.ends, 0.0)
        interval = step.record.every_s
        await self.link.call(self.driver.start_open_circuit, interval, duration)
        return await self._stream(step, duration, interval)

    async def _stream(self, step: Step, duration: float, interval: float) -> StepResult:
        """Read the running step's samples until it ends; returns its statistics."""
        ctx, ch = self.ctx, self.channel
        clock, writer, run_key = ctx.clock, ctx.writer, ctx.run_key
        safety = ctx.safety
        e_min, e_max, i_max = safety.e_min_V, safety.e_max_V, safety.i_max_A
        ends = _sample_ends(step.ends)
        charge_end = _charge_end(step.ends)
        recorder = Recorder(step.record)
        step_no, cycle = self.state.step_no, self.state.cycle
        t0 = clock.now()
        window = ctx.read_window(interval)
        q = e_abs_dt = 0.0
        last_ts, e, i, n = 0.0, math.nan, 0.0, 0
        end_reason: str | None = None
        then = "next"
        ended = False
        while not ended:
            target = min(t0 + duration, clock.now() + window)
            await clock.sleep_until(target)
            samples, ended = await self.link.call(self.driver.read_samples,
                                                  max(target - t0, 0.0) if target < t0 + duration
                                                  else math.inf)
            rows = []
            for s in samples:
                e, i, ts = s.potential_V, s.current_A, s.t_s
                if not (e_min <= e <= e_max) or abs(i) > i_max or s.overload:
                    await self._trip(s, t0)  # output off first, then the event
                dt = ts - last_ts
                q += i * dt
                e_abs_dt += abs(e) * dt
                last_ts = ts
                n += 1
                t = t0 + ts
                if recorder.wants(ts, e, i):
                    rows.append((t, step_no, cycle, e, i, q))
                hit = _first_end(ends, e, i) if ends else None
                if hit is None and charge_end is not None and abs(q) >= charge_end.value:
                    hit = charge_end
                if hit is not None:
                    end_reason, then = hit.kind, hit.then
                    if not ended:
                        await self.link.call(self.driver.abort)
                        ended = True
                    break
            if rows:
                writer.samples(run_key, ch, rows)
            if n:
                self.state.last_e, self.state.last_i = e, i
                ctx.progress.sample(ch, t0 + last_ts, e, i)
        if n and recorder.force(last_ts, e, i):
            writer.samples(run_key, ch, [(t0 + last_ts, step_no, cycle, e, i, q)])
        if end_reason is None:
            end_reason = "time" if last_ts >= duration - 1e-6 else "instrument_stopped"
            if charge_end is not None and end_reason == "time":
                end_reason = "charge"
        return StepResult(end_reason, q, e_abs_dt / last_ts if last_ts > 0 else math.nan,
                          e, n, then)

    async def _trip(self, s: Sample, t0: float) -> None:
        await self._safe_off()
        ctx = self.ctx
        sf = ctx.safety
        ctx.writer.event(ctx.run_key, self.channel, t0 + s.t_s, "alarm", "safety_trip",
                         f"E={s.potential_V:.4f} V, I={s.current_A * 1e3:.4f} mA outside the "
                         f"safety limits [{sf.e_min_V:g}, {sf.e_max_V:g}] V, "
                         f"|I| <= {sf.i_max_A * 1e3:g} mA: output off")
        raise ChannelEnded("safety_window")

    async def _safe_off(self) -> None:
        try:
            await self.link.call(self.driver.output_off)
        except InstrumentError as exc:
            ctx = self.ctx
            ctx.writer.event(ctx.run_key, self.channel, ctx.clock.now(), "error", "output_off",
                             f"could not switch the output off: {exc}")


def _time_limit(ends: tuple[EndCondition, ...], i_abs: float) -> float:
    """The step's planned duration: its time end, or its charge end at constant current."""
    limits = [c.value for c in ends if c.kind == "time"]
    if i_abs > 0:
        limits += [c.value / i_abs for c in ends if c.kind == "charge"]
    if not limits:
        raise ChannelEnded("bad_plan", "a step has neither a time nor a charge limit")
    return min(limits)


def _charge_end(ends: tuple[EndCondition, ...]) -> EndCondition | None:
    return next((c for c in ends if c.kind == "charge"), None)


def _sample_ends(ends: tuple[EndCondition, ...]) -> tuple[EndCondition, ...]:
    return tuple(c for c in ends if c.kind in
                 ("potential_above", "potential_below", "current_above", "current_below"))


def _first_end(ends: tuple[EndCondition, ...], e: float, i: float) -> EndCondition | None:
    for c in ends:
        k = c.kind
        if ((k == "potential_above" and e >= c.value) or (k == "potential_below" and e <= c.value)
                or (k == "current_above" and abs(i) >= c.value)
                or (k == "current_below" and abs(i) <= c.value)):
            return c
    return None
