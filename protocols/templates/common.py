"""Pieces every template needs: cells, safety limits, failure criteria, half-cycles, ladders.

Example:
    >>> step = half_cycle(-1e-3, 3.6, "plate", RecordRule(10.0))
    >>> largest_current((step,)), step.label, step.ends
    (0.001, 'plate', (EndCondition(kind='charge', value=3.6, then='next'),))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from protocols.model import CellModel, FailureModel, SafetyModel
from protocols.plan import (
    CellSpec,
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    FailureCriteria,
    Loop,
    RecordRule,
    Rest,
    Safety,
    Step,
)

DEFAULT_WINDOW_V = (-1.0, 1.0)  # domain.md: |E| <= 1 V for Na||Na plating-stripping
CURRENT_MARGIN = 2.0  # default max |current| = this x the largest planned |current|
NO_CURRENT_I_MAX_A = 1e-3  # default max |current| when no current is planned (a rests-only
# sequence): 2 x 0 A would trip on the first reading's noise

_FAILURE_FIELDS = {  # file field -> FailureCriteria field
    "short_below": "short_below_V", "short_drop_fraction": "short_drop_fraction",
    "short_drop_window": "short_drop_window_s", "soft_short_ends": "soft_short_ends",
    "divergence_factor": "divergence_factor",
    "divergence_reference_cycles": "divergence_reference_cycles",
}
_OFF_WHEN_ZERO = ("short_below_V", "short_drop_fraction", "divergence_factor")


def cell_spec(cell: CellModel) -> CellSpec:
    """The file's ``[[cells]]`` table as the Plan's CellSpec.

    >>> cell_spec(CellModel(channel=0, cell_id="A", type="symmetric", area="1 cm^2",
    ...                     electrolyte="x")).area_cm2
    1.0
    """
    return CellSpec(channel=cell.channel, cell_id=cell.cell_id, cell_type=cell.type,
                    area_cm2=cell.area, electrolyte=cell.electrolyte,
                    headspace_mL=cell.headspace, notes=cell.notes)


def largest_current(steps: Iterable[Step]) -> float:
    """The largest |current| any constant-current step in ``steps`` (recursively) asks for."""
    largest = 0.0
    for step in steps:
        if isinstance(step, Loop):
            largest = max(largest, largest_current(step.steps))
        elif isinstance(step, ConstantCurrent):
            largest = max(largest, abs(step.current_A))
    return largest


def safety_for(given: SafetyModel, channels: Iterable[ChannelPlan],
               window_V: tuple[float, float] = DEFAULT_WINDOW_V,
               default_i_max_A: float | None = None) -> Safety:
    """The run's Safety: the file's ``[safety]`` values, the kind's defaults for the rest.

    The default max |current| is twice the largest planned current, or ``default_i_max_A``
    when the kind plans none it can know (open circuit and EIS), or 1 mA when nothing plans a
    current at all (never 0 A).

    >>> safety_for(SafetyModel(), []).e_max_V, safety_for(SafetyModel(), []).i_max_A
    (1.0, 0.001)
    """
    planned = max((largest_current(c.steps) for c in channels), default=0.0)
    default = CURRENT_MARGIN * planned if default_i_max_A is None else default_i_max_A
    if not default > 0:
        default = NO_CURRENT_I_MAX_A
    i_max = given.max_current if given.max_current is not None else default
    e_min = given.min_potential if given.min_potential is not None else window_V[0]
    e_max = given.max_potential if given.max_potential is not None else window_V[1]
    return Safety(e_min_V=e_min, e_max_V=e_max, i_max_A=i_max)


def window_of(given: SafetyModel, window_V: tuple[float, float]) -> tuple[float, float]:
    """The potential window the run will have (file values over the kind's defaults)."""
    return (given.min_potential if given.min_potential is not None else window_V[0],
            given.max_potential if given.max_potential is not None else window_V[1])


NO_FAILURE_CRITERIA = FailureCriteria()
SHORT_ASR_OHM_CM2 = 10.0
"""Default hard-short threshold as an area-specific resistance: a shorted cell reads
|E| ~ I x R_short, well under 1 Ohm cm^2; a healthy glyme cell about 20 Ohm cm^2 from 0.1 to
5 mA/cm^2 (Rs + R_SEI + kinetics; a carbonate far more). An absolute threshold cannot serve that
range: 5 mV is a healthy glyme cell at 0.1 mA/cm^2, and above a hard short at 5 mA/cm^2."""
SHORT_BELOW_MAX_V = 0.005  # never above 5 mV: a hard short of a few-ohm shunt stays under it


def default_short_below(j_min_A_cm2: float) -> float:
    """The default hard-short threshold (V) for a run whose lowest current density is
    ``j_min_A_cm2``: ``SHORT_ASR_OHM_CM2`` x j, at most 5 mV.

    >>> default_short_below(0.1e-3), default_short_below(2e-3)
    (0.001, 0.005)
    """
    return min(SHORT_BELOW_MAX_V, SHORT_ASR_OHM_CM2 * j_min_A_cm2)


def failure_criteria(given: FailureModel | None,
                     defaults: FailureCriteria = NO_FAILURE_CRITERIA,
                     j_min_A_cm2: float | None = None) -> FailureCriteria:
    """The kind's default criteria with the file's ``[failure]`` values over them; a value of
    0 switches a criterion off. ``short_below_resistance`` becomes a potential at the run's
    lowest current density ``j_min_A_cm2`` (the strictest: a higher current only raises |E|).

    >>> failure_criteria(FailureModel(short_below="5 mV")).short_below_V
    0.005
    >>> failure_criteria(FailureModel(short_below="0 V"), FailureCriteria(0.005)).short_below_V
    """
    if given is None:
        return defaults
    changes: dict = {}
    for name, target in _FAILURE_FIELDS.items():
        value = getattr(given, name)
        if value is None:
            continue
        changes[target] = None if (target in _OFF_WHEN_ZERO and value == 0) else value
    asr = given.short_below_resistance
    if asr is not None and j_min_A_cm2 is not None:
        changes["short_below_V"] = asr * j_min_A_cm2
    return dataclasses.replace(defaults, **changes)


def record_rule(every_s: float, dE_V: float | None = None) -> RecordRule:
    """How often to record: every ``every_s``, or sooner when E moved ``dE_V``."""
    return RecordRule(every_s=every_s, every_dE_V=dE_V)


def rest(seconds: float, record: RecordRule, label: str = "rest") -> Rest:
    """An open-circuit rest of ``seconds``."""
    return Rest(ends=(EndCondition("time", seconds),), record=record, label=label)


def half_cycle(current_A: float, charge_C: float, which: str, record: RecordRule,
               label: str | None = None) -> ConstantCurrent:
    """One half-cycle: ``current_A`` until ``charge_C`` has passed.

    >>> half_cycle(-1e-3, 3.6, "plate", RecordRule(10.0)).half_cycle
    'plate'
    """
    return ConstantCurrent(current_A=current_A, ends=(EndCondition("charge", charge_C),),
                           record=record, label=label or which,
                           half_cycle=which)  # type: ignore[arg-type]


def cycles_loop(count: int, current_A: float, charge_C: float, record: RecordRule,
                label: str = "cycle") -> Loop:
    """``count`` cycles of plate then strip at ``current_A`` (magnitude), ``charge_C`` each."""
    body = (half_cycle(-abs(current_A), charge_C, "plate", record),
            half_cycle(abs(current_A), charge_C, "strip", record))
    return Loop(count=count, steps=body, counts_cycles=True, label=label)


def ladder(rungs: list[tuple[float, int]], area_cm2: float, charge_C: float,
           record: RecordRule) -> tuple[Loop, ...]:
    """One counting loop per rung ``(current density A/cm², cycles)``; the engine numbers
    cycles across them (the second rung's first cycle follows the first rung's last).

    >>> [(lp.label, lp.count) for lp in ladder([(5e-4, 10), (1e-3, 5)], 1.0, 3.6,
    ...                                          RecordRule(10.0))]
    [('rate_1', 10), ('rate_2', 5)]
    """
    if len(rungs) == 1:
        j, n = rungs[0]
        return (cycles_loop(n, j * area_cm2, charge_C, record),)
    return tuple(cycles_loop(n, j * area_cm2, charge_C, record, label=f"rate_{k}")
                 for k, (j, n) in enumerate(rungs, 1))


def rung_table(rungs: list[tuple[float, int]]) -> list[dict]:
    """The rungs with their global cycle numbers, for ``Plan.parameters`` (JSON-safe).

    >>> rung_table([(5e-4, 2), (1e-3, 3)])[1]
    {'current_density_A_per_cm2': 0.001, 'cycles': 3, 'first_cycle': 3, 'last_cycle': 5}
    """
    out, first = [], 1
    for j, n in rungs:
        out.append({"current_density_A_per_cm2": j, "cycles": n, "first_cycle": first,
                    "last_cycle": first + n - 1})
        first += n
    return out


def cell_rows(channels: Iterable[ChannelPlan]) -> list[dict]:
    """Each channel's cell in brief, for ``Plan.parameters``."""
    return [{"channel": c.cell.channel, "cell_id": c.cell.cell_id, "area_cm2": c.cell.area_cm2,
             "headspace_mL": c.cell.headspace_mL} for c in channels]
