"""The Plan: what a protocol file expands into, as plain data in SI units.

A Plan can be listed, summed and checked without touching hardware; the engine executes it.
Every template and every ``kind = "sequence"`` file ends up here.

Sign convention (as in the Battery Data Format): a positive current is anodic at the working
electrode, i.e. it strips Na from the WE (it charges a Na||Cu half-cell); plating Na onto the
WE is a negative current. E is the WE potential against the counter electrode.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

CellType = Literal["symmetric", "na_cu", "na_al", "full"]
EndKind = Literal[
    "time", "charge", "potential_above", "potential_below",
    "current_above", "current_below", "dEdt_below",
]


@dataclass(frozen=True)
class CellSpec:
    """The cell on one channel, as written in the protocol file."""

    channel: int
    cell_id: str
    cell_type: CellType
    area_cm2: float
    electrolyte: str
    headspace_mL: float | None = None
    notes: str = ""


@dataclass(frozen=True)
class EndCondition:
    """Ends a step when ``kind`` crosses ``value`` (SI: s, C, V, A, V/s).

    ``charge`` and ``current_*`` compare magnitudes. ``then`` is what comes next:
    ``"next"`` (default), a step label (a goto), or ``"end:<outcome>"`` to end the channel.
    """

    kind: EndKind
    value: float
    then: str = "next"


@dataclass(frozen=True)
class RecordRule:
    """Record a sample every ``every_s`` seconds, or sooner when E moved ``every_dE_V`` or I
    moved ``every_dI_A`` since the last recorded sample (whichever comes first)."""

    every_s: float
    every_dE_V: float | None = None
    every_dI_A: float | None = None


@dataclass(frozen=True)
class Rest:
    """Open circuit until an end condition (always at least a time limit)."""

    ends: tuple[EndCondition, ...]
    record: RecordRule
    label: str = "rest"
    kind: Literal["rest"] = "rest"


@dataclass(frozen=True)
class ConstantCurrent:
    current_A: float
    ends: tuple[EndCondition, ...]
    record: RecordRule
    label: str = ""
    # "plate" / "strip": this step is one half of a plating-stripping cycle
    half_cycle: Literal["plate", "strip"] | None = None
    kind: Literal["constant_current"] = "constant_current"


@dataclass(frozen=True)
class ConstantPotential:
    potential_V: float
    ends: tuple[EndCondition, ...]
    record: RecordRule
    label: str = ""
    kind: Literal["constant_potential"] = "constant_potential"


@dataclass(frozen=True)
class Eis:
    """A potentiostatic impedance sweep around ``dc_V`` (None: the open-circuit potential)."""

    f_start_Hz: float
    f_end_Hz: float
    points_per_decade: int
    amplitude_V: float
    dc_V: float | None = None
    label: str = "eis"
    kind: Literal["eis"] = "eis"


@dataclass(frozen=True)
class Loop:
    """Repeat ``steps`` ``count`` times. A loop that ``counts_cycles`` starts a new cycle
    number (global to the channel) at each of its iterations."""

    count: int
    steps: tuple[Step, ...]
    counts_cycles: bool = False
    label: str = "loop"
    kind: Literal["loop"] = "loop"


Step = Rest | ConstantCurrent | ConstantPotential | Eis | Loop


@dataclass(frozen=True)
class Safety:
    """Limits that hold for the whole run, checked on every sample and armed in the instrument."""

    e_min_V: float
    e_max_V: float
    i_max_A: float


@dataclass(frozen=True)
class FailureCriteria:
    """Failures the engine detects from the science (domain.md); None switches one off.

    Short (during constant-current steps only): a hard short when |E| falls below
    ``short_below_V`` (the cell is ~ I x R_short); a soft short when |E| drops by more than
    ``short_drop_fraction`` of its value within ``short_drop_window_s`` but stays above the
    hard threshold. Divergence: a half-cycle whose mean |E| exceeds ``divergence_factor`` x the
    mean over cycles 1..``divergence_reference_cycles`` (checked after those cycles).
    """

    short_below_V: float | None = None
    short_drop_fraction: float | None = None
    short_drop_window_s: float = 60.0
    soft_short_ends: bool = True
    divergence_factor: float | None = None
    divergence_reference_cycles: int = 5


@dataclass(frozen=True)
class ChannelPlan:
    cell: CellSpec
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Plan:
    kind: str
    name: str
    safety: Safety
    channels: tuple[ChannelPlan, ...]
    total_cycles: int = 0
    parameters: dict = field(default_factory=dict)
    failure: FailureCriteria = field(default_factory=FailureCriteria)
    # what rig.analysis.outcomes computes for each channel when it ends (None: nothing)
    outcome: str | None = None
    # channel end reasons that are this protocol's planned result (a CCD run ends on a short)
    expected_ends: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def step_from_dict(d: dict) -> Step:
    """Rebuild a step from ``dataclasses.asdict`` output (a stored plan)."""
    kind = d["kind"]
    d = dict(d)
    if "ends" in d:
        d["ends"] = tuple(EndCondition(**e) for e in d["ends"])
    if "record" in d:
        d["record"] = RecordRule(**d["record"])
    if kind == "loop":
        d["steps"] = tuple(step_from_dict(s) for s in d["steps"])
        return Loop(**d)
    cls = {"rest": Rest, "constant_current": ConstantCurrent,
           "constant_potential": ConstantPotential, "eis": Eis}[kind]
    return cls(**d)


def plan_from_dict(d: dict) -> Plan:
    channels = tuple(
        ChannelPlan(CellSpec(**c["cell"]), tuple(step_from_dict(s) for s in c["steps"]))
        for c in d["channels"]
    )
    return Plan(d["kind"], d["name"], Safety(**d["safety"]), channels,
                d.get("total_cycles", 0), d.get("parameters", {}),
                FailureCriteria(**d.get("failure", {})), d.get("outcome"),
                tuple(d.get("expected_ends", ())))


def plan_from_json(text: str) -> Plan:
    return plan_from_dict(json.loads(text))
