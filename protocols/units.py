"""Quantities with units at the protocol-file boundary, plain floats inside.

A protocol file writes every physical value as text with its unit (``"1 mA/cm^2"``); a bare
number is an error, because a unit left implicit is a unit someone will guess wrong. Each
quantity type below parses such text with the one shared pint registry, checks its dimension,
and returns a ``float`` in that dimension's *canonical unit*:

=====================  ==============  =============================  =====================
type                   canonical unit  example accepted               also accepted
=====================  ==============  =============================  =====================
CurrentDensity         A/cm^2          ``"1 mA/cm^2"``                 ``"10 A/m^2"``
ArealCapacity          C/cm^2          ``"0.5 mAh/cm²"``               ``"1.8 C/cm^2"``
Current                A               ``"1.13 mA"``                   ``"500 uA"``
Potential              V               ``"1 V"``                       ``"-10 mV"``
Time                   s               ``"10 s"``                      ``"2 h"``, ``"5 min"``
Charge                 C               ``"1 mAh"``                     ``"3.6 C"``
Area                   cm^2            ``"1.13 cm^2"``                 ``"113 mm^2"``
Volume                 mL              ``"5 mL"``                      ``"5 cm^3"``
Frequency              Hz              ``"200 kHz"``                   ``"100 mHz"``
PotentialRate          V/s             ``"1 mV/h"``                    ``"1 uV/s"``
=====================  ==============  =============================  =====================

Everything is SI (A, V, s, C, Hz) except area and volume, which stay in cm² and mL as the
Plan's ``area_cm2`` and ``headspace_mL`` do; current density and areal capacity are per cm²
so that ``current_A = current_density * area_cm2`` needs no conversion factor.

``"²"``, ``"³"``, ``"µ"`` and ``"cm2"``-style exponents are accepted. Area, volume, time,
frequency, areal capacity, charge and potential rate must be greater than zero; current
density, current and potential may be signed (use the ``Positive…`` variants to forbid that).

Example:
    >>> parse_quantity("0.5 mAh/cm²", AREAL_CAPACITY)
    1.8
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

import pint
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

ureg: pint.UnitRegistry = pint.UnitRegistry()
"""The one unit registry of narig: never create another (pint quantities from two
registries cannot be combined)."""

MAX_TEXT = 80  # a quantity is short; longer text is a mistake (or an attack on pint's parser)


@dataclass(frozen=True)
class Dimension:
    """What a quantity measures, its canonical unit, and how to show it to a person."""

    name: str  # "current density"
    unit: str  # canonical unit, pint syntax: the float a field holds is in this unit
    example: str  # shown in error messages: (expected e.g. "1 mA/cm^2")
    display: str  # unit to print values in for people
    positive: bool = False  # must be > 0
    # the sane range of |value| (canonical unit): a value outside it is a typo or a unit slip
    # ("1 ns", "1e300 s", "1 mA/furlong^2"), refused before it reaches an instrument; 0 passes
    low: float = 0.0
    high: float = math.inf

    def article(self) -> str:
        """``"a"`` or ``"an"`` for this dimension's name.

        >>> AREAL_CAPACITY.article()
        'an'
        """
        return "an" if self.name[0] in "aeiou" else "a"


# sane ranges: a lab cell's values with wide margins (docs/protocols.md, "Bounds")
CURRENT_DENSITY = Dimension("current density", "A/cm^2", "1 mA/cm^2", "mA/cm^2",
                            low=1e-9, high=1.0)  # 1 nA/cm^2 .. 1000 mA/cm^2
AREAL_CAPACITY = Dimension("areal capacity", "C/cm^2", "1 mAh/cm^2", "mAh/cm^2", True,
                           low=3.6e-6, high=360.0)  # 1 nAh/cm^2 .. 100 mAh/cm^2 (0.9 mm of Na)
CURRENT = Dimension("current", "A", "1 mA", "mA", low=1e-12, high=10.0)
POTENTIAL = Dimension("potential", "V", "1 V", "V", high=100.0)
TIME = Dimension("time", "s", "10 s", "s", True, low=1e-3, high=10 * 8766 * 3600.0)  # 10 years
CHARGE = Dimension("charge", "C", "1 mAh", "mAh", True, low=1e-12, high=3.6e4)  # 10 Ah
AREA = Dimension("area", "cm^2", "1.13 cm^2", "cm^2", True, low=1e-4, high=1e3)
VOLUME = Dimension("volume", "mL", "5 mL", "mL", True, low=1e-3, high=1e4)
FREQUENCY = Dimension("frequency", "Hz", "200 kHz", "Hz", True, low=1e-6, high=1e7)
POTENTIAL_RATE = Dimension("potential rate", "V/s", "1 mV/h", "mV/h", True, low=1e-12, high=1e3)
AREA_RESISTANCE = Dimension("area-specific resistance", "ohm*cm^2", "5 ohm*cm^2", "ohm*cm^2",
                            True, low=1e-3, high=1e7)
RECORD_INTERVAL = Dimension("time", "s", "10 s", "s", True, low=1e-3, high=86400.0)
"""A recording interval: 1 ms (the fastest any instrument acquires) to one day."""


def _positive(dim: Dimension) -> Dimension:
    return dataclasses.replace(dim, positive=True)


_EXPONENT_WORD = re.compile(r"\b([A-Za-zµμ]+)([23])\b")  # cm2 -> cm^2 (not 1e3: no \b)
_NUMBER_FIRST = re.compile(r"[+-]?(\d|\.\d)")
# every ^ must raise a unit (not a number: 10^10^10 would hang pint) to a small power
_SAFE_EXPONENT = re.compile(r"[A-Za-zµ]\s*\^\s*-?\d(?:\.\d+)?(?![\d.^])")


def _normalise(text: str) -> str:
    """Unicode and shorthand to pint syntax: ``"0.5 mAh/cm²"`` -> ``"0.5 mAh/cm^2"``."""
    text = text.strip().replace("**", "^").replace("²", "^2").replace("³", "^3")
    text = text.replace("·", "*").replace("−", "-").replace("μ", "µ")
    return _EXPONENT_WORD.sub(r"\1^\2", text)


def _fail(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("quantity", message, context)


def _expected(dim: Dimension) -> str:
    return f'expected e.g. "{dim.example}"'


def _pint(text: str, dim: Dimension) -> float | str:
    """pint's reading of ``text`` in ``dim.unit``, or why not: "no unit" or "not"."""
    try:
        q: Any = ureg.Quantity(text)  # a Quantity, or a plain number for unitless text
        if not isinstance(q, ureg.Quantity) or q.dimensionless:
            return "no unit"
        return float(q.to(dim.unit).magnitude)
    except Exception:  # noqa: BLE001 - pint raises many types (UndefinedUnitError, SyntaxError,
        return "not"  # DimensionalityError, OverflowError...); all mean "not this quantity"


def _parse_text(text: str, dim: Dimension) -> float:
    norm = _normalise(text)
    given = f'"{text}"'
    not_a = f"{{given}} is not {dim.article()} {dim.name} ({_expected(dim)})"
    if not norm or len(norm) > MAX_TEXT or norm.count("^") != len(_SAFE_EXPONENT.findall(norm)):
        raise _fail(not_a, given=given)
    if not _NUMBER_FIRST.match(norm):
        raise _fail(f"{{given}} has no number ({_expected(dim)})", given=given)
    result = _pint(norm, dim)
    if result == "no unit":
        raise _fail(f"{{given}} has no unit ({_expected(dim)})", given=given)
    if isinstance(result, str):
        raise _fail(not_a, given=given)
    return result


def parse_quantity(value: Any, dim: Dimension) -> float:
    """Text with a unit -> float in ``dim``'s canonical unit; a PydanticCustomError otherwise.

    >>> parse_quantity("1 mA/cm^2", CURRENT_DENSITY)
    0.001
    >>> parse_quantity("2 h", TIME)
    7200.0
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(f"must be text with a unit ({_expected(dim)})")
    if not isinstance(value, str):
        raise _fail(f"{{given}} has no unit ({_expected(dim)})", given=repr(value))
    result = _parse_text(value, dim)
    if not math.isfinite(result):
        raise _fail(f"{{given}} is not a finite number ({_expected(dim)})", given=f'"{value}"')
    if dim.positive and result <= 0:
        raise _fail("must be greater than zero (got {given})", given=f'"{value}"')
    if result != 0 and not dim.low <= abs(result) <= dim.high:
        raise _fail(_out_of_range(value, result, dim), given=f'"{value}"')
    return result


def _out_of_range(text: str, value: float, dim: Dimension) -> str:
    """``"1 ns" is 1e-06 ms; allowed: 1 ms to 10 years`` - in units a reader thinks in."""
    unit = _unit_for(max(abs(value), dim.low), dim)
    shown = ureg.Quantity(value, dim.unit).to(unit).magnitude
    hi = format_quantity(dim.high, dim, unit=_unit_for(dim.high, dim))
    if dim.low > 0:
        allowed = f"{format_quantity(dim.low, dim, unit=_unit_for(dim.low, dim))} to {hi}"
    else:
        allowed = f"at most {hi}"
    magnitude = "" if dim.positive else " in magnitude"
    return f"{{given}} is {shown:.4g} {unit}; allowed: {allowed}{magnitude}"


_TIME_UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0), ("days", 86400.0),
               ("years", 8766 * 3600.0))


def _unit_for(value: float, dim: Dimension) -> str:
    """The display unit, or for a time the largest of s/min/h/day/year that keeps it >= 1."""
    if dim.unit != "s" or value < 1.0:
        return "ms" if dim.unit == "s" and value < 1.0 else dim.display
    return [u for u, f in _TIME_UNITS if value >= f][-1]


def format_quantity(value: float, dim: Dimension, digits: int = 4,
                    unit: str | None = None) -> str:
    """A canonical float back to text in the dimension's display unit (or ``unit``).

    >>> format_quantity(0.001, CURRENT_DENSITY)
    '1 mA/cm^2'
    """
    unit = unit or dim.display
    shown = ureg.Quantity(value, dim.unit).to(unit).magnitude
    if shown == 1 and unit in ("days", "years"):
        unit = unit[:-1]
    return f"{shown:.{digits}g} {unit}"


def quantity_type(dim: Dimension) -> Any:
    """A pydantic field type: text with a unit in, float in ``dim.unit`` out.

    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(quantity_type(AREA)).validate_python("1.13 cm²")
    1.13
    """

    def validate(value: Any) -> float:
        return parse_quantity(value, dim)

    schema = {
        "type": "string",
        "description": f'{dim.name} with its unit, e.g. "{dim.example}"',
        "examples": [dim.example],
    }
    return Annotated[float, BeforeValidator(validate), WithJsonSchema(schema)]


CurrentDensity = quantity_type(CURRENT_DENSITY)
PositiveCurrentDensity = quantity_type(_positive(CURRENT_DENSITY))
ArealCapacity = quantity_type(AREAL_CAPACITY)
Current = quantity_type(CURRENT)
PositiveCurrent = quantity_type(_positive(CURRENT))
Potential = quantity_type(POTENTIAL)
PositivePotential = quantity_type(_positive(POTENTIAL))
Time = quantity_type(TIME)
Charge = quantity_type(CHARGE)
Area = quantity_type(AREA)
Volume = quantity_type(VOLUME)
Frequency = quantity_type(FREQUENCY)
PotentialRate = quantity_type(POTENTIAL_RATE)
RecordInterval = quantity_type(RECORD_INTERVAL)
AreaResistance = quantity_type(AREA_RESISTANCE)
