"""Time for the rig: every wait goes through a Clock.

RealClock follows the wall (optionally accelerated xN, for demos and `rig sim serve`).
VirtualClock jumps: when every participating task is asleep on the clock, time leaps to the
earliest wake-up, so a 400-hour protocol runs in seconds.

The streaming trap: MethodSCRIPT devices send data packages on their own schedule. If the engine
waited for a package while the simulated device waited for time to pass, neither would move.
The way out used here: simulated devices register a ``pump(now)`` with the clock. Before any
sleeper wakes after a jump, every pump writes all packages due by the new time into its
transport; the engine then reads what has arrived. A task that is not asleep on the clock (busy,
or blocked in an instrument request) holds time still, so a request in flight never sees time
jump under it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Pump = Callable[[float], None]


class Clock(Protocol):
    """What the engine, drivers' callers and simulators need of time (seconds, Unix epoch)."""

    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...

    async def sleep(self, dt: float) -> None: ...

    def participant(self) -> AbstractContextManager[None]: ...

    def add_pump(self, pump: Pump) -> None: ...

    def remove_pump(self, pump: Pump) -> None: ...

    @property
    def is_virtual(self) -> bool: ...


class RealClock:
    """Wall time, or wall time sped up ``speed`` times (``--clock x60``)."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._wall0 = time.time()
        self._t0 = self._wall0 if start is None else start
        self._pumps: list[Pump] = []

    @property
    def is_virtual(self) -> bool:
        return False

    def now(self) -> float:
        return self._t0 + (time.time() - self._wall0) * self.speed

    async def sleep_until(self, t: float, wake: asyncio.Future | None = None) -> None:
        """Sleep until ``t``, or until ``wake`` completes (a nudge: act now)."""
        delay = max(0.0, (t - self.now()) / self.speed)
        if wake is None:
            await asyncio.sleep(delay)
        elif not wake.done():
            await asyncio.wait((wake,), timeout=delay)

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt) / self.speed)

    def wall_seconds(self, dt: float) -> float:
        """How long ``dt`` clock seconds last on the wall."""
        return dt / self.speed

    @contextmanager
    def participant(self) -> Iterator[None]:
        yield

    # Simulators on a real clock pump themselves from a thread (see rig.sim.emstat).
    def add_pump(self, pump: Pump) -> None:
        self._pumps.append(pump)

    def remove_pump(self, pump: Pump) -> None:
        if pump in self._pumps:
            self._pumps.remove(pump)


class VirtualClock:
    """Simulated time that advances only when every participant sleeps on it.

    Participants are the tasks whose progress depends on time (channel runners, sensor
    pollers); they enter ``with clock.participant():``. A task outside that block (the store
    writer, a test body) never holds time back.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._participants = 0
        self._sleeping = 0
        self._pumps: list[Pump] = []
        self._jump_scheduled = False
        self._lock = threading.Lock()  # now() is read from simulator threads

    @property
    def is_virtual(self) -> bool:
        return True

    def now(self) -> float:
        return self._now

    def add_pump(self, pump: Pump) -> None:
        self._pumps.append(pump)

    def remove_pump(self, pump: Pump) -> None:
        if pump in self._pumps:
            self._pumps.remove(pump)

    @contextmanager
    def participant(self) -> Iterator[None]:
        self._participants += 1
        try:
            yield
        finally:
            self._participants -= 1
            self._maybe_jump()

    async def sleep(self, dt: float) -> None:
        await self.sleep_until(self._now + max(0.0, dt))

    async def sleep_until(self, t: float, wake: asyncio.Future | None = None) -> None:
        """Sleep until the clock reaches ``t``, or until ``wake`` completes (a nudge: the
        sleeper stops counting as asleep before any jump can happen)."""
        if t <= self._now or (wake is not None and wake.done()):
            await asyncio.sleep(0)  # still a scheduling point, as on a real clock
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (t, next(self._seq), fut))
        self._sleeping += 1

        def on_wake(_: object) -> None:
            if not fut.done():
                self._sleeping -= 1
                fut.set_result(None)

        if wake is not None:
            wake.add_done_callback(on_wake)
        self._maybe_jump()
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.done():  # cancelled while still asleep: it no longer sleeps
                self._sleeping -= 1
                fut.cancel()
            raise
        finally:
            if wake is not None:
                wake.remove_done_callback(on_wake)

    def _maybe_jump(self) -> None:
        if self._jump_scheduled or not self._heap:
            return
        if self._sleeping < self._participants or self._sleeping == 0:
            return
        self._jump_scheduled = True
        # Let callbacks already queued run first: one of them may wake a participant.
        asyncio.get_running_loop().call_soon(self._jump)

    def _jump(self) -> None:
        self._jump_scheduled = False
        while self._heap and self._heap[0][2].done():  # woken early or cancelled
            heapq.heappop(self._heap)
        if not self._heap or self._sleeping < self._participants or self._sleeping == 0:
            return
        target = self._heap[0][0]
        if target > self._now:
            with self._lock:
                self._now = target
            for pump in list(self._pumps):
                pump(target)  # streaming devices catch up before anyone wakes
        while self._heap and self._heap[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                self._sleeping -= 1
                fut.set_result(None)

    def advance(self, dt: float) -> None:
        """Move time forward by hand (tests, and a clock with no participants)."""
        with self._lock:
            self._now += dt
        for pump in list(self._pumps):
            pump(self._now)


MIN_SPEED, MAX_SPEED = 1e-3, 1e6  # xN: slower than x0.001 never ends; faster, nothing reads


def check_clock_spec(spec: str) -> str:
    """``virtual``, ``real`` or ``xN`` with N a finite number in [0.001, 1e6]; the spec,
    lower-cased, or ValueError with one line saying what is allowed."""
    text = (spec or "").strip().lower()
    if text in ("virtual", "real"):
        return text
    if text.startswith("x"):
        try:
            speed = float(text[1:])
        except ValueError:
            speed = math.nan
        if math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED:
            return text
        raise ValueError(f"--clock {spec!r}: the speed of an xN clock must be a number from "
                         f"{MIN_SPEED:g} to {MAX_SPEED:g} (e.g. x60)")
    raise ValueError(f"--clock: {spec!r} is not one of virtual, real, xN (e.g. x60)")


def make_clock(spec: str, simulated: bool) -> RealClock | VirtualClock:
    """``virtual``, ``real`` or ``xN`` (accelerated real time); default by station kind."""
    spec = check_clock_spec(spec or ("virtual" if simulated else "real"))
    if spec == "virtual":
        return VirtualClock(start=time.time())
    if spec == "real":
        return RealClock()
    return RealClock(speed=float(spec[1:]))
