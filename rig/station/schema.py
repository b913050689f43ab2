"""Station files: the schema (pydantic models, quantities with units), the checks across tables,
and reading a file into a validated ``StationFile`` (nothing is opened here).

``parse_station(text, source)`` / ``read_station_file(path)`` report every problem at once as
``<file>: <field.path>: <message>``, worded by the same translator as protocol files
(``protocols.messages.Translator``). The format is docs/station.md.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from protocols.messages import Translator, show
from protocols.units import Dimension, Time, Volume, parse_quantity, quantity_type


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
if TYPE_CHECKING:  # quantity_type builds an Annotated[float, ...] at run time: a float to mypy
    Pressure = float
    Resistance = float
    PressureRate = float
else:
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


if TYPE_CHECKING:  # _ppm_type builds an Annotated[float, ...] at run time: a float to mypy
    Ppm = float
    PpmOrZero = float
else:
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
MAX_TIMEOUT_S = 60.0  # a driver timeout beyond a minute would hold a channel (and, on a virtual
# clock, the whole run) for that long per lost reply


def _timeout_field() -> Any:
    """``timeout``: how long the driver waits for a reply (wall time) before it retries; unset,
    the driver's default (EmStat4 and Keithley 2 s, Modbus 1 s, KELLER 0.5 s)."""
    return Field(None, le=MAX_TIMEOUT_S, examples=["2 s"])


class EmStat4Entry(_Table):
    """A PalmSens EmStat4 on a serial port (MethodSCRIPT)."""

    name: str = _NAME
    driver: Literal["emstat4"]
    port: str = Field(min_length=1, examples=["/dev/ttyUSB0"])
    baudrate: int = Field(921600, gt=0, strict=True, examples=[921600])
    timeout: Time | None = _timeout_field()
    description: str = ""


class Keithley2450Entry(_Table):
    """A Keithley 2450 (or a 2400 with ``command_set = "2400"``) over VISA."""

    name: str = _NAME
    driver: Literal["keithley2450"]
    resource: str = Field(min_length=1, examples=["TCPIP0::192.168.1.50::5025::SOCKET"])
    command_set: Literal["2450", "2400"] = "2450"
    timeout: Time | None = _timeout_field()
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
    timeout: Time | None = _timeout_field()


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
    timeout: Time | None = _timeout_field()


SENSOR_KINDS: dict[str, type[_Table]] = {"atmosphere": AtmosphereEntry,
                                         "pressure": PressureEntry}
SensorEntry = Annotated[AtmosphereEntry | PressureEntry, Field(discriminator="kind")]
Problem = tuple[str, str]


DEFAULT_HOST_WATCHDOG_S = 60.0
HOST_WATCHDOG_BOUNDS_S = (1.0, 3600.0)  # shorter: a round trip per second; longer: no bound


class InterlocksEntry(_Table):
    """Station interlocks: atmosphere thresholds and how they trip and clear."""

    o2_max: Ppm = Field(default=1.0, examples=["1 ppm"])
    h2o_max: Ppm = Field(default=1.0, examples=["1 ppm"])
    hysteresis: PpmOrZero = Field(default=0.2, examples=["0.2 ppm"])
    hold_off: TimeOrZero = Field(default=30.0, examples=["30 s"])
    clear_for: TimeOrZero = Field(default=600.0, examples=["10 min"])
    sensor_timeout: Time = Field(default=60.0, examples=["60 s"])
    resume_when_clear: bool = Field(default=True, strict=True, examples=[True])
    # without word from the rig, an instrument switches its output off within this long
    host_watchdog: Time = Field(default=DEFAULT_HOST_WATCHDOG_S, examples=["60 s"])


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
        for where, entry in entries_of(self):
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
        for where, entry in entries_of(self):
            key = connection_key(entry)
            if key in seen:
                out.append((f"{where}.{address_field(entry)}", (
                    f"{address_of(entry)} is already used by {seen[key]}; one connection per "
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
        low, high = HOST_WATCHDOG_BOUNDS_S
        if not low <= il.host_watchdog <= high:
            out.append(("interlocks.host_watchdog", (f"{il.host_watchdog:g} s is outside "
                        f"{low:g} s .. {high / 60:g} min: how long an instrument keeps its "
                        "output on without word from the rig")))
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


def entries_of(config: StationFile) -> list[tuple[str, Any]]:
    return ([(f"instruments[{k}]", e) for k, e in enumerate(config.instruments)]
            + [(f"sensors[{k}]", e) for k, e in enumerate(config.sensors)])


def connection_key(entry: Any) -> tuple[Any, ...]:
    if isinstance(entry, Keithley2450Entry):
        return ("visa", entry.resource.lower())
    if isinstance(entry, AtmosphereEntry):
        if entry.host is not None:
            return ("tcp", entry.host.lower(), entry.port, entry.map.device_id)
        return ("serial", entry.serial_port)
    return ("serial", entry.port)


def sensor_wanted(entry: AtmosphereEntry | PressureEntry, channels: Collection[int] | None
                  ) -> bool:
    """Whether a run on ``channels`` (None: all) reads this sensor: every station-wide sensor,
    and the gas holders of its own channels."""
    channel = entry.channel if isinstance(entry, PressureEntry) else None
    return channels is None or channel is None or channel in channels


def address_field(entry: Any) -> str:
    """The field that says where an entry's device is."""
    if isinstance(entry, Keithley2450Entry):
        return "resource"
    if isinstance(entry, AtmosphereEntry):
        return "host" if entry.host is not None else "serial_port"
    return "port"


def address_of(entry: Any) -> str:
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
class StationTranslator(Translator):
    """Station files: instruments tagged by ``driver``, sensors by ``kind``; examples name their
    field (``e.g. port = "/dev/ttyUSB0"``); register maps report their own sub-field."""

    tag_fields = ("driver", "kind")
    examples_name_the_field = True
    allowed_lists_tags = True
    verbatim = frozenset({"quantity", "register_map"})


STATION = StationTranslator(StationFile)


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
        problems = STATION.describe_all(exc.errors())
        raise StationError([f"{source}: {p}: {m}" for p, m in problems]) from None
    problems = config.problems()
    if problems:
        raise StationError([f"{source}: {p}: {m}" for p, m in problems])
    if config.name is None:
        config = config.model_copy(update={"name": Path(source).stem})
    return config


def read_station_file(path: str | Path) -> StationFile:
    """Read and validate a station file (nothing is opened)."""
    from protocols.bounds import FileTooLarge, read_protocol_text

    try:  # a size cap and regular files only, as for protocol files (never /dev/zero)
        text = read_protocol_text(path)
    except FileTooLarge as exc:
        raise StationError(f"{path}: {str(exc).replace('protocol', 'station')}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StationError(f"{path}: cannot read the file: {reason}") from None
    return parse_station(text, str(path))


