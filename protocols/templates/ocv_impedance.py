"""``kind = "ocv_impedance"``: SEI growth at open circuit, followed by impedance.

Per cell: an EIS sweep (unless ``sweep_at_start = false``), then a loop of an open-circuit rest
of ``interval`` followed by a sweep, for ``duration`` (total rest time) or until ``sweeps``
sweeps have been taken. Sweeps default to domain.md's 200 kHz -> 100 mHz, 6 points per decade,
10 mV around the open-circuit potential. A rest may also end early when |dE/dt| falls below
``rest_dEdt_below`` (which brings the next sweep forward). The channel's outcome is R_SEI against
time, from a fit of every sweep.

Example:
    >>> from protocols.model import OcvImpedanceModel
    >>> m = OcvImpedanceModel(kind="ocv_impedance", name="demo", duration="12 h",
    ...     record_interval="1 min", cells=[dict(channel=0, cell_id="A", type="symmetric",
    ...     area="1 cm^2", electrolyte="1 M NaPF6 in diglyme")])
    >>> eis, loop = expand(m).channels[0].steps
    >>> eis.f_start_Hz, eis.f_end_Hz, loop.count, [s.kind for s in loop.steps]
    (200000.0, 0.1, 12, ['rest', 'eis'])
"""

from __future__ import annotations

from protocols.model import EisModel, OcvImpedanceModel
from protocols.plan import ChannelPlan, Eis, EndCondition, Loop, Plan, Rest, Step
from protocols.templates.common import cell_spec, record_rule, safety_for

MIN_CELL_OHM = 1.0  # default max |current| = EIS amplitude / this (an ohm-level cell)


def eis_step(e: EisModel, label: str = "eis") -> Eis:
    """The Plan's Eis step from an ``[eis]`` table."""
    return Eis(f_start_Hz=e.f_start, f_end_Hz=e.f_end, points_per_decade=e.points_per_decade,
               amplitude_V=e.amplitude, dc_V=e.dc, label=label)


def cell_steps(m: OcvImpedanceModel) -> tuple[Step, ...]:
    ends: tuple[EndCondition, ...] = (EndCondition("time", m.interval),)
    if m.rest_dEdt_below is not None:
        ends += (EndCondition("dEdt_below", m.rest_dEdt_below),)
    block = (Rest(ends=ends, record=record_rule(m.record_interval, m.record_dE)),
             eis_step(m.eis))
    first: tuple[Step, ...] = (eis_step(m.eis),) if m.sweep_at_start else ()
    n = m.rests()
    return first + ((Loop(count=n, steps=block, label="sweeps"),) if n else ())


def parameters(m: OcvImpedanceModel) -> dict:
    e = m.eis
    return {
        "interval_s": m.interval,
        "duration_s": m.rests() * m.interval,
        "sweeps": m.rests() + int(m.sweep_at_start),
        "rest_dEdt_below_V_per_s": m.rest_dEdt_below,
        "f_start_Hz": e.f_start, "f_end_Hz": e.f_end, "points_per_decade": e.points_per_decade,
        "amplitude_V": e.amplitude, "dc_V": e.dc,
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
    }


def expand(m: OcvImpedanceModel) -> Plan:
    steps = cell_steps(m)
    channels = tuple(ChannelPlan(cell_spec(c), steps) for c in m.cells)
    safety = safety_for(m.safety, channels, default_i_max_A=m.eis.amplitude / MIN_CELL_OHM)
    return Plan(kind=m.kind, name=m.name, safety=safety, channels=channels,
                parameters=parameters(m), outcome="sei_growth")
