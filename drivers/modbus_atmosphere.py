"""Glovebox atmosphere (O2, H2O, temperature) from a Modbus transmitter, over TCP or RTU.

No glovebox maker publishes a register map, so the map is data, taken from the station file:
each reading is one ``RegisterSpec`` (where it lives, how it is encoded, in which unit), and a
``RegisterMap`` is the device id plus those specs. Two maps ship as presets::

    VAISALA_H2O   device 240, holding registers, IEEE-754 float32, least-significant word first
                  (as Vaisala transmitters send it); an unavailable reading is a quiet NaN
        0x0014  h2o_ppm        float32  ppmv
        0x0002  temperature_K  float32  degC   (converted to K by the driver)
    NARIG_O2      narig's own labelled map (no public map exists), device 1, holding registers
        0x0000  o2_ppm         float32  ppm    most-significant word first

Reading one, in a notebook::

    sensor = ModbusAtmosphereSensor(VAISALA_H2O, host="192.168.1.40")
    sensor.read()    # -> {'h2o_ppm': 0.21, 'temperature_K': 297.4}

Units: ``read()`` returns ppm (ppmv is the same mole fraction for a gas) and kelvin; a NaN from
the device comes back as NaN (the caller decides what an unavailable reading means).

The wire: one read request per spec (function 3 for ``holding``, 4 for ``input``), with the
spec's register count (2 for float32, 1 for int16/uint16). Decoding and encoding are pure
functions (``decode``, ``encode``, ``in_rig_units``, ``in_device_units``), fuzzable alone.

Errors (``drivers.base``), after ``retries`` further attempts with a bounded exponential backoff
(``backoff_s`` doubling up to ``backoff_max_s``) for the transient ones:

* ``InstrumentTimeout``: no answer within ``timeout_s`` (the connection or port is reopened
  before the next attempt, so a late answer cannot be taken for the next one);
* ``ModbusExceptionReply`` (an ``InstrumentProtocolError``): the device answered with a Modbus
  exception; the message names the code, its meaning, the quantity and the register. Codes
  4, 5, 6 and 11 (device failure, acknowledge, busy, gateway target silent) are retried; the
  others (illegal function/address/value...) are configuration errors and raised at once;
* ``InstrumentProtocolError``: an answer of the wrong shape (register count);
* ``InstrumentGone``: the connection cannot be opened (refused, no route, no serial port) or the
  device closed it, on every attempt.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.base import InstrumentGone, InstrumentProtocolError, InstrumentTimeout, RetriedFaults

# What a spec may say, and the allowed values (used in error messages, in this order).
QUANTITIES = ("o2_ppm", "h2o_ppm", "temperature_K")
TYPES = {"float32": 2, "int16": 1, "uint16": 1}  # type -> registers it occupies
WORD_ORDERS = ("big", "little")
FUNCTIONS = {"holding": 3, "input": 4}  # register table -> Modbus read function code
UNITS = {  # quantity -> units a device may report it in; the first is the quantity's own
    "o2_ppm": ("ppm", "ppmv"),
    "h2o_ppm": ("ppm", "ppmv"),
    "temperature_K": ("K", "degC"),
}
ZERO_CELSIUS_K = 273.15
MAX_DEVICE_ID = 255

# Modbus exception codes (Modbus Application Protocol v1.1b3, section 7).
MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
TRANSIENT_EXCEPTIONS = frozenset({4, 5, 6, 11})


class RegisterMapError(ValueError):
    """A register map that cannot be used; ``field`` is the offending field's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ModbusExceptionReply(InstrumentProtocolError):
    """The device answered a read with a Modbus exception ``code``."""

    def __init__(self, message: str, code: int, spec: RegisterSpec) -> None:
        super().__init__(message)
        self.code = code
        self.spec = spec


def _one_of(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise RegisterMapError(name, f"{value!r} is not one of: {', '.join(allowed)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where one reading lives and how it is encoded.

    ``unit`` defaults to the unit in the quantity's name (``ppm`` for ``o2_ppm``, ``K`` for
    ``temperature_K``). The value on the wire is ``reading / scale`` (so an int16 register
    holding ``1234`` with ``scale=0.01`` reads ``12.34``).

    >>> RegisterSpec("h2o_ppm", 0x14, "float32", word_order="little", unit="ppmv").count
    2
    """

    quantity: str
    address: int
    type: str
    scale: float = 1.0
    word_order: str = "big"
    unit: str | None = None
    function: str = "holding"

    def __post_init__(self) -> None:
        _one_of("quantity", self.quantity, QUANTITIES)
        _one_of("type", self.type, tuple(TYPES))
        _one_of("word_order", self.word_order, WORD_ORDERS)
        _one_of("function", self.function, tuple(FUNCTIONS))
        if not _is_int(self.address) or not 0 <= self.address <= 0xFFFF - TYPES[self.type] + 1:
            raise RegisterMapError(
                "address", f"{self.address!r} is not an integer in 0..{0x10000 - TYPES[self.type]}"
                f" (a {self.type} occupies {TYPES[self.type]} register(s))")
        if (not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool)
                or not math.isfinite(self.scale) or self.scale == 0):
            raise RegisterMapError("scale", f"{self.scale!r} is not a finite, non-zero number")
        if self.unit is None:
            object.__setattr__(self, "unit", UNITS[self.quantity][0])
        _one_of("unit", self.unit, UNITS[self.quantity])

    @property
    def count(self) -> int:
        """How many 16-bit registers the reading occupies."""
        return TYPES[self.type]

    @property
    def function_code(self) -> int:
        return FUNCTIONS[self.function]

    def describe(self) -> str:
        """``h2o_ppm at holding register 0x0014 (float32, little word order, ppmv)``"""
        order = f", {self.word_order} word order" if self.count > 1 else ""
        scale = f", x{self.scale:g}" if self.scale != 1 else ""
        return (f"{self.quantity} at {self.function} register 0x{self.address:04X} "
                f"({self.type}{order}{scale}, {self.unit})")


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A device id (the Modbus unit id, 0..255) and the readings it serves."""

    device_id: int
    registers: tuple[RegisterSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _is_int(self.device_id) or not 0 <= self.device_id <= MAX_DEVICE_ID:
            raise RegisterMapError(
                "device_id", f"{self.device_id!r} is not an integer in 0..{MAX_DEVICE_ID}")
        object.__setattr__(self, "registers", tuple(self.registers))
        if not self.registers:
            raise RegisterMapError("registers", "at least one register is needed")
        for i, spec in enumerate(self.registers):
            if not isinstance(spec, RegisterSpec):
                raise RegisterMapError(f"registers[{i}]", f"{spec!r} is not a RegisterSpec")
            for j, other in enumerate(self.registers[:i]):
                if other.quantity == spec.quantity:
                    raise RegisterMapError(
                        f"registers[{i}].quantity",
                        f"{spec.quantity!r} is already read by registers[{j}]")
                if other.function == spec.function and _overlap(other, spec):
                    raise RegisterMapError(
                        f"registers[{i}].address",
                        f"0x{spec.address:04X} overlaps registers[{j}] ({other.describe()})")

    def spec(self, quantity: str) -> RegisterSpec:
        for spec in self.registers:
            if spec.quantity == quantity:
                return spec
        raise KeyError(quantity)


def _overlap(a: RegisterSpec, b: RegisterSpec) -> bool:
    return a.address < b.address + b.count and b.address < a.address + a.count


VAISALA_H2O = RegisterMap(
    device_id=240,
    registers=(
        RegisterSpec("h2o_ppm", 0x0014, "float32", word_order="little", unit="ppmv"),
        RegisterSpec("temperature_K", 0x0002, "float32", word_order="little", unit="degC"),
    ),
)
"""A Vaisala-style H2O transmitter (DPT145/DMT-like): LSW first, NaN when unavailable."""

NARIG_O2 = RegisterMap(
    device_id=1,
    registers=(RegisterSpec("o2_ppm", 0x0000, "float32", word_order="big", unit="ppm"),),
)
"""narig's own labelled O2 map (no maker publishes one): float32 ppm at 0x0000, MSW first."""

PRESETS = {"vaisala_h2o": VAISALA_H2O, "narig_o2": NARIG_O2}


# ---------------------------------------------------------------- pure codec

def decode(registers: Sequence[int], spec: RegisterSpec) -> float:
    """Registers as read -> the reading in the spec's unit (NaN passes through).

    >>> decode([0x0000, 0x3FC0], RegisterSpec("h2o_ppm", 0x14, "float32", word_order="little"))
    1.5
    >>> decode([0xFF9C], RegisterSpec("temperature_K", 0, "int16", scale=0.1, unit="degC"))
    -10.0
    """
    if len(registers) != spec.count:
        raise InstrumentProtocolError(
            f"{spec.describe()}: expected {spec.count} register(s), got {len(registers)}")
    if any(not _is_int(r) or not 0 <= r <= 0xFFFF for r in registers):
        raise InstrumentProtocolError(f"{spec.describe()}: not 16-bit registers: {registers!r}")
    if spec.type == "float32":
        words = list(registers) if spec.word_order == "big" else list(reversed(registers))
        raw: float = struct.unpack(">f", struct.pack(">2H", *words))[0]
    elif spec.type == "int16":
        raw = struct.unpack(">h", struct.pack(">H", registers[0]))[0]
    else:
        raw = registers[0]
    return raw * spec.scale if spec.scale != 1 else float(raw)


def encode(value: float, spec: RegisterSpec) -> list[int]:
    """The reading in the spec's unit -> the registers a device sends (inverse of ``decode``).

    >>> encode(1.5, RegisterSpec("o2_ppm", 0, "float32"))
    [16320, 0]

    Raises ValueError when the value does not fit the type (NaN or out of range for an
    integer, beyond float32's range).
    """
    scaled = value / spec.scale
    if spec.type == "float32":
        try:
            words = list(struct.unpack(">2H", struct.pack(">f", scaled)))
        except OverflowError as exc:
            raise ValueError(f"{value!r} does not fit a float32 ({spec.describe()})") from exc
        return words if spec.word_order == "big" else words[::-1]
    if not math.isfinite(scaled):
        raise ValueError(f"{value!r} cannot be sent as {spec.type} ({spec.describe()})")
    raw = round(scaled)
    lo, hi = (-0x8000, 0x7FFF) if spec.type == "int16" else (0, 0xFFFF)
    if not lo <= raw <= hi:
        raise ValueError(f"{value!r} / {spec.scale:g} = {raw} is outside {spec.type} "
                         f"({lo}..{hi}) ({spec.describe()})")
    return [raw & 0xFFFF]


def in_rig_units(value: float, spec: RegisterSpec) -> float:
    """The device's unit -> the quantity's own (ppmv is ppm; degC -> K)."""
    return value + ZERO_CELSIUS_K if spec.unit == "degC" else value


def in_device_units(value: float, spec: RegisterSpec) -> float:
    """The quantity's own unit -> the device's (inverse of ``in_rig_units``)."""
    return value - ZERO_CELSIUS_K if spec.unit == "degC" else value


# ---------------------------------------------------------------- station-file tables

_SPEC_KEYS = ("quantity", "address", "type", "scale", "word_order", "unit", "function")
_REQUIRED_SPEC_KEYS = ("quantity", "address", "type")


def map_from_dict(d: Mapping[str, Any], where: str) -> RegisterMap:
    """A station-file table -> RegisterMap; errors name ``where`` and the field path.

    Either a preset (``{"preset": "vaisala_h2o"}``, optionally with ``device_id``) or a full
    map::

        device_id = 240
        registers = [
          { quantity = "h2o_ppm", address = 0x0014, type = "float32",
            word_order = "little", unit = "ppmv" },
        ]

    A mistake reads ``lab.toml: atmosphere.map.registers[0].type: 'floot' is not one of:
    float32, int16, uint16``.
    """
    if not isinstance(d, Mapping):
        raise RegisterMapError(where, f"expected a table, got {type(d).__name__}")
    if "preset" in d:
        return _preset_from_dict(d, where)
    _check_keys(d, ("device_id", "registers"), ("device_id", "registers"), where)
    registers = d["registers"]
    if not isinstance(registers, Sequence) or isinstance(registers, (str, bytes)):
        raise RegisterMapError(f"{where}.registers",
                               f"expected a list of tables, got {type(registers).__name__}")
    specs = [_spec_from_dict(r, f"{where}.registers[{i}]") for i, r in enumerate(registers)]
    try:
        return RegisterMap(device_id=d["device_id"], registers=tuple(specs))
    except RegisterMapError as exc:
        raise RegisterMapError(f"{where}.{exc.field}", exc.message) from None


def _preset_from_dict(d: Mapping[str, Any], where: str) -> RegisterMap:
    _check_keys(d, ("preset", "device_id"), ("preset",), where)
    name = d["preset"]
    if not isinstance(name, str) or name.lower() not in PRESETS:
        raise RegisterMapError(f"{where}.preset",
                               f"{name!r} is not one of: {', '.join(PRESETS)}")
    preset = PRESETS[name.lower()]
    if "device_id" not in d:
        return preset
    try:
        return replace(preset, device_id=d["device_id"])
    except RegisterMapError as exc:
        raise RegisterMapError(f"{where}.{exc.field}", exc.message) from None


def _spec_from_dict(r: object, where: str) -> RegisterSpec:
    if not isinstance(r, Mapping):
        raise RegisterMapError(where, f"expected a table, got {type(r).__name__}")
    _check_keys(r, _SPEC_KEYS, _REQUIRED_SPEC_KEYS, where)
    try:
        return RegisterSpec(**{k: r[k] for k in _SPEC_KEYS if k in r})
    except RegisterMapError as exc:
        raise RegisterMapError(f"{where}.{exc.field}", exc.message) from None


def _check_keys(d: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str],
                where: str) -> None:
    for key in d:
        if key not in allowed:
            raise RegisterMapError(f"{where}.{key}",
                                   f"unknown field (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in d:
            raise RegisterMapError(f"{where}.{key}", "missing (required)")


# ---------------------------------------------------------------- the driver

class _Transient(Exception):
    """One failed attempt that a retry may cure; ``error`` is what to raise if none does."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class ModbusAtmosphereSensor:
    """An AtmosphereSensor (drivers.base) on a Modbus transmitter, TCP (``host``) or RTU
    (``serial_port``, 8N1 at ``baudrate``). Synchronous; use it from one thread at a time.
    """

    def __init__(
        self,
        map: RegisterMap,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 19200,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        backoff_max_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (host is None) == (serial_port is None):
            raise ValueError("give exactly one of host= (Modbus TCP) or serial_port= (RTU)")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or backoff_max_s < 0:
            raise ValueError("timeout_s must be > 0; retries, backoff_s, backoff_max_s >= 0")
        self.map = map
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._client: ModbusTcpClient | ModbusSerialClient
        # pymodbus retries=0: this driver does its own retrying, to classify each failure.
        if host is not None:
            self.where = f"Modbus TCP {host}:{port} device {map.device_id}"
            self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        else:
            assert serial_port is not None
            self.where = f"Modbus RTU {serial_port}@{baudrate} device {map.device_id}"
            self._client = ModbusSerialClient(
                serial_port, framer=FramerType.RTU, baudrate=baudrate, bytesize=8,
                parity="N", stopbits=1, timeout=timeout_s, retries=0)
        self._closed = False
        self.retried = RetriedFaults()

    def read(self) -> dict[str, float]:
        """Every reading of the map, in ppm and K: ``{'h2o_ppm': 0.2, 'temperature_K': 297.4}``."""
        return {spec.quantity: self.read_quantity(spec) for spec in self.map.registers}

    def read_quantity(self, spec: RegisterSpec) -> float:
        """One reading in the quantity's unit (ppm or K); NaN when the device sends NaN."""
        return in_rig_units(decode(self.read_registers(spec), spec), spec)

    def read_registers(self, spec: RegisterSpec) -> list[int]:
        """The raw registers of one spec, with retries and backoff on transient faults."""
        if self._closed:
            raise InstrumentGone(f"{self.where}: the sensor was closed")
        for attempt in range(self.retries + 1):
            try:
                return self._read_once(spec)
            except _Transient as failure:
                if attempt == self.retries:
                    raise failure.error from None
                self.retried.record(f"{type(failure.error).__name__}: {failure.error}")
                self._sleep(min(self.backoff_max_s, self.backoff_s * 2 ** attempt))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- one attempt
    def _read_once(self, spec: RegisterSpec) -> list[int]:
        what = f"{self.where}: reading {spec.describe()}"
        if not self._client.connected and not self._client.connect():
            raise _Transient(InstrumentGone(f"{self.where}: cannot connect (refused, "
                                            "unreachable or no such port)"))
        read = (self._client.read_holding_registers if spec.function == "holding"
                else self._client.read_input_registers)
        try:
            reply = read(spec.address, count=spec.count, device_id=self.map.device_id)
        except (ConnectionException, OSError):  # pyserial's SerialException is an OSError
            self._client.close()
            raise _Transient(InstrumentGone(f"{what}: the connection was closed")) from None
        except ModbusIOException as exc:
            self._client.close()  # reopened next time: a late reply cannot pass for the next one
            if "no response" not in str(exc).lower():  # an answer to another id or transaction
                raise _Transient(InstrumentProtocolError(f"{what}: {exc}")) from None
            raise _Transient(InstrumentTimeout(
                f"{what}: no answer within {self.timeout_s:g} s")) from None
        except ModbusException as exc:
            raise InstrumentProtocolError(f"{what}: {exc}") from None
        if reply.isError():
            raise self._exception_reply(reply, spec, what)
        registers = list(getattr(reply, "registers", []))
        if len(registers) != spec.count:
            raise InstrumentProtocolError(
                f"{what}: expected {spec.count} register(s), got {len(registers)}")
        return registers

    def _exception_reply(self, reply: Any, spec: RegisterSpec, what: str) -> Exception:
        code = int(getattr(reply, "exception_code", 0))
        meaning = MODBUS_EXCEPTIONS.get(code, "unknown exception code")
        hint = ""
        if code == 11:
            hint = f"; is device id {self.map.device_id} right?"
        elif code == 2:
            hint = "; does the register map match this device?"
        error = ModbusExceptionReply(
            f"{what}: Modbus exception {code} ({meaning}){hint}", code, spec)
        return _Transient(error) if code in TRANSIENT_EXCEPTIONS else error
