"""A plan checked against the instruments that will run it, before a cell is touched: every
current within the channel's range, the safety window within what the instrument can apply."""

from __future__ import annotations

from collections.abc import Iterator

from drivers.base import Ranges
from protocols.plan import ConstantCurrent, ConstantPotential, Loop, Plan, Step


def _steps(steps: tuple[Step, ...]) -> Iterator[Step]:
    for s in steps:
        if isinstance(s, Loop):
            yield from _steps(s.steps)
        else:
            yield s


def check_ranges(plan: Plan, ranges: dict[int, tuple[str, Ranges]], source: str) -> list[str]:
    """Problems as ``<file>: cells[k]: ...`` lines; ``ranges``: channel -> (instrument, Ranges).

    >>> check_ranges(plan, {0: ("EmStat4", Ranges(0.03, 3.0))}, "x.toml")
    []
    """
    problems = []
    for k, cp in enumerate(plan.channels):
        cell = cp.cell
        where = f"{source}: cells[{k}] ({cell.cell_id}, channel {cell.channel})"
        if cell.channel not in ranges:
            problems.append(f"{where}: the station has no channel {cell.channel} "
                            f"(it has {', '.join(map(str, sorted(ranges))) or 'none'})")
            continue
        name, r = ranges[cell.channel]
        currents = [abs(s.current_A) for s in _steps(cp.steps) if isinstance(s, ConstantCurrent)]
        if currents and max(currents) > r.max_current_A:
            i = max(currents)
            problems.append(
                f"{where}: current {i * 1e3:.4g} mA ({i * 1e3 / cell.area_cm2:.4g} mA/cm^2 x "
                f"{cell.area_cm2:g} cm^2) exceeds the {r.max_current_A * 1e3:g} mA range of "
                f"{name}")
        potentials = [abs(s.potential_V) for s in _steps(cp.steps)
                      if isinstance(s, ConstantPotential)]
        window = max(abs(plan.safety.e_min_V), abs(plan.safety.e_max_V))
        if max(potentials + [window]) > r.max_potential_V:
            problems.append(f"{where}: potentials up to {max(potentials + [window]):g} V exceed "
                            f"the +-{r.max_potential_V:g} V of {name}")
    return problems
