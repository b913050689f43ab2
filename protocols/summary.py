"""A Plan as a person reads it, and its totals (time and charge) per channel.

Totals come from walking the step tree: a constant-current step lasts until its charge end
(Q/|I|) or its time end, whichever is sooner; a rest or constant-potential step lasts its time
end; a loop multiplies its body. A step that may end sooner than that (a strip to a cutoff
potential with a time guard, a rest until |dE/dt| is small, any step with a goto) counts at its
bound and is marked *early*: the totals are then an upper bound. A step whose length only the
instrument or the cell can tell (an EIS sweep, a potential step's charge) is *open-ended*: it
adds nothing, and the totals are a lower bound. ``summarize`` says which.

Example:
    >>> from protocols.load import builtin_protocol, load_protocol
    >>> plan = load_protocol(builtin_protocol("plating_stripping")).plan
    >>> duration_s, charge_C = plan_totals(plan)[0]
    >>> duration_s / 3600, round(charge_C / 3.6, 6)
    (400.0, 452.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from protocols.plan import (
    ChannelPlan,
    ConstantCurrent,
    ConstantPotential,
    Eis,
    EndCondition,
    Loop,
    Plan,
    RecordRule,
    Rest,
    Step,
)

MAH = 3.6  # C per mAh


class Totals(NamedTuple):
    """How long a step (or tree) runs and how much charge it passes (|I|·t, summed)."""

    duration_s: float
    charge_C: float
    open_ended: int = 0  # steps whose length could not be known in advance (counted as 0)
    early: int = 0  # steps that may end before the bound they are counted at

    def times(self, n: int) -> Totals:
        """This total repeated ``n`` times."""
        return Totals(self.duration_s * n, self.charge_C * n, self.open_ended * n,
                      self.early * n)


def total_of(parts: Iterable[Totals]) -> Totals:
    """The sum of several totals, field by field.

    >>> total_of([Totals(1.0, 2.0), Totals(3.0, 4.0, 1)])
    Totals(duration_s=4.0, charge_C=6.0, open_ended=1, early=0)
    """
    d = q = 0.0
    n = k = 0
    for part in parts:
        d, q = d + part.duration_s, q + part.charge_C
        n, k = n + part.open_ended, k + part.early
    return Totals(d, q, n, k)


def _end(ends: Iterable[EndCondition], kind: str) -> float | None:
    values = [e.value for e in ends if e.kind == kind]
    return min(values) if values else None


def _may_end_early(ends: Iterable[EndCondition], bound: str) -> bool:
    """Whether a step can end before its ``bound`` end: another kind of end can fire first,
    or the bound itself leads somewhere other than the next step."""
    return any(e.kind not in (bound, "time", "charge") or (e.kind == bound and e.then != "next")
               for e in ends)


def step_totals(step: Step) -> Totals:
    """Duration and charge of one step (recursively for loops).

    >>> from protocols.plan import RecordRule
    >>> step_totals(ConstantCurrent(-1e-3, (EndCondition("charge", 3.6),), RecordRule(10.0)))
    Totals(duration_s=3600.0, charge_C=3.6, open_ended=0, early=0)
    """
    if isinstance(step, Loop):
        return total_of(step_totals(s) for s in step.steps).times(step.count)
    if isinstance(step, ConstantCurrent):
        limits = {"time": _end(step.ends, "time")}
        charge = _end(step.ends, "charge")
        if charge is not None and step.current_A != 0:
            limits["charge"] = charge / abs(step.current_A)
        known = {k: t for k, t in limits.items() if t is not None}
        if not known:
            return Totals(0.0, 0.0, 1)
        bound = min(known, key=known.__getitem__)
        t = known[bound]
        return Totals(t, t * abs(step.current_A), 0, int(_may_end_early(step.ends, bound)))
    if isinstance(step, (Rest, ConstantPotential)):
        t_end = _end(step.ends, "time")
        open_ended = t_end is None or isinstance(step, ConstantPotential)
        early = not open_ended and _may_end_early(step.ends, "time")
        return Totals(t_end or 0.0, 0.0, int(open_ended), int(early))
    return Totals(0.0, 0.0, 1)  # Eis: its length depends on the instrument


def channel_totals(channel: ChannelPlan) -> Totals:
    """Totals of one channel's whole step tree."""
    return total_of(step_totals(s) for s in channel.steps)


def plan_totals(plan: Plan) -> dict[int, tuple[float, float]]:
    """``{channel: (duration_s, charge_C)}``, for progress and time left.

    Open-ended steps count as zero, so these are lower bounds when a plan has any.
    """
    return {c.cell.channel: channel_totals(c)[:2] for c in plan.channels}


def fmt_current(amps: float) -> str:
    """A current in mA (µA below 10 µA), with its sign.

    >>> fmt_current(-0.00113), fmt_current(2e-6)
    ('-1.13 mA', '+2 µA')
    """
    if abs(amps) < 1e-5:
        return f"{amps * 1e6:+.4g} µA"
    return f"{amps * 1e3:+.4g} mA"


def fmt_duration(seconds: float) -> str:
    """Seconds as s, min or h, whichever reads best.

    >>> fmt_duration(10), fmt_duration(300), fmt_duration(1440000)
    ('10 s', '5 min', '400 h')
    >>> fmt_duration(3600)
    '1 h'
    """
    if seconds < 120:
        return f"{seconds:.4g} s"
    if seconds < 3600:
        return f"{seconds / 60:.4g} min"
    return f"{seconds / 3600:.4g} h"


def fmt_frequency(hz: float) -> str:
    """A frequency with an SI prefix.

    >>> fmt_frequency(2e5), fmt_frequency(0.1), fmt_frequency(50.0), fmt_frequency(1e6)
    ('200 kHz', '100 mHz', '50 Hz', '1 MHz')
    """
    for factor, unit in ((1e6, "MHz"), (1e3, "kHz"), (1.0, "Hz"), (1e-3, "mHz")):
        if hz >= factor:
            return f"{hz / factor:.4g} {unit}"
    return f"{hz * 1e6:.4g} µHz"


_END_WORDS = {
    "time": lambda v: f"after {fmt_duration(v)}",
    "charge": lambda v: f"until {v / MAH:.4g} mAh",
    "potential_above": lambda v: f"until E > {v:.4g} V",
    "potential_below": lambda v: f"until E < {v:.4g} V",
    "current_above": lambda v: f"until |I| > {fmt_current(v)[1:]}",
    "current_below": lambda v: f"until |I| < {fmt_current(v)[1:]}",
    "dEdt_below": lambda v: f"until |dE/dt| < {v * 3.6e6:.4g} mV/h",
}


def fmt_end(end: EndCondition) -> str:
    """One end condition in words.

    >>> fmt_end(EndCondition("charge", 4.068))
    'until 1.13 mAh'
    """
    then = "" if end.then == "next" else f" then {end.then}"
    return _END_WORDS[end.kind](end.value) + then


def fmt_step(step: Step) -> str:
    """One step (not its children) on one line."""
    if isinstance(step, Loop):
        cycles = ", one cycle each" if step.counts_cycles else ""
        name = "" if step.label in ("loop", "cycle", "") else f"{step.label}: "
        return f"{name}repeat {step.count}x{cycles}:"
    if isinstance(step, Eis):
        dc = "open circuit" if step.dc_V is None else f"{step.dc_V:.4g} V"
        return (f"{step.label}: EIS {fmt_frequency(step.f_start_Hz)} -> "
                f"{fmt_frequency(step.f_end_Hz)}, "
                f"{step.points_per_decade}/decade, {step.amplitude_V * 1e3:.3g} mV around {dc}")
    what = {Rest: lambda s: "open circuit",
            ConstantCurrent: lambda s: fmt_current(s.current_A),
            ConstantPotential: lambda s: f"{s.potential_V:.4g} V"}[type(step)](step)
    ends = " or ".join(fmt_end(e) for e in step.ends)
    t = step_totals(step)
    at_most = "at most " if t.early else ""
    took = "" if t.open_ended else f" ({at_most}{fmt_duration(t.duration_s)})"
    return f"{step.label or step.kind}: {what} {ends}{took}"


def step_lines(steps: Iterable[Step], indent: str = "  ") -> list[str]:
    """The step tree as indented lines."""
    lines = []
    for step in steps:
        lines.append(indent + fmt_step(step))
        if isinstance(step, Loop):
            lines.extend(step_lines(step.steps, indent + "  "))
    return lines


def _records(steps: Iterable[Step]) -> list[RecordRule]:
    found: list[RecordRule] = []
    for step in steps:
        rules = _records(step.steps) if isinstance(step, Loop) else [getattr(step, "record", None)]
        found += [r for r in rules if r is not None and r not in found]
    return found


def fmt_record(rule: RecordRule) -> str:
    """A recording rule in words.

    >>> fmt_record(RecordRule(10.0, every_dE_V=0.005))
    'every 10 s or 5 mV'
    """
    parts = [f"every {fmt_duration(rule.every_s)}"]
    if rule.every_dE_V is not None:
        parts.append(f"{rule.every_dE_V * 1e3:.4g} mV")
    if rule.every_dI_A is not None:
        parts.append(fmt_current(rule.every_dI_A)[1:])
    return " or ".join(parts)


def record_lines(steps: Iterable[Step]) -> list[str]:
    """How the channel records, once per distinct rule."""
    return [f"  record: {fmt_record(r)}" for r in _records(steps)]


def channel_lines(channel: ChannelPlan) -> list[str]:
    """A channel: its cell, its steps, its totals."""
    c = channel.cell
    head = f"channel {c.channel}: {c.cell_id} ({c.cell_type}, {c.area_cm2:.4g} cm², {c.electrolyte})"
    return [head, *step_lines(channel.steps), *record_lines(channel.steps),
            total_line(channel_totals(channel))]


def total_line(t: Totals) -> str:
    """A channel's totals in words, saying whether they are a lower or an upper bound.

    >>> total_line(Totals(7200.0, 3.6, early=2))
    '  total: at most 2 h, at most 1 mAh passed (2 steps may end sooner)'
    """
    bound = "" if t.open_ended and t.early else (
        "at least " if t.open_ended else "at most " if t.early else "")
    notes = []
    if t.open_ended:
        notes.append(f"{t.open_ended} open-ended steps not counted")
    if t.early:
        notes.append(f"{t.early} steps may end sooner")
    total = (f"  total: {bound}{fmt_duration(t.duration_s)}, "
             f"{bound}{t.charge_C / MAH:.4g} mAh passed")
    return total + (f" ({'; '.join(notes)})" if notes else "")


def summarize(plan: Plan) -> str:
    """The expanded Plan as text: header, safety, then each channel with its totals.

    >>> from protocols.load import builtin_protocol, load_protocol
    >>> print(summarize(load_protocol(builtin_protocol("plating_stripping")).plan))
    ... # doctest: +ELLIPSIS
    plating_stripping: Na‖Na plating–stripping, glyme vs carbonate
    ...
      total: 400 h, 452 mAh passed
    ...
    """
    s = plan.safety
    lines = [f"{plan.kind}: {plan.name}",
             (f"safety: {s.e_min_V:.4g} V <= E <= {s.e_max_V:.4g} V, "
              f"|I| <= {fmt_current(s.i_max_A)[1:]}")]
    if plan.total_cycles:
        lines.append(f"cycles: {plan.total_cycles}")
    for channel in plan.channels:
        lines += ["", *channel_lines(channel)]
    return "\n".join(lines)
