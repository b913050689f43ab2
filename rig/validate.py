"""A plan checked against the instruments that will run it, before a cell is touched: every
current within the channel's range, the safety window within what the instrument can apply,
every step of a kind the instrument runs (``Ranges.modes``), every EIS frequency within its
``max_frequency_Hz``, every acquisition interval at or above its ``min_interval_s`` and every
step within its ``max_step_s``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from drivers.base import Ranges
from protocols.bounds import step_duration
from protocols.plan import ConstantCurrent, ConstantPotential, Eis, Loop, Plan, Rest, Step
from rig.engine.judge import acquire_every

MODE_OF = {ConstantCurrent: "current", ConstantPotential: "potential", Rest: "open_circuit",
           Eis: "eis"}
"""Which of ``drivers.base.MODES`` a step needs."""
MODE_TEXT = {"current": "constant-current step", "potential": "potential step",
             "open_circuit": "open-circuit rest", "eis": "EIS step"}


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
        problems += _capability_problems(list(_steps(cp.steps)), r, where, name)
        problems += _timing_problems(list(_steps(cp.steps)), r, where, name)
    return problems


def _timing_problems(steps: list[Step], r: Ranges, where: str, name: str) -> list[str]:
    """Acquisition faster than the instrument measures; a step longer than it can time."""
    problems = []
    timed = [s for s in steps if isinstance(s, (ConstantCurrent, ConstantPotential, Rest))]
    fast = [s for s in timed if acquire_every(s.record) < r.min_interval_s * (1 - 1e-9)]
    if fast:
        every = min(acquire_every(s.record) for s in fast)
        problems.append(f"{where}: {_labels(fast, 'step')} acquire every {every * 1e3:g} ms, "
                        f"faster than {name} measures (at most every "
                        f"{r.min_interval_s * 1e3:g} ms); raise the record interval")
    output_on = [s for s in timed if not isinstance(s, Rest)]
    slow = [s for s in output_on if acquire_every(s.record) > r.max_interval_s * (1 + 1e-9)]
    if slow:
        every = max(acquire_every(s.record) for s in slow)
        problems.append(f"{where}: {_labels(slow, 'step')} acquire every {every:g} s, less "
                        f"often than {name} can keep its output on without word from the rig "
                        f"(the station's host_watchdog, {r.max_interval_s:g} s); record more "
                        "often, or lengthen [interlocks] host_watchdog")
    durations = [(s, step_duration(s)) for s in timed]
    long = [s for s, t in durations if t is not None and t > r.max_step_s]
    if long:
        problems.append(f"{where}: {_labels(long, 'step')} last longer than the "
                        f"{r.max_step_s / 3600:g} h {name} can time in one step")
    return problems


def _labels(steps: Sequence[Step], what: str) -> str:
    """``potential step "hold"``, ``EIS steps "eis_before", "eis_after"``."""
    labels = list(dict.fromkeys(f'"{s.label}"' for s in steps))
    return f"{what}{'s' if len(labels) > 1 else ''} {', '.join(labels)}"


def _capability_problems(steps: list[Step], r: Ranges, where: str, name: str) -> list[str]:
    """Steps of a kind the instrument does not run; EIS sweeps above its highest frequency."""
    problems = []
    for mode, text in MODE_TEXT.items():
        needing = [s for s in steps if MODE_OF[type(s)] == mode]
        if needing and mode not in r.modes:
            problems.append(f"{where}: {_labels(needing, text)} cannot run on {name} (it runs "
                            f"only {', '.join(MODE_TEXT.get(m, m) + 's' for m in r.modes)})")
    if r.max_frequency_Hz is not None and "eis" in r.modes:
        too_high = [s for s in steps if isinstance(s, Eis)
                    and max(s.f_start_Hz, s.f_end_Hz) > r.max_frequency_Hz]
        if too_high:
            f = max(max(s.f_start_Hz, s.f_end_Hz) for s in too_high)
            problems.append(f"{where}: {_labels(too_high, 'EIS step')} sweeps up to "
                            f"{f / 1e3:g} kHz, above the {r.max_frequency_Hz / 1e3:g} kHz "
                            f"maximum of {name}")
    if r.min_frequency_Hz is not None and "eis" in r.modes:
        too_low = [s for s in steps if isinstance(s, Eis)
                   and min(s.f_start_Hz, s.f_end_Hz) < r.min_frequency_Hz * (1 - 1e-9)]
        if too_low:
            f = min(min(s.f_start_Hz, s.f_end_Hz) for s in too_low)
            problems.append(f"{where}: {_labels(too_low, 'EIS step')} sweeps down to {f:g} Hz, "
                            f"a point longer (3 periods) than {name} can keep its output on "
                            "without word from the rig (the station's host_watchdog); start "
                            f"at {r.min_frequency_Hz:.3g} Hz or above, or lengthen "
                            "[interlocks] host_watchdog")
    return problems
