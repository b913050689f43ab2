"""The station: which instrument drives which channel, which sensors watch the cells, and the
interlock thresholds; read from a station file (TOML) and opened, ready for the engine.

    station = load_station("glovebox-1.toml", clock)
    hw = station.channel(0)           # .driver (a Potentiostat), .link, .instrument
    for s in station.sensors: ...      # SensorHardware: atmosphere or pressure, with its Link
    station.interlocks.o2_max_ppm      # 1.0
    station.close()                    # outputs off, transports closed

With no station file the rig builds the simulated station (``simulated_station``): the same
kind of station file is generated for the protocol's cells, simulated instruments are started
to serve it (``rig.sim.serve``), and it is opened exactly like hardware. There is no shortcut
path: simulated channels and sensors go through the production drivers and the real bytes.

The file format is docs/station.md. Reading is in three steps, each usable alone:
``parse_station(text, source)`` (pydantic, every problem as ``<file>: <field.path>: <message>``)
-> ``open_station(config, clock)`` (drivers on their transports, one Link per connection) ->
the engine. ``check_station(config)`` opens, identifies and reads every instrument and sensor
once, for ``rig station check``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import re
import tomllib
import typing
import zlib
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from drivers.base import InstrumentError, Potentiostat, Ranges
from protocols.messages import path_of, show
from protocols.plan import ChannelPlan, Plan, Safety
from protocols.units import Dimension, Time, Volume, parse_quantity, quantity_type
from rig.clock import RealClock, VirtualClock
from rig.engine.interlocks import AtmosphereLimits as Interlocks
from rig.engine.link import Link

Clock = RealClock | VirtualClock


class StationError(Exception):
    """A station file or an instrument that cannot be used; one line per problem, each saying
    which (file, field path or instrument) and why."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# ---- quantities a station file needs beyond protocols.units -------------------------------------
PRESSURE = Dimension("pressure", "Pa", "1.5 bar", "bar", True)
PRESSURE_RATE = Dimension("pressure rate", "Pa/s", "50 mbar/h", "mbar/h", True)
_TIME_OR_ZERO = Dimension("time", "s", "30 s", "s", False)

RESISTANCE = Dimension("resistance", "ohm", "1 kohm", "ohm", True)
Pressure = quantity_type(PRESSURE)
Resistance = quantity_type(RESISTANCE)
PressureRate = quantity_type(PRESSURE_RATE)

_PPM_TEXT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)\s*")
PPM_UNITS = {"ppm": 1.0, "ppmv": 1.0, "ppb": 1e-3, "ppbv": 1e-3}
_PPM_EXAMPLE = 'expected e.g. "1 ppm"'


def _fail(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("quantity", message, context)


def parse_ppm(value: Any, positive: bool = True) -> float:
    """A mole fraction as text -> ppm: ``parse_ppm("500 ppb") -> 0.5`` (ppm, ppmv, ppb)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(f"must be text with a unit ({_PPM_EXAMPLE})")
    if not isinstance(value, str):
        raise _fail(f"{{given}} has no unit ({_PPM_EXAMPLE})", given=repr(value))
    given = json.dumps(value, ensure_ascii=False)
    m = _PPM_TEXT.fullmatch(value)
    if not m:
        raise _fail(f"{{given}} is not a mole fraction ({_PPM_EXAMPLE})", given=given)
    if not m.group(2):
        raise _fail(f"{{given}} has no unit ({_PPM_EXAMPLE})", given=given)
    unit = m.group(2).lower()
    if unit not in PPM_UNITS:
        raise _fail(f"{{given}}: the unit must be one of {', '.join(PPM_UNITS)} ({_PPM_EXAMPLE})",
                    given=given)
    ppm = float(m.group(1)) * PPM_UNITS[unit]
    if not math.isfinite(ppm) or ppm < 0 or (positive and ppm == 0):
        raise _fail(f"must be {'greater than zero' if positive else 'zero or more'} "
                    "(got {given})", given=given)
    return ppm


def _ppm_type(positive: bool) -> Any:
    schema = {"type": "string", "description": 'mole fraction, e.g. "1 ppm"', "examples": ["1 ppm"]}
    return Annotated[float, BeforeValidator(lambda v: parse_ppm(v, positive)),
                     WithJsonSchema(schema)]


def _time_or_zero(value: Any) -> float:
    seconds = parse_quantity(value, _TIME_OR_ZERO)
    if seconds < 0:
        raise _fail("must not be negative (got {given})", given=json.dumps(value))
    return seconds


Ppm = _ppm_type(positive=True)
PpmOrZero = _ppm_type(positive=False)
TimeOrZero = Annotated[float, BeforeValidator(_time_or_zero)]


def _register_map(value: Any) -> Any:
    """``map = "vaisala_h2o"`` or an inline table (drivers.modbus_atmosphere.map_from_dict)."""
    from drivers.modbus_atmosphere import PRESETS, RegisterMapError, map_from_dict

    presets = ", ".join(PRESETS)
    if isinstance(value, str):
        if value.lower() in PRESETS:
            return PRESETS[value.lower()]
        close = difflib.get_close_matches(value.lower(), list(PRESETS), n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        raise PydanticCustomError(
            "register_map", "{given} is not a preset ({hint}presets: {presets}; or write the "
            "map as a table: {table})", {"given": show(value), "hint": hint, "presets": presets,
                                         "table": "{ device_id = 240, registers = [...] }",
                                         "field": ""})
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "register_map", "must be a preset name ({presets}) or a register table (got {given})",
            {"given": show(value), "presets": presets, "field": ""})
    try:
        return map_from_dict(value, "")
    except RegisterMapError as exc:
        raise PydanticCustomError("register_map", "{message}", {
            "message": exc.message, "field": exc.field.lstrip(".")}) from None


# ---- the file, as pydantic models ----------------------------------------------------------------
class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


_NAME = Field(min_length=1, description="unique in the station; names the instrument everywhere",
              examples=["es4-a"])


class EmStat4Entry(_Table):
    """A PalmSens EmStat4 on a serial port (MethodSCRIPT)."""

    name: str = _NAME
    driver: Literal["emstat4"]
    port: str = Field(min_length=1, examples=["/dev/ttyUSB0"])
    baudrate: int = Field(921600, gt=0, strict=True, examples=[921600])
    description: str = ""


class Keithley2450Entry(_Table):
    """A Keithley 2450 (or a 2400 with ``command_set = "2400"``) over VISA."""

    name: str = _NAME
    driver: Literal["keithley2450"]
    resource: str = Field(min_length=1, examples=["TCPIP0::192.168.1.50::5025::SOCKET"])
    command_set: Literal["2450", "2400"] = "2450"
    description: str = ""


DRIVERS: dict[str, type[_Table]] = {"emstat4": EmStat4Entry, "keithley2450": Keithley2450Entry}
InstrumentEntry = Annotated[EmStat4Entry | Keithley2450Entry, Field(discriminator="driver")]


class ChannelEntry(_Table):
    """Which instrument drives the cell at one channel (cell position)."""

    channel: int = Field(ge=0, strict=True, examples=[0])
    instrument: str = Field(min_length=1, examples=["es4-a"])
    # a test resistor wired in place of a cell (hil/ checks E = I x R on it; `rig sim serve`
    # simulates it)
    dummy_resistor: Resistance | None = Field(None, examples=["1 kohm"])


class AtmosphereEntry(_Table):
    """A glovebox O2/H2O transmitter over Modbus TCP (host) or RTU (serial_port)."""

    name: str = _NAME
    kind: Literal["atmosphere"]
    host: str | None = Field(None, min_length=1, examples=["192.168.1.40"])
    port: int = Field(502, ge=1, le=65535, strict=True, examples=[502])
    serial_port: str | None = Field(None, min_length=1, examples=["/dev/ttyUSB1"])
    baudrate: int = Field(19200, gt=0, strict=True, examples=[19200])
    map: Annotated[Any, BeforeValidator(_register_map)] = Field(examples=["vaisala_h2o"])
    poll_interval: Time = Field(10.0, examples=["10 s"])


class PressureEntry(_Table):
    """A KELLER Series 30 / X-Line transmitter on a serial port; with ``channel``, the sealed
    gas holder of that channel's cell."""

    name: str = _NAME
    kind: Literal["pressure"]
    port: str = Field(min_length=1, examples=["/dev/ttyUSB2"])
    address: int = Field(250, ge=1, le=250, strict=True, examples=[250])
    baudrate: int = Field(9600, gt=0, strict=True, examples=[9600])
    channel: int | None = Field(None, ge=0, strict=True, examples=[0])
    headspace: Volume | None = Field(None, examples=["5 mL"])
    limit: Pressure | None = Field(None, examples=["2 bar"])
    rate_warning: PressureRate | None = Field(None, examples=["50 mbar/h"])
    poll_interval: Time = Field(10.0, examples=["10 s"])


SENSOR_KINDS: dict[str, type[_Table]] = {"atmosphere": AtmosphereEntry,
                                         "pressure": PressureEntry}
SensorEntry = Annotated[AtmosphereEntry | PressureEntry, Field(discriminator="kind")]
Problem = tuple[str, str]


class InterlocksEntry(_Table):
    """Station interlocks: atmosphere thresholds and how they trip and clear."""

    o2_max: Ppm = Field(1.0, examples=["1 ppm"])
    h2o_max: Ppm = Field(1.0, examples=["1 ppm"])
    hysteresis: PpmOrZero = Field(0.2, examples=["0.2 ppm"])
    hold_off: TimeOrZero = Field(30.0, examples=["30 s"])
    clear_for: TimeOrZero = Field(600.0, examples=["10 min"])
    sensor_timeout: Time = Field(60.0, examples=["60 s"])
    resume_when_clear: bool = Field(True, strict=True, examples=[True])


class StationFile(_Table):
    """A whole station file."""

    name: str | None = Field(None, min_length=1, examples=["glovebox-1"])
    description: str = ""
    instruments: list[InstrumentEntry] = Field(min_length=1)
    channels: list[ChannelEntry] = Field(min_length=1)
    sensors: list[SensorEntry] = Field(default_factory=list)
    interlocks: InterlocksEntry = Field(default_factory=InterlocksEntry)

    def problems(self) -> list[Problem]:
        """Checks across tables: unique names and ports, channels that exist, holders."""
        return [*self._name_problems(), *self._channel_problems(), *self._port_problems(),
                *self._holder_problems(), *self._interlock_problems()]

    def instrument(self, name: str) -> EmStat4Entry | Keithley2450Entry:
        return next(i for i in self.instruments if i.name == name)

    def _name_problems(self) -> list[Problem]:
        seen: dict[str, str] = {}
        out = []
        for where, entry in _entries(self):
            if entry.name in seen:
                out.append((f"{where}.name", (f"{show(entry.name)} is already the name of "
                                             f"{seen[entry.name]}; names must be unique")))
            seen.setdefault(entry.name, where)
        return out

    def _channel_problems(self) -> list[Problem]:
        known = [i.name for i in self.instruments]
        channels: dict[int, int] = {}
        users: dict[str, int] = {}
        out = []
        for k, ch in enumerate(self.channels):
            if ch.instrument not in known:
                out.append((f"channels[{k}].instrument", (f"{show(ch.instrument)} is not in "
                            f"[[instruments]] (known: {', '.join(known)})")))
            elif ch.instrument in users:
                out.append((f"channels[{k}].instrument", (f"{show(ch.instrument)} already drives "
                            f"channels[{users[ch.instrument]}]; each instrument has one channel")))
            if ch.channel in channels:
                out.append((f"channels[{k}].channel", (f"channel {ch.channel} is already "
                                                      f"in channels[{channels[ch.channel]}]")))
            channels.setdefault(ch.channel, k)
            users.setdefault(ch.instrument, k)
        return out

    def _port_problems(self) -> list[Problem]:
        seen: dict[tuple[Any, ...], str] = {}
        out = [(f"instruments[{k}].resource", (f"{show(e.resource)} is not a VISA resource name "
                '(e.g. "TCPIP0::192.168.1.50::5025::SOCKET")'))
               for k, e in enumerate(self.instruments)
               if isinstance(e, Keithley2450Entry) and "::" not in e.resource]
        for where, entry in _entries(self):
            key = _connection_key(entry)
            if key in seen:
                out.append((f"{where}.{_address_field(entry)}", (
                    f"{_address(entry)} is already used by {seen[key]}; one connection per "
                    "device (a shared RS-485 bus is not supported yet)")))
            seen.setdefault(key, where)
        return out

    def _holder_problems(self) -> list[Problem]:
        channels = sorted(c.channel for c in self.channels)
        holders: dict[int, int] = {}
        out = []
        for k, s in enumerate(self.sensors):
            where = f"sensors[{k}]"
            if isinstance(s, AtmosphereEntry):
                if (s.host is None) == (s.serial_port is None):
                    out.append((f"{where}.host", ("give exactly one of host (Modbus TCP, e.g. "
                                "host = \"192.168.1.40\") or serial_port (Modbus RTU)")))
                continue
            if s.channel is None:
                for name in ("headspace", "limit", "rate_warning"):
                    if getattr(s, name) is not None:
                        out.append((f"{where}.{name}", ("only a gas holder has one: add the "
                                    "channel of its cell (channel = 0) or remove it")))
                continue
            if s.channel not in channels:
                out.append((f"{where}.channel", (f"{s.channel} is not a channel of this station "
                            f"(channels: {', '.join(map(str, channels))})")))
            elif s.channel in holders:
                out.append((f"{where}.channel", (f"channel {s.channel} already has a gas holder "
                            f"(sensors[{holders[s.channel]}])")))
            holders.setdefault(s.channel, k)
            if s.headspace is None:
                out.append((f"{where}.headspace", ("missing; a gas holder needs its headspace "
                            'volume, e.g. headspace = "5 mL"')))
        return out

    def _interlock_problems(self) -> list[Problem]:
        il = self.interlocks
        out = []
        lowest = min(il.o2_max, il.h2o_max)
        if il.hysteresis >= lowest:
            out.append(("interlocks.hysteresis", (f"{il.hysteresis:g} ppm must be below the "
                        f"lowest threshold ({lowest:g} ppm), or the alarm could never clear")))
        for k, s in enumerate(self.sensors):
            if isinstance(s, AtmosphereEntry) and s.poll_interval >= il.sensor_timeout:
                out.append(("interlocks.sensor_timeout", (f"{il.sensor_timeout:g} s is not longer "
                            f"than sensors[{k}] ({s.name}) poll_interval {s.poll_interval:g} s: "
                            "every poll would count as a silent sensor")))
        return out


def _entries(config: StationFile) -> list[tuple[str, Any]]:
    return ([(f"instruments[{k}]", e) for k, e in enumerate(config.instruments)]
            + [(f"sensors[{k}]", e) for k, e in enumerate(config.sensors)])


def _connection_key(entry: Any) -> tuple[Any, ...]:
    if isinstance(entry, Keithley2450Entry):
        return ("visa", entry.resource.lower())
    if isinstance(entry, AtmosphereEntry):
        if entry.host is not None:
            return ("tcp", entry.host.lower(), entry.port, entry.map.device_id)
        return ("serial", entry.serial_port)
    return ("serial", entry.port)


def _address_field(entry: Any) -> str:
    """The field that says where an entry's device is."""
    if isinstance(entry, Keithley2450Entry):
        return "resource"
    if isinstance(entry, AtmosphereEntry):
        return "host" if entry.host is not None else "serial_port"
    return "port"


def _address(entry: Any) -> str:
    """Where an entry's device is reached, as people write it."""
    if isinstance(entry, Keithley2450Entry):
        return entry.resource
    if isinstance(entry, AtmosphereEntry):
        if entry.host is not None:
            return f"{entry.host}:{entry.port} (Modbus TCP, device {entry.map.device_id})"
        return f"{entry.serial_port} (Modbus RTU, device {entry.map.device_id})"
    if isinstance(entry, PressureEntry):
        return f"{entry.port} (address {entry.address})"
    return entry.port


# ---- error messages --------------------------------------------------------------------------
_UNIONS = {"instruments": ("driver", DRIVERS), "sensors": ("kind", SENSOR_KINDS)}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _walk(loc: Sequence[Any]) -> tuple[list[Any], type[BaseModel] | None, str | None]:
    """A pydantic loc without union tags, the model holding its last field, and that field."""
    clean: list[Any] = []
    model: type[BaseModel] | None = StationFile
    holder: type[BaseModel] | None = None
    last: str | None = None
    union: dict[str, type[_Table]] | None = None
    for part in loc:
        if isinstance(part, int):
            clean.append(part)
            continue
        if union is not None and part in union:
            model, union = union[part], None
            continue
        clean.append(part)
        holder, last = model, str(part)
        info = model.model_fields.get(last) if model is not None else None
        union = _UNIONS[last][1] if model is StationFile and last in _UNIONS else None
        model = _submodel(info.annotation) if info is not None else None
    return clean, holder, last


def _example(holder: type[BaseModel] | None, name: str | None) -> str | None:
    info = holder.model_fields.get(name) if holder is not None and name else None
    if info is None or not info.examples:
        return None
    return f"{name} = {show(info.examples[0])}"


def describe(error: Any) -> Problem:
    """One pydantic error as ``(field path, message)``, the way the file is written."""
    kind, ctx = error["type"], error.get("ctx") or {}
    loc, holder, last = _walk(error["loc"])
    path = path_of(tuple(loc))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag, choices = _UNIONS.get(str(loc[0]) if loc else "", ("kind", {}))
        path = f"{path}.{tag}"
        if kind == "union_tag_not_found":
            return path, f"missing; say which, one of {', '.join(choices)}"
        return path, f"{show(ctx.get('tag'))} is not one of {', '.join(choices)}"
    if kind == "register_map":
        sub = ctx.get("field") or ""
        return (f"{path}.{sub}" if sub else path), error["msg"]
    given = show(error.get("input"))
    example = _example(holder, last)
    eg = f", e.g. {example}" if example else ""
    quotes = " without quotes" if isinstance(error.get("input"), str) else ""
    simple = {
        "greater_than_equal": f"must be at least {ctx.get('ge')} (got {given})",
        "greater_than": f"must be greater than {ctx.get('gt')} (got {given})",
        "less_than_equal": f"must be at most {ctx.get('le')} (got {given})",
        "int_type": f"must be a whole number{quotes}{eg} (got {given})",
        "bool_type": f"must be true or false{eg} (got {given})",
        "string_type": f"must be text in quotes{eg} (got {given})",
        "string_too_short": "must not be empty",
        "list_type": f"must be a list of tables, [[{last}]] (got {given})",
        "too_short": f"at least one [[{last}]] table is needed",
        "model_type": f"must be a table (got {given})",
        "model_attributes_type": f"must be a table (got {given})",
        "dict_type": f"must be a table (got {given})",
    }
    if kind in simple:
        return path, simple[kind]
    if kind == "literal_error":
        info = holder.model_fields.get(str(last)) if holder is not None else None
        choices = typing.get_args(info.annotation) if info is not None else ()
        return path, f"{given} is not one of {', '.join(map(str, choices))}"
    if kind == "extra_forbidden":
        allowed = list(holder.model_fields) if holder is not None else []
        close = difflib.get_close_matches(str(last), allowed, n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        return path, f"unknown field ({hint}allowed: {', '.join(allowed)})"
    if kind == "missing":
        if last in ("instruments", "channels"):
            return path, f"missing; add at least one [[{last}]] table"
        return path, f"missing; add e.g. {example}" if example else "missing (required)"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return path, msg if kind == "quantity" else f"{msg[:1].lower()}{msg[1:]} (got {given})"


# ---- reading a file ----------------------------------------------------------------------------
def parse_station(text: str, source: str = "<station>") -> StationFile:
    """Station-file text -> the validated model, or a StationError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from protocols.load import toml_problem

        raise StationError(toml_problem(str(exc), text, source)) from None
    return validate_station(data, source)


def validate_station(data: dict[str, Any], source: str = "<station>") -> StationFile:
    """Parsed TOML -> the validated model (``source`` prefixes every error)."""
    try:
        config = StationFile.model_validate(data)
    except ValidationError as exc:
        problems = [describe(e) for e in exc.errors()]
        raise StationError([f"{source}: {p}: {m}" for p, m in problems]) from None
    problems = config.problems()
    if problems:
        raise StationError([f"{source}: {p}: {m}" for p, m in problems])
    if config.name is None:
        config = config.model_copy(update={"name": Path(source).stem})
    return config


def read_station_file(path: str | Path) -> StationFile:
    """Read and validate a station file (nothing is opened)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StationError(f"{path}: cannot read the file: {reason}") from None
    return parse_station(text, str(path))


# ---- the opened station ------------------------------------------------------------------------
@dataclass(frozen=True)
class HolderSpec:
    """The sealed gas holder a pressure gauge measures: its headspace and limits (SI)."""

    headspace_mL: float
    limit_Pa: float = 2e5  # absolute; above it the engine aborts that cell
    rate_warning_Pa_per_s: float | None = None  # a faster rise is logged as a warning


@dataclass
class ChannelHardware:
    driver: Potentiostat
    link: Link
    instrument: str  # a description for people and the store: driver, name, address


@dataclass
class SensorHardware:
    """A station sensor: ``driver.read()`` gives ``{'o2_ppm'|'h2o_ppm'|'temperature_K': ..}``
    (atmosphere) or ``(pressure Pa, temperature K)`` (pressure); call it through ``link``."""

    name: str
    kind: Literal["atmosphere", "pressure"]
    driver: Any  # drivers.base.AtmosphereSensor or PressureGauge
    link: Link
    poll_interval_s: float
    channel: int | None = None  # the cell whose gas holder a pressure gauge measures
    holder: HolderSpec | None = None
    address: str = ""


@dataclass
class Station:
    name: str
    simulated: bool
    channels: dict[int, ChannelHardware] = field(default_factory=dict)
    simulators: list[Any] = field(default_factory=list)  # potentiostats first, in channel order
    seed: int | None = None  # of the simulated cells, so a resumed run rebuilds the same ones
    sensors: list[SensorHardware] = field(default_factory=list)
    interlocks: Interlocks = field(default_factory=Interlocks)
    config: StationFile | None = None
    simulation: Any = None  # rig.sim.serve.SimulatedInstruments of a simulated station
    source: str | None = None  # the station file it came from (so `rig resume` can reopen it)
    _closed: bool = field(default=False, init=False, repr=False)

    def channel(self, n: int) -> ChannelHardware:
        if n not in self.channels:
            raise StationError(f"station {self.name!r} has no channel {n} "
                               f"(it has {sorted(self.channels)})")
        return self.channels[n]

    def sensor(self, name: str) -> SensorHardware:
        for s in self.sensors:
            if s.name == name:
                return s
        raise StationError(f"station {self.name!r} has no sensor {name!r} "
                           f"(it has {', '.join(s.name for s in self.sensors) or 'none'})")

    def holder_sensor(self, channel: int) -> SensorHardware | None:
        """The pressure gauge of a channel's gas holder, if it has one."""
        return next((s for s in self.sensors if s.channel == channel), None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "simulated": self.simulated, "seed": self.seed,
                "source": self.source,
                "channels": {str(k): v.instrument for k, v in self.channels.items()},
                "sensors": [{"name": s.name, "kind": s.kind, "address": s.address,
                             "channel": s.channel, "poll_interval_s": s.poll_interval_s,
                             "holder": dataclasses.asdict(s.holder) if s.holder else None}
                            for s in self.sensors],
                "interlocks": dataclasses.asdict(self.interlocks)}

    def clock_name(self, clock: Clock) -> str:
        if clock.is_virtual:
            return "virtual"
        return "real" if clock.speed == 1 else f"x{clock.speed:g}"

    def close(self) -> None:
        """Outputs off (best effort, each on its own connection's thread), then transports,
        then the simulators. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for hw in [*self.channels.values(), *self.sensors]:
            try:
                hw.link.call_blocking(hw.driver.close)
            except (InstrumentError, OSError, TimeoutError, RuntimeError):
                pass
            hw.link.close()
        if self.simulation is not None:
            self.simulation.close()
        else:
            for sim in self.simulators:
                sim.close()


def cell_seed(station_seed: int, cell_id: str) -> int:
    """Each simulated cell's seed: stable across runs, different between cells."""
    return zlib.crc32(f"{station_seed}:{cell_id}".encode())


# ---- opening drivers -----------------------------------------------------------------------------
def open_instrument(entry: EmStat4Entry | Keithley2450Entry, clock: Clock) -> Potentiostat:
    """The driver of one [[instruments]] entry, connected (raises InstrumentError)."""
    if isinstance(entry, EmStat4Entry):
        from drivers.emstat import EmStat4

        return EmStat4(entry.port, baudrate=entry.baudrate)
    from drivers.keithley2450 import Keithley2450

    return Keithley2450(entry.resource, command_set=entry.command_set, now=clock.now)


def open_sensor(entry: AtmosphereEntry | PressureEntry) -> Any:
    """The driver of one [[sensors]] entry (an AtmosphereSensor or a PressureGauge)."""
    if isinstance(entry, AtmosphereEntry):
        from drivers.modbus_atmosphere import ModbusAtmosphereSensor

        if entry.host is not None:
            return ModbusAtmosphereSensor(entry.map, host=entry.host, port=entry.port)
        return ModbusAtmosphereSensor(entry.map, serial_port=entry.serial_port,
                                      baudrate=entry.baudrate)
    from drivers.keller import KellerGauge

    return KellerGauge(entry.port, address=entry.address, baudrate=entry.baudrate)


def describe_instrument(entry: EmStat4Entry | Keithley2450Entry) -> str:
    """``EmStat4 es4-a on /dev/ttyUSB0`` (+ the entry's description)."""
    if isinstance(entry, EmStat4Entry):
        text = f"EmStat4 {entry.name} on {entry.port}"
    else:
        text = f"Keithley {entry.command_set} {entry.name} at {entry.resource}"
    return f"{text} ({entry.description})" if entry.description else text


def station_ranges(path: str | Path) -> dict[int, tuple[str, Ranges]]:
    """Channel -> (instrument, its ranges), read from a station file without opening anything
    (what `rig validate --station` checks a plan against)."""
    from drivers.emstat import EMSTAT4_LR_RANGES
    from drivers.keithley2450 import Keithley2450

    config = read_station_file(path)
    out = {}
    for ch in config.channels:
        entry = config.instrument(ch.instrument)
        ranges = EMSTAT4_LR_RANGES if isinstance(entry, EmStat4Entry) else Keithley2450.ranges
        out[ch.channel] = (describe_instrument(entry), ranges)
    return out


def holder_of(entry: PressureEntry) -> HolderSpec | None:
    if entry.channel is None or entry.headspace is None:
        return None
    return HolderSpec(entry.headspace, entry.limit if entry.limit is not None else 2e5,
                      entry.rate_warning)


def interlocks_of(entry: InterlocksEntry) -> Interlocks:
    return Interlocks(entry.o2_max, entry.h2o_max, entry.hysteresis, entry.hold_off,
                      entry.clear_for, entry.sensor_timeout, entry.resume_when_clear)


def open_station(config: StationFile, clock: Clock, *, source: str | None = None,
                 simulated: bool = False) -> Station:
    """Open the drivers of every channel and sensor of a validated station file."""
    name = config.name or "station"
    station = Station(name=name, simulated=simulated, interlocks=interlocks_of(config.interlocks),
                      config=config)
    prefix = f"{source}: " if source else ""
    try:
        for k, ch in enumerate(config.channels):
            entry = config.instrument(ch.instrument)
            try:
                driver = open_instrument(entry, clock)
            except (InstrumentError, OSError, ValueError) as exc:
                raise StationError(f"{prefix}channels[{k}] (channel {ch.channel}): cannot open "
                                   f"{entry.driver} {entry.name!r} at {_address(entry)}: {exc}"
                                   ) from None
            station.channels[ch.channel] = ChannelHardware(driver, Link(entry.name),
                                                           describe_instrument(entry))
        for k, s in enumerate(config.sensors):
            try:
                driver = open_sensor(s)
            except (InstrumentError, OSError, ValueError) as exc:
                raise StationError(f"{prefix}sensors[{k}] ({s.name}): cannot open {s.kind} "
                                   f"sensor at {_address(s)}: {exc}") from None
            station.sensors.append(SensorHardware(
                s.name, s.kind, driver, Link(s.name), s.poll_interval,
                s.channel if isinstance(s, PressureEntry) else None,
                holder_of(s) if isinstance(s, PressureEntry) else None, _address(s)))
    except BaseException:
        station.close()
        raise
    return station


def load_station(path: str | Path, clock: Clock | None = None) -> Station:
    """A station file, validated and opened. ``clock`` stamps readings of drivers that take
    one (the Keithley); default a RealClock. Raises StationError."""
    config = read_station_file(path)
    station = open_station(config, clock if clock is not None else RealClock(),
                           source=str(path))
    station.source = str(Path(path).resolve())
    return station


# ---- the simulated station -----------------------------------------------------------------------
def simulated_station(plan: Plan, clock: Clock, seed: int = 0, *,
                      keithley_channels: Collection[int] = (), glovebox_events: Sequence[Any] = (),
                      faults: dict[str, Any] | None = None) -> Station:
    """The built-in simulated station for ``plan`` (see ``rig.sim.serve.builtin_station_data``):

    per cell an EmStat4 (a Keithley 2450 for channels in ``keithley_channels``), a glovebox
    H2O transmitter (Vaisala map) and O2 transmitter (narig map) on one GloveboxModel (with
    ``glovebox_events``: rig.sim.glovebox Breach/Dropout), and a KELLER gauge per cell with a
    headspace. ``faults`` maps an instrument or sensor name (``es4-ch0``, ``k2450-ch1``,
    ``box-h2o``, ``box-o2``, ``keller-ch0``) to its simulator's fault profile.
    """
    from rig.sim.serve import SimulatedInstruments, builtin_station_data

    data = builtin_station_data(plan, keithley_channels=keithley_channels)
    sims = SimulatedInstruments(data, plan, clock, seed, glovebox_events=glovebox_events,
                                faults=faults)
    try:
        station = open_station(sims.config, clock, simulated=True)
    except BaseException:
        sims.close()
        raise
    station.name, station.seed = "simulated", seed
    station.simulation, station.simulators = sims, sims.simulators
    return station


DUMMY_KEITHLEY_CHANNELS = (1,)  # the default simulated station's Keithley channel


def dummy_plan(headspace_mL: float | None = 5.0) -> Plan:
    """Two glyme Na||Na cells and no steps: what `station check` and `sim serve` simulate when
    no protocol is given. Channel 0 (in a gas holder) is an EmStat4 channel; channel 1 goes on
    the simulated Keithley 2450 (DUMMY_KEITHLEY_CHANNELS)."""
    from protocols.plan import CellSpec

    cells = (CellSpec(0, "check-0", "symmetric", 1.13, "1 M NaPF6 in diglyme",
                      headspace_mL=headspace_mL),
             CellSpec(1, "check-1", "symmetric", 1.13, "1 M NaPF6 in diglyme"))
    return Plan("station_check", "station check", Safety(-1.0, 1.0, 0.01),
                tuple(ChannelPlan(c, ()) for c in cells))


# ---- rig station check ---------------------------------------------------------------------------
@dataclass
class CheckResult:
    """One instrument or sensor opened, identified and read once."""

    name: str
    driver: str
    address: str
    expected: str
    identity: str = ""
    reading: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _expected(entry: Any) -> str:
    if isinstance(entry, EmStat4Entry):
        return f"an EmStat4 answering MethodSCRIPT at {entry.baudrate} baud"
    if isinstance(entry, Keithley2450Entry):
        return f"a Keithley {entry.command_set} answering SCPI (*IDN? names the model)"
    if isinstance(entry, AtmosphereEntry):
        quantities = ", ".join(s.quantity for s in entry.map.registers)
        return f"a Modbus transmitter, device id {entry.map.device_id}, serving {quantities}"
    return (f"a KELLER Series 30 transmitter at bus address {entry.address}, "
            f"{entry.baudrate} baud")


def _check_emstat(driver: Any) -> tuple[str, str]:
    identity = f"{driver.identify()} SN {driver.serial_number()}"
    return identity, f"OCP {driver.open_circuit_potential():+.4f} V"


def _check_keithley(driver: Any) -> tuple[str, str]:
    identity = driver.identify()
    errors = driver.errors()
    state = "output ON" if driver.output_is_on() else "output off"
    queued = "; ".join(f"{c} {m}" for c, m in errors) if errors else "no errors queued"
    return identity, f"{state}, {queued}"


def _check_atmosphere(driver: Any) -> tuple[str, str]:
    values = driver.read()
    missing = [q for q, v in values.items() if math.isnan(v)]
    if missing:
        raise InstrumentError(f"the transmitter has no {', '.join(missing)} reading (NaN)")
    shown = [f"{q.removesuffix('_ppm').upper()} {v:.3f} ppm" if q.endswith("_ppm")
             else f"{v:.2f} K" for q, v in values.items()]
    specs = ", ".join(f"{s.quantity}@0x{s.address:04X}" for s in driver.map.registers)
    return f"Modbus device {driver.map.device_id} ({specs})", ", ".join(shown)


def _check_pressure(driver: Any) -> tuple[str, str]:
    info = driver.initialise()
    pressure_Pa, temperature_K = driver.read()
    identity = (f"KELLER class {info.device_class} group {info.group} "
                f"firmware {info.firmware}")
    return identity, f"{pressure_Pa / 1e5:.5f} bar, {temperature_K:.2f} K"


def _check_one(entry: Any, clock: Clock) -> CheckResult:
    kind = getattr(entry, "driver", None) or f"{entry.kind}"
    result = CheckResult(entry.name, kind, _address(entry), _expected(entry))
    driver = None
    try:
        if isinstance(entry, (EmStat4Entry, Keithley2450Entry)):
            driver = open_instrument(entry, clock)
            probe: Callable[[Any], tuple[str, str]] = (
                _check_emstat if isinstance(entry, EmStat4Entry) else _check_keithley)
        else:
            driver = open_sensor(entry)
            probe = _check_atmosphere if isinstance(entry, AtmosphereEntry) else _check_pressure
        result.identity, result.reading = probe(driver)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
        result.error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):  # closing after a failure is best effort
                driver.close()
    return result


def check_station(config: StationFile, clock: Clock | None = None) -> list[CheckResult]:
    """Open, identify and read every instrument and sensor once, all at the same time (each
    on its own connection); failures are results, not exceptions."""
    clock = clock if clock is not None else RealClock()
    entries = [e for _, e in _entries(config)]
    with ThreadPoolExecutor(max_workers=max(1, len(entries))) as pool:
        return list(pool.map(lambda e: _check_one(e, clock), entries))


def format_check(results: Sequence[CheckResult]) -> str:
    """The table `rig station check` prints, then one paragraph per failure."""
    header = ("name", "driver", "address", "identity", "reading", "status")
    rows = [(r.name, r.driver, r.address, r.identity or "-", r.reading or "-",
             "OK" if r.ok else "FAIL") for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    for r in results:
        if not r.ok:
            lines += ["", f"FAIL {r.name} ({r.driver} at {r.address}):",
                      f"  expected {r.expected}", f"  error: {r.error}"]
    failed = sum(not r.ok for r in results)
    lines += ["", f"{len(results) - failed} of {len(results)} OK"
              + (f", {failed} failed" if failed else "")]
    return "\n".join(lines)


