"""PalmSens MethodSCRIPT: pure functions for the wire format (no transport here).

Written from the public MethodSCRIPT rules (instruments.md), not from the vendor's example code.

A data package line is ``P`` then variables separated by ``;``. Each variable is a 2-letter
type, 7 hex digits, one SI-prefix character and optional ``,``-separated metadata:

>>> parse_package("Pda7F85F3Fu;ba48D503Dp,10,288")
{'da': -0.499905, 'ba': -5.7847747e-05}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from drivers.base import InstrumentProtocolError

# SI prefix character -> factor; 'i' marks a plain integer.
PREFIXES: dict[str, float] = {
    "a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, " ": 1.0,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "i": 1.0,
}
OFFSET = 1 << 27  # values are sent as hex(value + 2^27), 7 hex digits
MAX_MANTISSA = (1 << 27) - 1

# Variable types the rig uses, with their meaning.
VAR_TYPES: dict[str, str] = {
    "ab": "potential_V", "ba": "current_A", "da": "applied_potential_V",
    "db": "applied_current_A", "dc": "frequency_Hz", "cc": "z_real_ohm", "cd": "z_imag_ohm",
    "ca": "phase_deg", "cb": "z_abs_ohm", "eb": "time_s",
}

STATUS_OVERLOAD = 0x2
STATUS_UNDERLOAD = 0x4
STATUS_OVERLOAD_WARNING = 0x8

_VAR_RE = re.compile(r"([a-z]{2})([0-9A-F]{7})(.)((?:,[0-9A-Fa-f]+)*)")
_HEX7_RE = re.compile(r"[0-9A-Fa-f]{7}")
_ERROR_RE = re.compile(r"!([0-9A-Fa-f]{4})")


@dataclass(frozen=True, slots=True)
class Variable:
    type: str
    value: float
    status: int = 0
    range_index: int | None = None


def decode_value(hex7: str, prefix: str) -> float:
    """``decode_value("7F85F3F", "u") -> -0.499905`` (value = (hex - 2^27) x prefix)."""
    # int(x, 16) alone would also take "0x12345", " 12_345" or "-123456"
    if prefix not in PREFIXES or not _HEX7_RE.fullmatch(hex7):
        raise InstrumentProtocolError(f"bad MethodSCRIPT value {hex7!r}{prefix!r}")
    return (int(hex7, 16) - OFFSET) * PREFIXES[prefix]


_ENCODE_ORDER = ("a", "f", "p", "n", "u", "m", " ", "k", "M", "G", "T")  # 1e-18 .. 1e12
_LOG_LIMIT = math.log10(MAX_MANTISSA + 0.5)


def encode_value(value: float, prefix: str | None = None) -> str:
    """The 8 characters (7 hex + prefix) that carry ``value``, with the finest prefix that fits.

    ``encode_value(-0.499905, "u") -> "7F85F3Fu"``
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot encode {value!r}")
    if prefix is None:
        magnitude = abs(value)
        # the finest prefix 10^(3j) with magnitude / 10^(3j) < 2^27: j from the decade
        j = 0 if magnitude == 0 else max(
            0, math.floor((math.log10(magnitude) - _LOG_LIMIT) / 3) + 7)
        if j < len(_ENCODE_ORDER) and magnitude / PREFIXES[_ENCODE_ORDER[j]] >= MAX_MANTISSA:
            j += 1  # rounding at a decade's edge
        if j >= len(_ENCODE_ORDER):
            raise ValueError(f"{value!r} does not fit a MethodSCRIPT variable")
        prefix = _ENCODE_ORDER[j]
    mantissa = round(value / PREFIXES[prefix])
    if abs(mantissa) > MAX_MANTISSA:
        raise ValueError(f"{value!r} does not fit a MethodSCRIPT variable with prefix {prefix!r}")
    return f"{mantissa + OFFSET:07X}{prefix}"


def parse_metadata(meta: str) -> tuple[int, int | None]:
    """``(status, range_index)`` from a variable's metadata: ``",10,288" -> (0, 0x88)``.

    ``1X`` is the status bitfield, ``2XX`` the range index; other fields are ignored.
    """
    status, range_index = 0, None
    for field in meta.split(",")[1:]:
        try:
            if field.startswith("1"):
                status = int(field[1:] or "0", 16)
            elif field.startswith("2"):
                range_index = int(field[1:] or "0", 16)
        except ValueError as exc:
            raise InstrumentProtocolError(f"bad MethodSCRIPT metadata {meta!r}") from exc
    return status, range_index


def parse_variable(text: str) -> Variable:
    m = _VAR_RE.fullmatch(text)
    if not m:
        raise InstrumentProtocolError(f"bad MethodSCRIPT variable {text!r}")
    vtype, hex7, prefix, meta = m.groups()
    return Variable(vtype, decode_value(hex7, prefix), *parse_metadata(meta))


def parse_package_variables(line: str | bytes) -> list[Variable]:
    """All variables of a ``P...`` line (text, or bytes as read), metadata included."""
    if isinstance(line, (bytes, bytearray)):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InstrumentProtocolError(f"not a MethodSCRIPT data package: {line!r}") from exc
    if not isinstance(line, str):
        raise InstrumentProtocolError(f"not a MethodSCRIPT data package: {line!r}")
    line = line.rstrip("\r\n")
    if not line.startswith("P") or len(line) < 2:
        raise InstrumentProtocolError(f"not a MethodSCRIPT data package: {line!r}")
    return [parse_variable(part) for part in line[1:].split(";")]


def parse_package(line: str | bytes) -> dict[str, float]:
    """``{type: value}`` of a ``P...`` line; raises InstrumentProtocolError on anything else."""
    return {v.type: v.value for v in parse_package_variables(line)}


def format_package(values: list[tuple[str, float]] | dict[str, float], status: int = 0) -> str:
    """The line (without newline) a device sends for these variables.

    ``format_package({"ab": 0.02, "ba": 1e-3})`` -> ``"Pab9312D00n;ba80F4240n"``
    A nonzero status is attached to every variable as ``,1X`` metadata.
    """
    items = values.items() if isinstance(values, dict) else values
    parts = []
    for vtype, value in items:
        meta = f",1{status:X}" if status else ""
        parts.append(f"{vtype}{encode_value(value)}{meta}")
    return "P" + ";".join(parts)


def error_code(line: str) -> int | None:
    """The 4-hex error code in a reply (``"Z!0006" -> 6``), or None."""
    m = _ERROR_RE.search(line)
    return int(m.group(1), 16) if m else None


def format_si(value: float) -> str:
    """A number for a script line: an integer with an SI prefix (``0.00113 -> "1130u"``)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} into a script")
    if value == 0:
        return "0"
    for p in ["", "m", "u", "n", "p"]:
        factor = {"": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}[p]
        scaled = value / factor
        mantissa = round(scaled)
        # relative to the value itself: 1e-9 must not become "0" (nor 1.5e-9 "2n")
        if mantissa and abs(scaled - mantissa) <= 1e-9 * abs(scaled):
            return f"{mantissa}{p}"
    return f"{round(value / 1e-12)}p"


def parse_si(text: str) -> float:
    """Inverse of format_si: ``"1130u" -> 0.00113``."""
    text = text.strip()
    if text and text[-1] in "afpnumkMGT":
        return int(text[:-1]) * PREFIXES[text[-1]]
    return float(int(text))
