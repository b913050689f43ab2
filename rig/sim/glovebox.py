"""A simulated argon glovebox atmosphere, and a Modbus TCP transmitter that serves it.

The model (``GloveboxModel``)
-----------------------------
O2 and H2O in ppm as functions of clock time, deterministic for a seed (noise is a hash of the
seed, the species and the time bucket, never a stream of draws, so ``value(s, t)`` is the same
whoever asks and in whatever order). Each species is the sum of:

* a baseline drawn from the seed in ``GloveboxParams.baseline_ppm`` (default 0.1..0.3 ppm);
* a slow drift: two sines (periods 6 h and 29 h, seeded phases), ``drift_ppm`` in amplitude;
* noise: a seeded Gaussian, constant over ``noise_bucket_s``, ``noise_ppm`` standard deviation;
* regeneration cycles: every ``regen_period_s`` (first one at a seeded offset) a bump that rises
  and falls (``peak * x * e^(1-x)``, ``x = age / regen_rise_s``), peaking at ``regen_peak_ppm``;
* scripted breaches (``breach``): a step to ``peak_ppm`` at ``at_s`` decaying as
  ``exp(-age / decay_s)``, for the species named;
* scripted dropouts (``dropout``): the transmitter has no reading (NaN) for ``duration_s``.

The sum never goes below zero. Times given to ``breach``/``dropout`` are seconds after the model's start
(``clock.now()`` when it was made); ``value(species, t)`` takes clock time. The box temperature
(``temperature_K(t)``) is 297.15 K with a 0.5 K daily swing and 0.02 K noise.

The transmitter (``SimulatedModbusSensor``)
-------------------------------------------
A pymodbus 3.16 ``ModbusTcpServer`` on 127.0.0.1 (port 0: the OS picks; read ``.port``) in its
own thread with its own asyncio loop; ``framing="rtu"`` sends RTU frames over that TCP stream (a
serial-to-Ethernet converter in transparent mode), which the driver's RTU path reaches through
pyserial's ``socket://127.0.0.1:PORT``. Its datastore is a ``pymodbus.simulator.SimDevice`` with one
read-only block per spec of the register map; the device's ``action`` callback, which pymodbus
awaits on every request before answering, rewrites every served register from the model at
``clock.now()``. So a reading is the model at the moment of the request, in the map's encoding
(``drivers.modbus_atmosphere.encode``), or in ``word_order`` when given (float32 registers only).

What the simulator answers:

* a read of the map's registers (function 3 or 4: holding and input share one address space
  here, so a map may not place a holding and an input reading at the same address): the values;
* any other address: exception 2 (illegal data address); a write: exception 2 (read-only);
* another device id: exception 11 (gateway target device failed to respond), as a TCP gateway
  in front of an RS-485 transmitter does;
* an unavailable reading: NaN for float32; 0 for integer types (as Vaisala's integer
  registers do); a value beyond an integer type's range is clamped.

Faults (``ModbusFaultProfile``): for every request of a served register, one draw from
``random.Random(seed)`` picks at most one fault, with the given rates (their sum <= 1):

* ``no_reply``: the request is dropped, nothing is sent (the client times out);
* ``exception``: a Modbus exception reply with ``exception_code`` (default 4, server device
  failure);
* ``disconnect``: nothing is sent and the server closes every open connection (the client sees
  the connection closed; a new connection is accepted as usual).

``faults`` counts what was served (``requests``, ``no_reply``, ``exception``, ``disconnect``).
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, Self, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_atmosphere import (
    WORD_ORDERS,
    RegisterMap,
    RegisterSpec,
    encode,
    in_device_units,
)
from rig.clock import Clock

SPECIES = ("o2", "h2o")
# "tcp": Modbus TCP (MBAP header); "rtu": RTU frames (address, PDU, CRC) on the TCP stream, as a
# serial-to-Ethernet converter in transparent mode passes them (pyserial: socket://host:port).
FRAMINGS = {"tcp": FramerType.SOCKET, "rtu": FramerType.RTU}
DAY_S = 86_400.0
START_TIMEOUT_S = 5.0
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------- deterministic noise

def _mix64(z: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of z."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _unit(*keys: int) -> float:
    """A uniform number in (0, 1), a pure function of the integer keys."""
    h = 0
    for key in keys:
        h = _mix64(h ^ (key & _MASK64))
    return ((h >> 11) + 0.5) / (1 << 53)


def _gauss(*keys: int) -> float:
    """A standard normal number, a pure function of the integer keys (Box-Muller)."""
    u1, u2 = _unit(*keys, 1), _unit(*keys, 2)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# ---------------------------------------------------------------- the atmosphere

@dataclass(frozen=True)
class GloveboxParams:
    """The atmosphere of a well-kept argon box (domain.md: below 0.1-0.3 ppm O2 and H2O)."""

    baseline_ppm: tuple[float, float] = (0.1, 0.3)  # each species' baseline drawn in this range
    drift_ppm: float = 0.04  # amplitude of each of the two drift sines
    drift_periods_s: tuple[float, float] = (6 * 3600.0, 29 * 3600.0)
    noise_ppm: float = 0.01
    noise_bucket_s: float = 1.0
    regen_period_s: float = 12 * 3600.0  # 0 disables regeneration bumps
    regen_rise_s: float = 1200.0  # time from the start of a bump to its peak
    regen_peak_ppm: tuple[float, float] = (0.15, 0.4)  # (o2, h2o)
    temperature_K: float = 297.15
    temperature_swing_K: float = 0.5
    temperature_noise_K: float = 0.02


@dataclass(frozen=True)
class Breach:
    at_s: float
    peak_ppm: float
    decay_s: float
    species: tuple[str, ...]


@dataclass(frozen=True)
class Dropout:
    at_s: float
    duration_s: float
    species: tuple[str, ...]


class GloveboxModel:
    """O2/H2O (ppm) and temperature (K) of a glovebox, a deterministic function of time."""

    def __init__(self, seed: int, clock: Clock, params: GloveboxParams | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.params = params or GloveboxParams()
        self.t0 = clock.now()
        p = self.params
        lo, hi = p.baseline_ppm
        self._baseline = {s: lo + (hi - lo) * _unit(seed, i, 10) for i, s in enumerate(SPECIES)}
        self._phases = {s: (2 * math.pi * _unit(seed, i, 11), 2 * math.pi * _unit(seed, i, 12))
                        for i, s in enumerate(SPECIES)}
        self._regen_offset_s = p.regen_period_s * _unit(seed, 13)
        self._temperature_phase = 2 * math.pi * _unit(seed, 14)
        # Replaced, never mutated: the server thread reads them without a lock.
        self._breaches: tuple[Breach, ...] = ()
        self._dropouts: tuple[Dropout, ...] = ()

    # --- scripted events
    def breach(self, at_s: float, peak_ppm: float, decay_s: float,
               species: tuple[str, ...] = SPECIES) -> Breach:
        """A glove breach or antechamber mistake: +peak_ppm at at_s, decaying exponentially."""
        if peak_ppm < 0 or decay_s <= 0:
            raise ValueError("breach: peak_ppm must be >= 0 and decay_s > 0")
        event = Breach(float(at_s), float(peak_ppm), float(decay_s), self._species(species))
        self._breaches = (*self._breaches, event)
        return event

    def dropout(self, at_s: float, duration_s: float,
                species: tuple[str, ...] = ("h2o",)) -> Dropout:
        """The transmitter has no reading (NaN) from at_s for duration_s (a purge, a fault)."""
        if duration_s <= 0:
            raise ValueError("dropout: duration_s must be > 0")
        event = Dropout(float(at_s), float(duration_s), self._species(species))
        self._dropouts = (*self._dropouts, event)
        return event

    @staticmethod
    def _species(species: tuple[str, ...] | str) -> tuple[str, ...]:
        species = (species,) if isinstance(species, str) else tuple(species)
        for s in species:
            if s not in SPECIES:
                raise ValueError(f"species {s!r} is not one of: {', '.join(SPECIES)}")
        return species

    # --- the atmosphere
    def value(self, species: str, t: float) -> float:
        """Concentration of ``species`` ("o2" or "h2o") in ppm at clock time t (NaN: none)."""
        if species not in SPECIES:
            raise ValueError(f"species {species!r} is not one of: {', '.join(SPECIES)}")
        age = t - self.t0
        if any(species in d.species and d.at_s <= age < d.at_s + d.duration_s
               for d in self._dropouts):
            return math.nan
        i = SPECIES.index(species)
        p = self.params
        ph1, ph2 = self._phases[species]
        drift = p.drift_ppm * (math.sin(2 * math.pi * age / p.drift_periods_s[0] + ph1)
                               + math.sin(2 * math.pi * age / p.drift_periods_s[1] + ph2))
        bucket = math.floor(age / p.noise_bucket_s)
        noise = p.noise_ppm * _gauss(self.seed, i, bucket)
        ppm = (self._baseline[species] + drift + noise + self._regeneration(i, age)
               + sum(b.peak_ppm * math.exp(-(age - b.at_s) / b.decay_s)
                     for b in self._breaches if species in b.species and age >= b.at_s))
        return max(0.0, ppm)

    def _regeneration(self, i: int, age: float) -> float:
        p = self.params
        if p.regen_period_s <= 0:
            return 0.0
        since = (age - self._regen_offset_s) % p.regen_period_s
        x = since / p.regen_rise_s
        return p.regen_peak_ppm[i] * x * math.exp(1.0 - x)

    def temperature_K(self, t: float) -> float:
        """The box temperature in K at clock time t."""
        p = self.params
        age = t - self.t0
        swing = p.temperature_swing_K * math.sin(2 * math.pi * age / DAY_S
                                                 + self._temperature_phase)
        noise = p.temperature_noise_K * _gauss(self.seed, 99, math.floor(age / p.noise_bucket_s))
        return p.temperature_K + swing + noise


# ---------------------------------------------------------------- the transmitter

class Atmosphere(Protocol):
    """What the simulated transmitter needs of a model (GloveboxModel)."""

    def value(self, species: str, t: float) -> float: ...

    def temperature_K(self, t: float) -> float: ...


@dataclass(frozen=True)
class ModbusFaultProfile:
    """Per-request fault rates (0..1, summing to <= 1), drawn from random.Random(seed)."""

    no_reply: float = 0.0
    exception: float = 0.0
    exception_code: int = 4  # server device failure
    disconnect: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.no_reply, self.exception, self.disconnect)
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to <= 1")
        ExcCodes(self.exception_code)  # ValueError for a code pymodbus cannot send


class SimulatedModbusSensor:
    """A Modbus TCP glovebox transmitter serving ``map`` from ``model`` at ``clock.now()``::

        with SimulatedModbusSensor(GloveboxModel(0, clock), VAISALA_H2O, clock) as sim:
            ModbusAtmosphereSensor(VAISALA_H2O, host="127.0.0.1", port=sim.port).read()
    """

    def __init__(
        self,
        model: Atmosphere,
        map: RegisterMap,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        word_order: str | None = None,
        fault: ModbusFaultProfile | None = None,
        framing: str = "tcp",
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing {framing!r} is not one of: {', '.join(FRAMINGS)}")
        if word_order is not None and word_order not in WORD_ORDERS:
            raise ValueError(f"word_order {word_order!r} is not one of: {', '.join(WORD_ORDERS)}")
        self.model = model
        self.map = map
        self.clock = clock
        self.host = host
        self.port = port
        self.fault = fault
        self.framing = framing
        self.specs = tuple(replace(s, word_order=word_order) if word_order and s.count > 1
                           else s for s in map.registers)
        _check_shared_space(self.specs)
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(fault.seed if fault else 0)
        self._drop_reply = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: ModbusTcpServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._sources: dict[str, Callable[[float], float]] = {
            "o2_ppm": lambda t: model.value("o2", t),
            "h2o_ppm": lambda t: model.value("h2o", t),
            "temperature_K": model.temperature_K,
        }

    # --- life cycle
    def start(self) -> Self:
        """Start serving; returns once the server accepts connections (``.port`` is set)."""
        if self._thread is not None or self._closed:
            return self
        self._thread = threading.Thread(target=self._run, name="modbus-glovebox-sim",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.close()
            raise RuntimeError("the simulated Modbus server did not start in time")
        if self._error is not None:
            self.close()
            raise RuntimeError(f"the simulated Modbus server could not start: {self._error}")
        return self

    def close(self) -> None:
        """Stop serving and end the thread; open connections are closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended on its own
                pass
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the server thread
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ModbusTcpServer(self._devices(), address=(self.host, self.port),
                                 framer=FRAMINGS[self.framing], trace_packet=self._trace_packet)
        self._server = server
        await server.serve_forever(background=True)  # listening once this returns
        # a TCP listener's transport is the asyncio.Server of loop.create_server (pymodbus
        # annotates it as BaseTransport)
        listener = cast(asyncio.Server, server.transport)
        self.port = listener.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.shutdown()

    def _devices(self) -> list[SimDevice]:
        blocks = [SimData(address=s.address, count=s.count, datatype=DataType.REGISTERS,
                          readonly=True) for s in self.specs]
        device = SimDevice(id=self.map.device_id, simdata=blocks, action=self._action)
        if self.map.device_id == 0:
            return [device]
        # id 0 answers every other device id: a gateway whose target does not respond.
        others = SimDevice(id=0, simdata=[SimData(address=0, count=0x10000,
                                                  datatype=DataType.REGISTERS)],
                           action=_gateway_no_response)
        return [device, others]

    # --- per request (in the server thread)
    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        self.faults["requests"] += 1
        fault = self._draw_fault()
        if fault:
            self.faults[fault] += 1
        if fault == "exception":
            assert self.fault is not None
            return ExcCodes(self.fault.exception_code)
        if fault in ("no_reply", "disconnect"):
            self._drop_reply = True  # _trace_packet swallows the answer about to be sent
            if fault == "disconnect":
                asyncio.get_running_loop().call_soon(self._disconnect_all)
        now = self.clock.now()
        for spec in self.specs:
            offset = spec.address - start_address
            registers[offset:offset + spec.count] = self.registers_for(spec, now)
        return None

    def registers_for(self, spec: RegisterSpec, t: float) -> list[int]:
        """The registers this transmitter sends for ``spec`` at clock time t."""
        value = in_device_units(self._sources[spec.quantity](t), spec)
        if spec.type == "float32":
            return encode(value, spec)
        if math.isnan(value):
            return [0]
        lo, hi = (-0x8000, 0x7FFF) if spec.type == "int16" else (0, 0xFFFF)
        return encode(min(hi, max(lo, round(value / spec.scale))) * spec.scale, spec)

    def _draw_fault(self) -> str | None:
        if self.fault is None:
            return None
        u = self._rng.random()
        for name in ("no_reply", "exception", "disconnect"):
            rate = getattr(self.fault, name)
            if u < rate:
                return name
            u -= rate
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self._drop_reply:
            self._drop_reply = False
            return b""
        return data

    def _disconnect_all(self) -> None:
        if self._server is not None:
            for connection in list(self._server.active_connections.values()):
                connection.close()


async def _gateway_no_response(*_: Any) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _check_shared_space(specs: tuple[RegisterSpec, ...]) -> None:
    """Holding and input registers share one address space in this simulator."""
    for i, a in enumerate(specs):
        for b in specs[:i]:
            if a.address < b.address + b.count and b.address < a.address + a.count:
                raise ValueError(f"the simulator cannot serve {a.describe()} and "
                                 f"{b.describe()}: holding and input share addresses here")
