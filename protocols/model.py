"""The protocol file as pydantic models: what a user may write, checked field by field.

Every file has ``kind``, ``name``, an optional ``description``, an optional ``[safety]`` table
and one ``[[cells]]`` table per channel; the other top-level fields belong to the kind.
``ProtocolFile`` is a union discriminated on ``kind``: a new kind is a model with
``kind: Literal["..."]`` added to ``KINDS``. Unknown fields are errors (``extra="forbid"``), so a
typo never silently falls back to a default, and whole numbers are strict (``cycles = "200"``
and ``cycles = true`` are errors, not quietly converted).

Quantities are parsed by ``protocols.units`` and held as floats in canonical units (A, V, s, C,
A/cm², C/cm², cm², mL). Checks that span fields (unique channels, safety window order) are in
``problems()``, which returns ``(field path, message)`` pairs instead of raising, so the loader
can report them all at once with their paths.

Example:
    >>> from pydantic import TypeAdapter
    >>> m = TypeAdapter(ProtocolFile).validate_python({
    ...     "kind": "plating_stripping", "name": "demo",
    ...     "current_density": "1 mA/cm^2", "areal_capacity": "1 mAh/cm^2", "cycles": 2,
    ...     "record_interval": "10 s",
    ...     "cells": [{"channel": 0, "cell_id": "A", "type": "symmetric",
    ...                "area": "1.13 cm^2", "electrolyte": "1 M NaPF6 in diglyme"}]})
    >>> m.cycles, m.cells[0].area
    (2, 1.13)
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from protocols.units import (
    Area,
    ArealCapacity,
    PositiveCurrent,
    PositiveCurrentDensity,
    PositivePotential,
    Potential,
    Time,
    Volume,
)

Problem = tuple[str, str]  # (field path such as "cells[1].channel", message)

PLANNED_KINDS = (
    "sequence", "coulombic_efficiency", "critical_current_density", "ocv_impedance",
    "gas_evolution",
)
"""Kinds the design promises but that are not implemented yet (named in error messages)."""


class FileModel(BaseModel):
    """Base of every table in a protocol file: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CellModel(FileModel):
    """One ``[[cells]]`` table: the cell on one potentiostat channel."""

    channel: int = Field(ge=0, strict=True, description="potentiostat channel, 0-based", examples=[0])
    cell_id: str = Field(min_length=1, description="your name for the cell", examples=["NaNa-G1"])
    type: Literal["symmetric", "na_cu", "na_al", "full"] = Field(
        description="symmetric Na||Na, Na||Cu, Na||Al, or a full cell", examples=["symmetric"])
    area: Area = Field(description="electrode area", examples=["1.13 cm^2"])
    electrolyte: str = Field(min_length=1, examples=["1 M NaPF6 in diglyme"])
    headspace: Volume | None = Field(None, description="gas holder headspace", examples=["5 mL"])
    notes: str = ""


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


class ProtocolBase(FileModel):
    """Fields every protocol file has, whatever its kind."""

    name: str = Field(min_length=1, examples=["Na||Na plating-stripping, glyme vs carbonate"])
    description: str = ""
    safety: SafetyModel = Field(default_factory=SafetyModel)
    cells: list[CellModel] = Field(min_length=1)

    def problems(self) -> list[Problem]:
        """Cross-field checks: unique channels and cell ids, a sane safety window."""
        return self.safety.problems() + _duplicates(self.cells, "channel") + _duplicates(
            self.cells, "cell_id")


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


class PlatingStrippingModel(ProtocolBase):
    """``kind = "plating_stripping"``: galvanostatic cycling at a fixed areal capacity.

    Each cycle plates ``areal_capacity`` onto the working electrode at ``current_density``,
    then strips the same charge back. Default safety window: -1 V to +1 V.
    """

    kind: Literal["plating_stripping"]
    current_density: PositiveCurrentDensity = Field(examples=["1 mA/cm^2"])
    areal_capacity: ArealCapacity = Field(
        description="charge per half-cycle, per electrode area", examples=["1 mAh/cm^2"])
    cycles: int = Field(ge=1, strict=True, examples=[200])
    record_interval: Time = Field(description="record a sample at least this often",
                                  examples=["10 s"])
    record_dE: PositivePotential | None = Field(
        None, description="also record when E moved this much", examples=["5 mV"])
    rest_before: Time | None = Field(None, description="open-circuit rest before cycling",
                                     examples=["1 h"])


KINDS: tuple[type[ProtocolBase], ...] = (PlatingStrippingModel,)
"""Every implemented kind's model. Add one here and in ``protocols.templates.EXPANDERS``."""

ProtocolFile = Annotated[Union[KINDS], Field(discriminator="kind")]  # noqa: UP007 (from a tuple)
"""The whole file: one of ``KINDS``, chosen by its ``kind`` field."""


def kind_names() -> tuple[str, ...]:
    """The implemented kinds, as written in a file.

    >>> kind_names()
    ('plating_stripping',)
    """
    return tuple(m.model_fields["kind"].annotation.__args__[0] for m in KINDS)
