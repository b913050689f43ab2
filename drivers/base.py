"""Instrument roles and the errors every driver raises.

Drivers are plain synchronous classes around one transport. They know nothing of the engine:
a driver is usable alone in a notebook. Every value crossing this boundary is an SI float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class InstrumentError(Exception):
    """Base of every driver error."""


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer in time (transient: a retry may help)."""


class InstrumentProtocolError(InstrumentError):
    """The instrument answered, but not as its protocol says (garbled, error code, bad CRC)."""


class InstrumentGone(InstrumentError):
    """The transport is closed or the device vanished: no retry will help."""


class RetriedFaults:
    """The failed attempts a driver retried, kept until the engine takes them.

    A retry that cures a garbled reply hides the fault from the caller; a lab still wants to
    know its cabling drops one reply in a hundred. Bounded: past ``keep`` only the count grows.

    >>> log = RetriedFaults()
    >>> log.record("InstrumentTimeout: no answer"); log.record("InstrumentTimeout: no answer")
    >>> log.take()
    (2, ['InstrumentTimeout: no answer', 'InstrumentTimeout: no answer'])
    >>> log.take()
    (0, [])
    """

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._count = 0
        self._kept: list[str] = []

    def record(self, what: str) -> None:
        self._count += 1
        if len(self._kept) < self.keep:
            self._kept.append(what)

    def take(self) -> tuple[int, list[str]]:
        """How many attempts failed since the last take, and the first ``keep`` of them."""
        taken = (self._count, self._kept)
        self._count, self._kept = 0, []
        return taken


class OutputNotConfirmedOff(InstrumentGone):
    """Output-off was retried (with reconnects) and still not confirmed: the output may be ON.
    The caller must raise an alarm saying so; the cell may still be driven."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of a potentiostat channel.

    t_s is seconds since the start of the current measurement (the instrument's timer).
    Current sign: positive is anodic at the working electrode (it strips Na from the WE).
    """

    t_s: float
    potential_V: float
    current_A: float
    overload: bool = False


MODES = ("current", "potential", "open_circuit", "eis")
"""The kinds of step a potentiostat channel may run (``Ranges.modes``)."""


@dataclass(frozen=True, slots=True)
class Ranges:
    """What a potentiostat channel can do, so a plan can be checked before a cell is touched.

    ``modes``: which of ``MODES`` it runs; ``max_frequency_Hz``: the highest EIS frequency
    (None: no limit known); ``min_interval_s``: its fastest acquisition; ``max_step_s``: the
    longest step it times. ``max_interval_s`` and ``min_frequency_Hz``: the slowest
    acquisition and the lowest EIS frequency of an output-on step it can keep within its host
    watchdog (a chunk of at most ``host_watchdog_s`` holds a sample, or a point); no limit by
    default.
    """

    max_current_A: float
    max_potential_V: float
    modes: tuple[str, ...] = MODES
    max_frequency_Hz: float | None = None
    min_interval_s: float = 0.0
    max_step_s: float = math.inf
    max_interval_s: float = math.inf
    min_frequency_Hz: float | None = None


EisPoint = tuple[float, float, complex]
"""One EIS point as it streams in: (t_s, f_Hz, Z' + jZ'' in ohm)."""


@runtime_checkable
class Potentiostat(Protocol):
    """One potentiostat/galvanostat channel: everything the engine relies on.

    A step is started (``start_*``) and then read (``read_samples``) until it ends. How the
    reads go depends on ``streaming``:

    - ``streaming = True``: the instrument measures on its own schedule and sends each sample
      when it is due; ``read_samples(until_s)`` blocks until every sample with
      ``t_s <= until_s`` has arrived (``math.inf``: until the step ends). Call it as rarely as
      you like: nothing is lost between calls. (EmStat4.)
    - ``streaming = False``: the instrument measures when asked; ``read_samples`` takes ONE
      reading now and ignores ``until_s``. The caller reads once per acquisition interval.
      (Keithley 2450.)

    ``rejected``: why each garbled package since the caller last emptied the list was skipped
    (the caller logs and clears it; a driver that never skips keeps it empty).

    ``host_watchdog_s`` (a constructor keyword and attribute of the rig's drivers, from the
    station file's ``[interlocks] host_watchdog``): without word from the host, the instrument
    switches its output off within this long, by whatever mechanism it offers. A streaming
    driver may do it by running a longer step as several scripts ("chunks"), each ending with
    the output off, the next sent when one ends; it then has ``chunk_end_s``: when the running
    chunk ends, on the read frame (math.inf when none follows). Read by then (the engine
    does) or the output stays off, at open circuit, until the next read starts the next chunk.
    ``t_s`` counts the step's output-on time, continuous across the chunks. Not members of the
    Protocol: a driver without them has no bound to keep (the engine reads ``chunk_end_s``
    with a default).
    """

    ranges: Ranges
    streaming: bool

    @property
    def rejected(self) -> list[str]: ...  # read-only to callers: a plain attribute also satisfies it

    def identify(self) -> str: ...

    def start_current(
        self, current_A: float, interval_s: float, duration_s: float,
        e_min_V: float, e_max_V: float,
    ) -> None:
        """Start a galvanostatic step; the instrument itself stops at e_min_V/e_max_V."""

    def start_potential(
        self, potential_V: float, interval_s: float, duration_s: float, i_max_A: float,
    ) -> None:
        """Start a potentiostatic step; the instrument itself stops beyond +-i_max_A."""

    def start_open_circuit(self, interval_s: float, duration_s: float) -> None: ...

    def read_samples(self, until_s: float) -> tuple[list[Sample], bool]:
        """Samples of the running step (see ``streaming`` for how many), and whether the step
        ended."""

    def start_eis(self, f_start_Hz: float, f_end_Hz: float, n_points: int, amplitude_V: float,
                  dc_V: float) -> None:
        """Start a potentiostatic sweep around dc_V: n_points log-spaced, both ends included."""

    def read_eis(self, until_s: float) -> tuple[list[EisPoint], bool]:
        """The sweep's points due by until_s (blocking until they are), and whether it ended."""

    def eis_sweep_duration_s(self, f_start_Hz: float, f_end_Hz: float, n_points: int) -> float:
        """How long this instrument takes for that sweep (its own pace per frequency): the
        engine asks, never recomputes."""

    def eis(
        self, frequencies_Hz: Sequence[float], amplitude_V: float, dc_V: float | None = None
    ) -> list[tuple[float, complex]]: ...

    def abort(self) -> None: ...

    def output_off(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AtmosphereSensor(Protocol):
    retried: RetriedFaults  # attempts that failed and were retried (cured or not)

    def read(self) -> dict[str, float]:
        """{'o2_ppm': .., 'h2o_ppm': .., optionally 'temperature_K': ..}"""

    def close(self) -> None: ...


@runtime_checkable
class PressureGauge(Protocol):
    retried: RetriedFaults  # attempts that failed and were retried (cured or not)

    def read(self) -> tuple[float, float]:
        """(absolute pressure Pa, temperature K)"""

    def close(self) -> None: ...
