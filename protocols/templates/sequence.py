"""``kind = "sequence"``: the file's ``[[steps]]`` as the Plan's steps, one tree per cell.

Current densities and areal charges become each cell's currents and charges (× its area);
a step without ``record`` takes the file's ``[record]``; a step without ``label`` gets one made
from its type (``protocols.steps.labels_of``). The file was checked by
``protocols.steps.sequence_problems`` before it gets here.

Example:
    >>> from protocols.steps import SequenceModel
    >>> m = SequenceModel(kind="sequence", name="demo", record={"every": "10 s"},
    ...     cells=[dict(channel=0, cell_id="A", type="symmetric", area="2 cm^2",
    ...                 electrolyte="1 M NaPF6 in diglyme")],
    ...     steps=[{"type": "loop", "count": 3, "counts_cycles": True, "steps": [
    ...         {"type": "current_density", "current_density": "-1 mA/cm^2",
    ...          "half_cycle": "plate", "until": {"areal_charge": "1 mAh/cm^2"}},
    ...         {"type": "current_density", "current_density": "1 mA/cm^2",
    ...          "half_cycle": "strip", "until": {"areal_charge": "1 mAh/cm^2"}}]}])
    >>> plan = expand(m)
    >>> plate = plan.channels[0].steps[0].steps[0]
    >>> plan.total_cycles, plate.label, plate.current_A, plate.ends[0].value
    (3, 'plate', -0.002, 7.2)
"""

from __future__ import annotations

from typing import Any, cast

from protocols.model import CellModel
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
from protocols.steps import (
    EisStep,
    LoopStep,
    PotentialStep,
    RecordModel,
    RestStep,
    SequenceModel,
    labels_of,
    walk,
)
from protocols.templates.common import cell_spec, failure_criteria, safety_for


def record_of(given: RecordModel) -> RecordRule:
    return RecordRule(every_s=given.every, every_dE_V=given.dE, every_dI_A=given.dI)


class _Expander:
    """Turns the file's step models into Plan steps for one cell."""

    def __init__(self, m: SequenceModel, cell: CellModel, labels: dict[int, str]) -> None:
        self.default_record = m.record
        self.area = cell.area
        self.labels = labels

    def steps(self, steps: list[Any]) -> tuple[Step, ...]:
        return tuple(self.step(s) for s in steps)

    def ends(self, step: Any) -> tuple[EndCondition, ...]:
        out = []
        for end in step.until:
            for name, value in end.given():
                if name == "areal_charge":
                    name, value = "charge", value * self.area
                out.append(EndCondition(name, value, end.then))  # type: ignore[arg-type]
        return tuple(out)

    def step(self, s: Any) -> Step:
        label = self.labels[id(s)]
        if isinstance(s, LoopStep):
            return Loop(count=s.count, steps=self.steps(s.steps), counts_cycles=s.counts_cycles,
                        label=label)
        if isinstance(s, EisStep):
            return Eis(f_start_Hz=s.f_start, f_end_Hz=s.f_end,
                       points_per_decade=s.points_per_decade, amplitude_V=s.amplitude,
                       dc_V=s.dc, label=label)
        # never None: a step without its own record and no file default is a problem
        # (steps.sequence_problems), so no plan is built from such a file
        record = record_of(cast(RecordModel, s.record or self.default_record))
        if isinstance(s, RestStep):
            return Rest(ends=self.ends(s), record=record, label=label)
        if isinstance(s, PotentialStep):
            return ConstantPotential(potential_V=s.potential, ends=self.ends(s), record=record,
                                     label=label)
        current = s.current if s.type == "current" else s.current_density * self.area
        return ConstantCurrent(current_A=current, ends=self.ends(s), record=record, label=label,
                               half_cycle=s.half_cycle)


def total_cycles(steps: tuple[Step, ...], repeat: int = 1) -> int:
    """How many cycles the counting loops of a step tree number.

    >>> body = (Loop(2, (), counts_cycles=True),)
    >>> total_cycles((Loop(3, body),))
    6
    """
    n = 0
    for s in steps:
        if isinstance(s, Loop):
            n += (s.count * repeat if s.counts_cycles else 0) + total_cycles(
                s.steps, repeat * s.count)
    return n


def expand(m: SequenceModel) -> Plan:
    labels = labels_of(list(walk(m.steps)))
    channels = tuple(ChannelPlan(cell_spec(c), _Expander(m, c, labels).steps(m.steps))
                     for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels),
                channels=channels, total_cycles=total_cycles(channels[0].steps),
                failure=failure_criteria(m.failure), outcome=m.outcome,
                expected_ends=tuple(m.expected_ends))
