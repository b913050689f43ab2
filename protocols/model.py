"""The protocol file as pydantic models: what a user may write, checked field by field.

Every file has ``kind``, ``name``, an optional ``description``, an optional ``[safety]`` table
and one ``[[cells]]`` table per channel; the other top-level fields belong to the kind. This
module holds those shared tables and the template kinds; ``protocols.steps`` holds the explicit
``[[steps]]`` of ``kind = "sequence"``, and ``protocols.kinds`` joins them all into
``ProtocolFile``, a union discriminated on ``kind``. Unknown fields are errors
(``extra="forbid"``), so a typo never silently falls back to a default, and numbers are strict
(``cycles = "200"`` and ``cycles = true`` are errors, not quietly converted).

Quantities are parsed by ``protocols.units`` and held as floats in canonical units (A, V, s, C,
A/cm², C/cm², cm², mL, Hz). Checks that span fields (unique channels, safety window order, "this
or that but not both") are in ``problems()``, which returns ``(field path, message)`` pairs
instead of raising, so the loader can report them all at once with their paths.

Example:
    >>> m = PlatingStrippingModel(kind="plating_stripping", name="demo",
    ...     current_density="1 mA/cm^2", areal_capacity="1 mAh/cm^2", cycles=2,
    ...     record_interval="10 s",
    ...     cells=[{"channel": 0, "cell_id": "A", "type": "symmetric",
    ...             "area": "1.13 cm^2", "electrolyte": "1 M NaPF6 in diglyme"}])
    >>> m.cycles, m.cells[0].area, m.rungs()
    (2, 1.13, [(0.001, 2)])
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.bounds import MAX_CELLS, MAX_CHANNEL, MAX_COUNT, CellId, Name, Note
from protocols.units import (
    Area,
    AreaResistance,
    ArealCapacity,
    Frequency,
    PositiveCurrent,
    PositiveCurrentDensity,
    PositivePotential,
    Potential,
    PotentialRate,
    RecordInterval,
    Time,
    Volume,
)

Problem = tuple[str, str]  # (field path such as "cells[1].channel", message)

PLANNED_KINDS: tuple[str, ...] = ()
"""Kinds the design promises but that are not implemented yet (named in error messages)."""

OUTCOMES = ("reservoir_ce", "per_cycle_ce", "ccd", "failure_cycle", "sei_growth",
            "gas_per_cycle")
"""The named results ``rig.analysis.outcomes.compute_outcome`` knows (``Plan.outcome``)."""

CE_WINDOW_V = (-1.0, 3.0)
"""Default window for CE: when the Na on the collector runs out, E jumps within a second to the
bare collector's branch (2.3-2.9 V, rig.sim.cell); the cutoff is only seen if the window lets the
jump through. 3 V stays below Cu oxidation (~3.2 V vs Na) and inside an EmStat4's range."""
STRIP_GUARD = 1.25  # a strip to the cutoff may pass at most this x the charge plated before it

MAX_RUNGS = 50  # a current-density ramp longer than this is a typo (a step of 0.001 mA/cm^2)


class FileModel(BaseModel):
    """Base of every table in a protocol file: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CellModel(FileModel):
    """One ``[[cells]]`` table: the cell on one potentiostat channel."""

    channel: int = Field(ge=0, le=MAX_CHANNEL, strict=True,
                         description="potentiostat channel, 0-based", examples=[0])
    cell_id: CellId = Field(description="your name for the cell", examples=["NaNa-G1"])
    type: Literal["symmetric", "na_cu", "na_al", "full"] = Field(
        description="symmetric Na||Na, Na||Cu, Na||Al, or a full cell", examples=["symmetric"])
    area: Area = Field(description="electrode area", examples=["1.13 cm^2"])
    electrolyte: Name = Field(examples=["1 M NaPF6 in diglyme"])
    headspace: Volume | None = Field(None, description="gas holder headspace", examples=["5 mL"])
    notes: Note = ""


class SafetyModel(FileModel):
    """The ``[safety]`` table: limits for the whole run. Unset fields take the kind's default."""

    min_potential: Potential | None = Field(None, examples=["-1 V"])
    max_potential: Potential | None = Field(None, examples=["1 V"])
    max_current: PositiveCurrent | None = Field(
        None, description="largest |current|; default 2x the largest planned", examples=["5 mA"])

    def problems(self) -> list[Problem]:
        """The window must have its minimum below its maximum.

        >>> SafetyModel(min_potential="1 V", max_potential="-1 V").problems()[0][0]
        'safety.max_potential'
        """
        lo, hi = self.min_potential, self.max_potential
        if lo is not None and hi is not None and lo >= hi:
            return [("safety.max_potential",
                     f"must be above min_potential ({lo:g} V), got {hi:g} V")]
        return []


class FailureModel(FileModel):
    """The ``[failure]`` table: failures the engine detects from the science (domain.md).

    Unset fields keep the kind's default; a value of 0 switches a criterion off.

    >>> FailureModel(divergence_factor=0.5).problems()[0]
    ('failure.divergence_factor', 'must be above 1 (k x the early overpotential), or 0 to \
switch it off (got 0.5)')
    """

    short_below: Potential | None = Field(
        None, description="hard short: |E| below this during a constant-current step",
        examples=["5 mV"])
    short_below_resistance: AreaResistance | None = Field(
        None, description="hard short: |E| below the current density x this (templates); "
        "one value that suits 0.1 and 5 mA/cm^2 alike", examples=["5 ohm*cm^2"])
    short_drop_fraction: float | None = Field(
        None, ge=0, lt=1, strict=True,
        description="soft short: |E| falls by more than this fraction within short_drop_window",
        examples=[0.5])
    short_drop_window: Time | None = Field(None, examples=["60 s"])
    soft_short_ends: bool | None = Field(
        None, strict=True, description="a soft short ends the channel (else it is logged)",
        examples=[True])
    divergence_factor: float | None = Field(
        None, ge=0, strict=True,
        description="divergence: a half-cycle's mean |E| above k x the early cycles' mean",
        examples=[2.0])
    divergence_reference_cycles: int | None = Field(
        None, ge=1, le=MAX_COUNT, strict=True,
        description="the early cycles the divergence compares with",
        examples=[5])

    def problems(self) -> list[Problem]:
        found = []
        if self.short_below is not None and self.short_below_resistance is not None:
            found.append(("failure.short_below_resistance",
                          "give short_below (a potential) or short_below_resistance, not both"))
        if self.short_below is not None and self.short_below < 0:
            found.append(("failure.short_below",
                          f"must be 0 (off) or above, got {self.short_below:g} V"))
        k = self.divergence_factor
        if k is not None and 0 < k <= 1:
            found.append(("failure.divergence_factor",
                          ("must be above 1 (k x the early overpotential), or 0 to switch it off "
                          f"(got {k:g})")))
        return found


class ProtocolBase(FileModel):
    """Fields every protocol file has, whatever its kind."""

    name: Name = Field(examples=["Na||Na plating-stripping, glyme vs carbonate"])
    description: Note = ""
    # every SafetyModel field has a default, which mypy cannot see through Field(...)
    safety: SafetyModel = Field(default_factory=SafetyModel)  # type: ignore[arg-type]
    cells: list[CellModel] = Field(min_length=1, max_length=MAX_CELLS)

    def problems(self) -> list[Problem]:
        """Cross-field checks: unique channels and cell ids, a sane safety window."""
        failure = getattr(self, "failure", None)
        return (self.safety.problems() + (failure.problems() if failure else [])
                + _duplicates(self.cells, "channel") + _duplicates(self.cells, "cell_id"))

    def cell_types_problems(self, kind: str, allowed: tuple[str, ...],
                            why: str) -> list[Problem]:
        """Every cell must be one of ``allowed`` (``why`` says what the kind needs)."""
        return [(f"cells[{i}].type", (f'"{c.type}" is not allowed for {kind} '
                 f"(use {' or '.join(allowed)}: {why})"))
                for i, c in enumerate(self.cells) if c.type not in allowed]


def _duplicates(cells: list[CellModel], attr: str) -> list[Problem]:
    seen: dict[object, int] = {}
    found = []
    for i, cell in enumerate(cells):
        value = getattr(cell, attr)
        if value in seen:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            found.append((f"cells[{i}].{attr}",
                          f"{attr} {shown} is already used by cells[{seen[value]}]"))
        else:
            seen[value] = i
    return found


def _only_with(model: BaseModel, fields: tuple[str, ...], condition: str) -> list[Problem]:
    """``fields`` that were given although they only apply when ``condition``."""
    return [(name, f"only used when {condition}; remove it") for name in fields
            if getattr(model, name) is not None]


# ---- plating-stripping -------------------------------------------------------------------------

class RateRungModel(FileModel):
    """One rung of a ``rate_ladder``: ``cycles`` cycles at ``current_density``."""

    current_density: PositiveCurrentDensity = Field(examples=["0.5 mA/cm^2"])
    cycles: int = Field(ge=1, le=MAX_COUNT, strict=True, examples=[10])


class PlatingStrippingModel(ProtocolBase):
    """``kind = "plating_stripping"``: galvanostatic cycling at a fixed areal capacity.

    Each cycle plates ``areal_capacity`` onto the working electrode at ``current_density``,
    then strips the same charge back; or a ``rate_ladder`` of such blocks at rising current
    densities. Default safety window: -1 V to +1 V.
    """

    kind: Literal["plating_stripping"]
    current_density: PositiveCurrentDensity | None = Field(None, examples=["1 mA/cm^2"])
    areal_capacity: ArealCapacity = Field(
        description="charge per half-cycle, per electrode area", examples=["1 mAh/cm^2"])
    cycles: int | None = Field(None, ge=1, le=MAX_COUNT, strict=True, examples=[200])
    rate_ladder: list[RateRungModel] | None = Field(
        None, min_length=1, description="instead of current_density and cycles",
        examples=[[{"current_density": "0.5 mA/cm^2", "cycles": 10}]])
    record_interval: RecordInterval = Field(description="record a sample at least this often",
                                  examples=["10 s"])
    record_dE: PositivePotential | None = Field(
        None, description="also record when E moved this much", examples=["5 mV"])
    rest_before: Time | None = Field(None, description="open-circuit rest before cycling",
                                     examples=["1 h"])
    failure: FailureModel | None = None

    def rungs(self) -> list[tuple[float, int]]:
        """``[(current density A/cm², cycles)]``: one rung, or the ladder's."""
        if self.rate_ladder:
            return [(r.current_density, r.cycles) for r in self.rate_ladder]
        return [(self.current_density or 0.0, self.cycles or 0)]

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.rate_ladder is not None:
            return found + [(name, ("give either a rate_ladder or current_density and cycles, "
                             "not both")) for name in ("current_density", "cycles")
                            if getattr(self, name) is not None]
        if self.current_density is None:
            found.append(("current_density", ('missing; add e.g. current_density = "1 mA/cm^2" '
                          "(or a rate_ladder)")))
        if self.cycles is None:
            found.append(("cycles", "missing; add e.g. cycles = 200 (or a rate_ladder)"))
        return found


# ---- Coulombic efficiency ----------------------------------------------------------------------

class CoulombicEfficiencyModel(ProtocolBase):
    """``kind = "coulombic_efficiency"``: Na‖Cu or Na‖Al, reservoir or per-cycle method.

    Default safety window: -1 V to 3 V (``CE_WINDOW_V``: room for the jump when the Na runs
    out).
    """

    kind: Literal["coulombic_efficiency"]
    method: Literal["reservoir", "per_cycle"] = Field(examples=["reservoir"])
    cycles: int = Field(ge=1, le=MAX_COUNT, strict=True, description="n", examples=[10])
    current_density: PositiveCurrentDensity = Field(
        "0.5 mA/cm^2", validate_default=True, examples=["0.5 mA/cm^2"])
    cycle_capacity: ArealCapacity = Field(
        "1 mAh/cm^2", validate_default=True,
        description="Q_C (reservoir) or Q (per_cycle): plated in each cycle",
        examples=["1 mAh/cm^2"])
    reservoir_capacity: ArealCapacity | None = Field(
        None, description="Q_T, reservoir method only (default 5 mAh/cm^2)",
        examples=["5 mAh/cm^2"])
    formation_capacity: ArealCapacity | None = Field(
        None, description="plated then stripped to the cutoff first, reservoir method only "
        "(default 5 mAh/cm^2)", examples=["5 mAh/cm^2"])
    cutoff: PositivePotential = Field(
        "1 V", validate_default=True, description="a strip ends when E rises above this",
        examples=["1 V"])
    record_interval: RecordInterval = Field(examples=["10 s"])
    record_dE: PositivePotential | None = Field(None, examples=["5 mV"])
    rest_before: Time | None = Field(None, examples=["1 h"])
    failure: FailureModel | None = None

    def problems(self) -> list[Problem]:
        found = super().problems() + self.cell_types_problems(
            self.kind, ("na_cu", "na_al"), "CE needs a working electrode that starts without Na")
        if self.method == "per_cycle":
            found += _only_with(self, ("reservoir_capacity", "formation_capacity"),
                                'method = "reservoir"')
        lo, hi = self.safety.min_potential, self.safety.max_potential
        lo = CE_WINDOW_V[0] if lo is None else lo
        hi = CE_WINDOW_V[1] if hi is None else hi
        if not lo < self.cutoff < hi:
            found.append(("cutoff", (f"{self.cutoff:g} V is not inside the safety window "
                          f"({lo:g} V to {hi:g} V): the safety trip would end every strip")))
        return found


# ---- critical current density ------------------------------------------------------------------

class RampModel(FileModel):
    """``[ramp]``: current densities from ``start`` up to ``max``, by ``step`` or ``factor``."""

    start: PositiveCurrentDensity = Field(examples=["0.5 mA/cm^2"])
    step: PositiveCurrentDensity | None = Field(None, examples=["0.5 mA/cm^2"])
    factor: float | None = Field(None, gt=1, strict=True, examples=[2.0])
    max: PositiveCurrentDensity = Field(examples=["8 mA/cm^2"])

    def values(self) -> list[float]:
        """The ramp's current densities (A/cm²), ``max`` included when the ramp lands on it.

        >>> RampModel(start="0.5 mA/cm^2", factor=2.0, max="4 mA/cm^2").values()
        [0.0005, 0.001, 0.002, 0.004]
        """
        out: list[float] = []
        j = self.start
        while j <= self.max * (1 + 1e-9) and len(out) <= MAX_RUNGS:
            out.append(j)
            j = j + self.step if self.step is not None else j * (self.factor or 2.0)
        return out

    def problems(self) -> list[Problem]:
        if (self.step is None) == (self.factor is None):
            return [("ramp", "give exactly one of step (added) or factor (multiplied)")]
        if self.max < self.start:
            return [("ramp.max", f"must be at least start ({self.start * 1e3:g} mA/cm^2)")]
        if len(self.values()) > MAX_RUNGS:
            return [("ramp", (f"makes more than {MAX_RUNGS} current densities; "
                     "use a larger step or factor"))]
        return []


class CriticalCurrentDensityModel(ProtocolBase):
    """``kind = "critical_current_density"``: Na‖Na cycling at rising current densities (fixed
    areal capacity) until the cell shorts or leaves the safety window. Default window ±1 V."""

    kind: Literal["critical_current_density"]
    current_densities: list[PositiveCurrentDensity] | None = Field(
        None, min_length=1, description="in the order to run them (or a [ramp] table)",
        examples=[["0.5 mA/cm^2", "1 mA/cm^2", "2 mA/cm^2"]])
    ramp: RampModel | None = None
    areal_capacity: ArealCapacity = Field(examples=["1 mAh/cm^2"])
    cycles_per_step: int = Field(ge=1, le=MAX_COUNT, strict=True, examples=[5])
    record_interval: RecordInterval = Field(examples=["10 s"])
    record_dE: PositivePotential | None = Field(None, examples=["5 mV"])
    rest_before: Time | None = Field(None, examples=["1 h"])
    failure: FailureModel | None = None

    def densities(self) -> list[float]:
        """The current densities to run, in A/cm²."""
        if self.current_densities:
            return list(self.current_densities)
        return self.ramp.values() if self.ramp else []

    def problems(self) -> list[Problem]:
        found = super().problems() + self.cell_types_problems(
            self.kind, ("symmetric",), "a short is seen as a symmetric cell's voltage collapsing")
        if (self.current_densities is None) == (self.ramp is None):
            found.append(("current_densities",
                          ('give exactly one of current_densities = ["0.5 mA/cm^2", ...] '
                          "or a [ramp] table")))
        elif self.ramp is not None:
            found += self.ramp.problems()
        else:
            js = self.densities()
            found += [(f"current_densities[{k}]",
                       f"must be above the one before it ({js[k - 1] * 1e3:g} mA/cm^2)")
                      for k in range(1, len(js)) if js[k] <= js[k - 1]]
        return found


# ---- OCV-impedance -----------------------------------------------------------------------------

class EisModel(FileModel):
    """``[eis]``: one potentiostatic impedance sweep (domain.md's defaults)."""

    f_start: Frequency = Field("200 kHz", validate_default=True, examples=["200 kHz"])
    f_end: Frequency = Field("100 mHz", validate_default=True, examples=["100 mHz"])
    points_per_decade: int = Field(6, ge=1, le=100, strict=True, examples=[6])
    amplitude: PositivePotential = Field("10 mV", validate_default=True, examples=["10 mV"])
    dc: Potential | None = Field(
        None, description="DC potential; default: the open-circuit potential", examples=["0 V"])

    def problems(self, path: str = "eis") -> list[Problem]:
        if self.f_start == self.f_end:
            return [(f"{path}.f_end", "must differ from f_start")]
        return []


class OcvImpedanceModel(ProtocolBase):
    """``kind = "ocv_impedance"``: open-circuit rest with an EIS sweep every ``interval``,
    for a total ``duration`` or a number of ``sweeps``. Default window ±1 V."""

    kind: Literal["ocv_impedance"]
    interval: Time = Field("1 h", validate_default=True, description="rest between sweeps",
                           examples=["1 h"])
    duration: Time | None = Field(None, description="total rest time", examples=["12 h"])
    sweeps: int | None = Field(None, ge=1, le=MAX_COUNT, strict=True,
                               description="number of sweeps, the first one included",
                               examples=[13])
    sweep_at_start: bool = Field(True, strict=True, description="a sweep before the first rest")
    rest_dEdt_below: PotentialRate | None = Field(
        None, description="a rest also ends when |dE/dt| falls below this", examples=["1 mV/h"])
    # every EisModel field has a default, which mypy cannot see through Field(...)
    eis: EisModel = Field(default_factory=EisModel)  # type: ignore[arg-type]
    record_interval: RecordInterval = Field(examples=["1 min"])
    record_dE: PositivePotential | None = Field(None, examples=["1 mV"])

    def rests(self) -> int:
        """How many rest + sweep blocks follow the first sweep."""
        if self.sweeps is not None:
            return self.sweeps - 1 if self.sweep_at_start else self.sweeps
        return int((self.duration or 0.0) / self.interval + 1e-9)

    def problems(self) -> list[Problem]:
        found = super().problems() + self.eis.problems()
        if (self.duration is None) == (self.sweeps is None):
            found.append(("duration", "give exactly one of duration (total rest time) or sweeps"))
        elif self.duration is not None and self.duration < self.interval * (1 - 1e-9):
            found.append(("duration", (f"{self.duration:g} s is shorter than one interval "
                          f"({self.interval:g} s)")))
        return found


# ---- gas evolution -----------------------------------------------------------------------------

class GasEvolutionModel(ProtocolBase):
    """``kind = "gas_evolution"``: a cell in a sealed pressure holder rests, then cycles, while
    the station logs pressure and temperature. Every cell needs its ``headspace``."""

    kind: Literal["gas_evolution"]
    rest_before: Time = Field("2 h", validate_default=True,
                              description="open-circuit rest: the pressure baseline",
                              examples=["2 h"])
    current_density: PositiveCurrentDensity = Field(examples=["0.5 mA/cm^2"])
    areal_capacity: ArealCapacity = Field(examples=["1 mAh/cm^2"])
    cycles: int = Field(ge=1, le=MAX_COUNT, strict=True, examples=[20])
    record_interval: RecordInterval = Field(examples=["10 s"])
    record_dE: PositivePotential | None = Field(None, examples=["5 mV"])
    failure: FailureModel | None = None

    def problems(self) -> list[Problem]:
        return super().problems() + [
            (f"cells[{i}].headspace", ("missing; gas_evolution needs the holder's gas volume, "
             'e.g. headspace = "5 mL"'))
            for i, c in enumerate(self.cells) if c.headspace is None]


TEMPLATE_KINDS: tuple[type[ProtocolBase], ...] = (
    PlatingStrippingModel, CoulombicEfficiencyModel, CriticalCurrentDensityModel,
    OcvImpedanceModel, GasEvolutionModel,
)
"""The template kinds' models; ``protocols.kinds.KINDS`` adds ``sequence``."""
