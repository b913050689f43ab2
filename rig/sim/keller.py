"""A sealed gas holder and a simulated KELLER Series 30 transmitter that measures it.

:class:`GasHolder` is the cell's sealed pressure holder (EL-CELL ECC-Press / PAT-Cell-Press
style): an ideal gas in a fixed headspace. It is sealed at ``p0_Pa`` and ``temperature_K`` when
built; from then on ::

    P = (n_initial + cell.gas_mol - gas_at_seal) · R · T / V,   n_initial = p0 · V / (R · T_start)

so a 1 K swing at 298 K moves P by 1/298 = 0.34 % (3.4 mbar at 1 bar) while the amount of gas
stays put, and n = P·V/(R·T) with the measured T recovers it. Gas the cell made before it was
sealed in is not counted (for a fresh cell ``gas_at_seal`` is 0). The temperature is constant or
follows ``set_temperature_profile(fn)`` with ``T = fn(t - t0)``, ``t`` the clock's time; each
update also sets ``cell.temperature_K``, so the cell's kinetics feel the same drift.

:class:`SimulatedKeller` serves the KELLER bus (drivers/keller.py, the same page the driver
follows) on a pseudo-terminal, exactly as a transmitter at ``address`` would::

    with SimulatedKeller(GasHolder(cell, headspace_mL=5.0), clock) as sim:
        ser = serial.Serial(sim.port, timeout=1)
        ser.write(build_f48(250))      # -> 10 bytes: 1 48 5 20 ... STAT crcH crcL

Behaviour (from the manual where it speaks, labelled where this simulator chooses):

- It answers requests to its own address and to the transparent address 250, always with its
  own address in the reply; requests to other addresses are ignored (another device's traffic).
- A request with a bad CRC gets no reply (the manual: a transmission error is not answered).
- F48 answers ``Class Group Year Week BUF STAT`` (5, 20, firmware 10.20, buffer 10 by default);
  STAT is 0 on the first F48 after power-on and 1 afterwards.
- Before the first F48 after power-on every other function gets exception 32 (the manual: "each
  time the device is switched on ... the device must be initialised via this function. Calling a
  different function will lead to exception error 32"). We follow the manual here rather than
  answering F73 with the /STD bit set: that is what a host meets on real hardware after a supply
  break, and the driver's exception-32 path is exercised on every start. ``power_cycle()``
  simulates a supply break.
- F73: CH 1 = P1 (bar), CH 3 = T and CH 4 = TOB1 (°C, both the holder's temperature); CH 0, 2
  and 5 are not fitted on this standard transmitter and answer NaN (our choice; the manual does
  not say); CH > 5 gets exception 2. STAT is ``error_flags`` (0: standard mode, no error; a test
  may set e.g. ``STAT_POWER_UP`` or ``1 << P1``).
- A wrong length for a known function gets exception 3; any other function exception 1.
- Framing: F48 requests are 4 bytes and F73 requests 5, answered as soon as they are complete;
  anything else is taken as one message when the line has been idle ``GAP_S``.

Faults (:class:`FaultProfile`, seeded, per reply): no reply at all (the host times out), a bad CRC
(the last byte flipped), or a truncated frame (the first half only). ``max_faults`` caps how many
are injected (``FaultProfile(bad_crc=1.0, max_faults=1)``: only the first reply is garbled).
``set_faults()`` changes the profile while running.

Transport and threads: ``os.openpty()``, the slave in raw mode, ``.port`` is its name. The
simulator owns the master fd (non-blocking: a reply nobody reads is dropped, as on the wire) and
keeps the slave fd open too, so the pty survives a driver closing and reopening it. One reader
thread (``select`` with a wake-up pipe, so ``close()`` stops it at once) frames requests and
writes replies; one lock guards the device state. Time: replies read ``clock.now()``; ``start()``
also registers ``holder.update`` as a clock pump, so on a VirtualClock the cell's temperature
follows the profile at every jump, not only when the gauge is polled.
"""

from __future__ import annotations

import math
import os
import random
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Protocol, Self

from drivers.keller import (
    EXC_DATA,
    EXC_FUNCTION,
    EXC_INITIALISE,
    EXC_PARAMETER,
    F_INITIALISE,
    F_READ_FLOAT,
    P1,
    TOB1,
    TRANSPARENT_ADDRESS,
    ZERO_CELSIUS_K,
    DeviceInfo,
    T,
    crc_ok,
    encode_exception,
    encode_f48_reply,
    encode_f73_reply,
)
from rig.clock import Clock
from rig.sim.pty import open_pty

R_J_MOL_K = 8.314462618
GAP_S = 0.02  # line idle this long (wall seconds) ends a message of unknown length
REQUEST_LENGTHS = {F_INITIALISE: 4, F_READ_FLOAT: 5}
MAX_CHANNEL = 5
# what F48 reports: Series 30 (class 5), group 20 (X-Line), firmware 10.20, 10-byte buffer
DEFAULT_INFO = DeviceInfo(device_class=5, group=20, year=10, week=20, buffer_size=10, status=0)


class GasSource(Protocol):
    """What the holder needs of a cell (rig.sim.cell.NaCell has both)."""

    @property
    def gas_mol(self) -> float: ...

    temperature_K: float


class GasHolder:
    """A sealed headspace over a cell: ideal gas, pressure from the cell's gas and temperature."""

    def __init__(
        self, cell: GasSource, headspace_mL: float, temperature_K: float = 298.15,
        p0_Pa: float = 101325.0,
    ) -> None:
        if not headspace_mL > 0 or not temperature_K > 0 or not p0_Pa >= 0:
            raise ValueError("headspace_mL and temperature_K must be > 0, p0_Pa >= 0")
        self.cell = cell
        self.headspace_m3 = headspace_mL * 1e-6
        self.n_initial_mol = p0_Pa * self.headspace_m3 / (R_J_MOL_K * temperature_K)
        self.gas_at_seal_mol = cell.gas_mol
        self._lock = threading.Lock()
        self._profile: Callable[[float], float] | None = None
        self._t0 = 0.0
        self._temperature_K = float(temperature_K)
        cell.temperature_K = self._temperature_K

    # --- temperature
    def set_temperature(self, temperature_K: float) -> None:
        """Hold a constant temperature from now on (drops any profile)."""
        with self._lock:
            self._profile = None
            self._set(temperature_K)

    def set_temperature_profile(self, fn: Callable[[float], float], t0: float = 0.0) -> None:
        """From the next update on, T = fn(t - t0) (K), t the clock's time."""
        with self._lock:
            self._profile, self._t0 = fn, t0

    def update(self, t: float) -> None:
        """Bring the temperature (and the cell's) to clock time ``t``. A clock pump."""
        with self._lock:
            if self._profile is not None:
                self._set(self._profile(t - self._t0))

    def _set(self, temperature_K: float) -> None:
        if not temperature_K > 0:
            raise ValueError(f"temperature_K must be > 0, not {temperature_K}")
        self._temperature_K = float(temperature_K)
        self.cell.temperature_K = self._temperature_K

    # --- state
    @property
    def temperature_K(self) -> float:
        return self._temperature_K

    @property
    def gas_mol(self) -> float:
        """Gas in the headspace (mol): the fill plus what the cell made since sealing."""
        return self.n_initial_mol + self.cell.gas_mol - self.gas_at_seal_mol

    @property
    def pressure_Pa(self) -> float:
        return self.gas_mol * R_J_MOL_K * self._temperature_K / self.headspace_m3

    def state(self, t: float) -> tuple[float, float]:
        """(pressure Pa, temperature K) at clock time ``t``."""
        self.update(t)
        with self._lock:
            return self.pressure_Pa, self._temperature_K


@dataclass(frozen=True)
class FaultProfile:
    """Per-reply fault rates (0..1), drawn from random.Random(seed)."""

    no_reply: float = 0.0  # nothing is sent: the host times out
    bad_crc: float = 0.0  # the last CRC byte is flipped
    truncated: float = 0.0  # only the first half of the frame is sent
    seed: int = 0
    max_faults: int | None = None  # stop injecting after this many (None: never stop)


class _Faults:
    def __init__(self, profile: FaultProfile) -> None:
        self.profile = profile
        self.rng = random.Random(profile.seed)
        self.injected = 0

    def apply(self, reply: bytes) -> tuple[bytes, str | None]:
        p = self.profile
        if p.max_faults is not None and self.injected >= p.max_faults:
            return reply, None
        x = self.rng.random()
        for kind, rate in (("no_reply", p.no_reply), ("bad_crc", p.bad_crc),
                           ("truncated", p.truncated)):
            if x < rate:
                self.injected += 1
                return _garble(reply, kind), kind
            x -= rate
        return reply, None


def _garble(reply: bytes, kind: str) -> bytes:
    if kind == "no_reply":
        return b""
    if kind == "bad_crc":
        return reply[:-1] + bytes([reply[-1] ^ 0xFF])
    return reply[: len(reply) // 2]


class SimulatedKeller:
    """A KELLER Series 30 transmitter on a pty, measuring a :class:`GasHolder` (module doc)."""

    def __init__(
        self, holder: GasHolder, clock: Clock, address: int = 1,
        fault: FaultProfile | None = None, *,
        info: DeviceInfo = DEFAULT_INFO,
    ) -> None:
        if not 1 <= address <= 249:
            raise ValueError(f"a KELLER device address is 1..249, not {address}")
        self.holder, self.clock, self.address, self.info = holder, clock, address, info
        self.error_flags = 0  # STAT of every F73 reply
        self.requests = 0  # messages received for this device (good CRC, our address)
        self.faults: list[str] = []  # the kind of every fault injected, in order
        self.last_error: str | None = None  # an exception raised while answering (no reply sent)
        self._initialised = False
        self._f48_count = 0
        self._faults = _Faults(fault) if fault else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._closed = False
        self._master, self._slave, self.port = open_pty()
        self._wake_r, self._wake_w = os.pipe()

    # --- lifecycle
    def start(self) -> Self:
        if self._started or self._closed:
            return self
        self._started = True
        self.clock.add_pump(self.holder.update)
        self._thread = threading.Thread(target=self._read_loop, name=f"keller-sim-{self.address}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.clock.remove_pump(self.holder.update)
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- device state
    @property
    def initialised(self) -> bool:
        return self._initialised

    def power_cycle(self) -> None:
        """A break in the supply: the next non-F48 request gets exception 32."""
        with self._lock:
            self._initialised = False
            self._f48_count = 0

    def set_faults(self, fault: FaultProfile | None) -> None:
        with self._lock:
            self._faults = _Faults(fault) if fault else None

    def answer(self, message: bytes) -> bytes | None:
        """The reply to one received message, before faults (None: stay silent)."""
        if len(message) < 4 or not crc_ok(message):
            return None  # a transmission error is never answered
        if message[0] not in (self.address, TRANSPARENT_ADDRESS):
            return None  # for another device
        with self._lock:
            self.requests += 1
            return self._reply(message[1], message[2:-2])

    def _reply(self, function: int, data: bytes) -> bytes:
        def exception(code: int) -> bytes:
            return encode_exception(self.address, function, code)

        if function not in REQUEST_LENGTHS:
            return exception(EXC_FUNCTION)
        if len(data) + 4 != REQUEST_LENGTHS[function]:
            return exception(EXC_DATA)
        if function == F_INITIALISE:
            status = 1 if self._initialised else 0
            self._initialised = True
            return encode_f48_reply(self.address, replace(self.info, status=status))
        if not self._initialised:
            return exception(EXC_INITIALISE)
        channel = data[0]
        if channel > MAX_CHANNEL:
            return exception(EXC_PARAMETER)
        return encode_f73_reply(self.address, self._measure(channel), self.error_flags)

    def _measure(self, channel: int) -> float:
        pressure_Pa, temperature_K = self.holder.state(self.clock.now())
        if channel == P1:
            return pressure_Pa / 1e5
        if channel in (T, TOB1):
            return temperature_K - ZERO_CELSIUS_K
        return math.nan  # CH0, P2, TOB2: not fitted

    # --- the wire
    def _read_loop(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [],
                                        GAP_S if buf else None)
            if self._wake_r in ready:
                return
            if not ready:  # the line went idle: what is buffered is one message
                self._on_message(bytes(buf))
                buf.clear()
                continue
            try:
                buf += os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            self._take_known(buf)

    def _take_known(self, buf: bytearray) -> None:
        """Answer every complete request of a known function at the head of ``buf``."""
        while len(buf) >= 2:
            length = REQUEST_LENGTHS.get(buf[1])
            if length is None or len(buf) < length or not crc_ok(bytes(buf[:length])):
                return  # unknown, incomplete or garbled: wait for the idle gap
            message = bytes(buf[:length])
            del buf[:length]
            self._on_message(message)

    def _on_message(self, message: bytes) -> None:
        try:
            reply = self.answer(message)
        except Exception as exc:  # noqa: BLE001 - a model error must not kill the device thread
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if reply is None:
            return
        with self._lock:
            if self._faults is not None:
                reply, kind = self._faults.apply(reply)
                if kind:
                    self.faults.append(kind)
        if reply:
            try:
                os.write(self._master, reply)
            except OSError:
                pass  # nobody reading and the pty buffer full: lost, as on the wire
