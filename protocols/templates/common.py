"""Pieces every template needs: cells, safety limits, planned currents.

Example:
    >>> from protocols.plan import ConstantCurrent, EndCondition, RecordRule
    >>> step = ConstantCurrent(-1e-3, (EndCondition("charge", 3.6),), RecordRule(10.0))
    >>> largest_current((step,))
    0.001
"""

from __future__ import annotations

from collections.abc import Iterable

from protocols.model import CellModel, SafetyModel
from protocols.plan import CellSpec, ChannelPlan, ConstantCurrent, Loop, Safety, Step

DEFAULT_WINDOW_V = (-1.0, 1.0)  # domain.md: |E| <= 1 V for Na||Na plating-stripping
CURRENT_MARGIN = 2.0  # default max |current| = this x the largest planned |current|


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
               window_V: tuple[float, float] = DEFAULT_WINDOW_V) -> Safety:
    """The run's Safety: the file's ``[safety]`` values, the kind's defaults for the rest.

    >>> safety_for(SafetyModel(), []).e_max_V
    1.0
    """
    planned = max((largest_current(c.steps) for c in channels), default=0.0)
    i_max = given.max_current if given.max_current is not None else CURRENT_MARGIN * planned
    e_min = given.min_potential if given.min_potential is not None else window_V[0]
    e_max = given.max_potential if given.max_potential is not None else window_V[1]
    return Safety(e_min_V=e_min, e_max_V=e_max, i_max_A=i_max)
