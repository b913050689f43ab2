"""Station sensors polled on their own schedule, logged on the run's timeline, and fed to the
interlocks that hold or end channels."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from drivers.base import InstrumentError
from rig.engine.context import RunContext
from rig.engine.interlocks import (
    AtmosphereInterlock,
    AtmosphereLimits,
    PressureLimits,
    PressureWatch,
    Transition,
)
from rig.events import EventKind

if TYPE_CHECKING:
    from rig.engine.channel import ChannelRunner


MIN_SILENCE_WALL_S = 10.0


def atmosphere_limits(interlocks: AtmosphereLimits | None) -> AtmosphereLimits:
    """The station's interlock settings, or the defaults (a station without a file)."""
    return interlocks if interlocks is not None else AtmosphereLimits()


class SensorHub:
    """One polling task per sensor; one atmosphere interlock for the station; one pressure
    watch per gas holder."""

    def __init__(self, ctx: RunContext, station: Any, runners: list[ChannelRunner]) -> None:
        self.ctx = ctx
        self.sensors = list(getattr(station, "sensors", []) or [])
        self.runners = runners
        self.by_channel = {r.channel: r for r in runners}
        limits = atmosphere_limits(getattr(station, "interlocks", None))
        self.floor_s = ctx.sensor_floor_s
        # silence means "unsafe" only after a while: later when polled less often than
        # configured, and never sooner than a few wall seconds on an accelerated clock (a
        # driver's own timeout and retries are wall time)
        speed = getattr(ctx.clock, "speed", 1.0)
        timeout = max(limits.sensor_timeout_s, 2.5 * self.floor_s, MIN_SILENCE_WALL_S * speed)
        limits = dataclasses.replace(limits, sensor_timeout_s=timeout)
        self.atmosphere = AtmosphereInterlock(limits, ctx.clock.now())
        self.timeout_s = limits.sensor_timeout_s
        self.latest: dict[str, tuple[float, float]] = {}
        self.watches = {
            s.name: PressureWatch(PressureLimits(s.holder.limit_Pa,
                                                 s.holder.rate_warning_Pa_per_s))
            for s in self.sensors if s.kind == "pressure" and getattr(s, "holder", None)
        }
        self.faulty: dict[str, int] = {}  # sensor -> failed polls in a row
        self.retried_total: dict[str, int] = {}  # sensor -> attempts its driver retried

    def tasks(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._poll(s)) for s in self.sensors]

    async def _poll(self, sensor: Any) -> None:
        clock = self.ctx.clock
        with clock.participant():
            while True:
                t = clock.now()
                try:
                    value = await sensor.link.call(sensor.driver.read)
                except InstrumentError as exc:
                    self._fault(sensor, t, exc)
                    value = None
                else:
                    self._recovered(sensor, t)
                self._retried(sensor, t)
                if sensor.kind == "atmosphere":
                    self._atmosphere(sensor, t, value)
                else:
                    self._pressure(sensor, t, value)
                await clock.sleep_until(t + self._interval(sensor))

    def _interval(self, sensor: Any) -> float:
        """The poll interval: as configured for gas-holder gauges (per-cycle gas needs their
        readings at the cycle boundaries); at least the floor for the rest."""
        if sensor.kind == "pressure":
            return sensor.poll_interval_s
        return max(sensor.poll_interval_s, self.floor_s)

    # ---- readings --------------------------------------------------------------------------
    def _atmosphere(self, sensor: Any, t: float, value: dict[str, float] | None) -> None:
        if value:
            self.ctx.writer.sensor_values(self.ctx.run_key, [
                (t, sensor.name, q, v) for q, v in value.items() if not math.isnan(v)])
            for q in ("o2_ppm", "h2o_ppm"):
                if q in value and not math.isnan(value[q]):
                    self.latest[q] = (t, value[q])
        o2, h2o = self._value("o2_ppm", t), self._value("h2o_ppm", t)
        if math.isnan(o2) or math.isnan(h2o):
            self._apply(self.atmosphere.silence(t), t)
        else:
            self._apply(self.atmosphere.reading(t, o2, h2o), t)

    def _value(self, quantity: str, t: float) -> float:
        """Latest value; 0 for a quantity no sensor of this station measures; NaN when its
        last valid reading is older than the sensor timeout (unsafe)."""
        if quantity not in self.latest:
            return 0.0
        t_read, v = self.latest[quantity]
        return v if t - t_read < self.timeout_s else math.nan

    def _pressure(self, sensor: Any, t: float, value: tuple[float, float] | None) -> None:
        if value is None:
            return
        pressure_Pa, temperature_K = value
        self.ctx.writer.sensor_values(self.ctx.run_key, [
            (t, sensor.name, "pressure_Pa", pressure_Pa),
            (t, sensor.name, "temperature_K", temperature_K)])
        watch = self.watches.get(sensor.name)
        tr = watch.reading(t, pressure_Pa) if watch else None
        if tr is None:
            return
        runner = self.by_channel.get(sensor.channel)
        where = f"channel {sensor.channel}" if runner else f"sensor {sensor.name}"
        if tr.action == "overpressure":
            self.ctx.writer.event(self.ctx.run_key, sensor.channel, t, "alarm",
                                  EventKind.OVERPRESSURE,
                                  f"{where}: {tr.message}: output off, channel ends")
            if runner:
                runner.request_end("overpressure")
        else:
            self.ctx.writer.event(self.ctx.run_key, sensor.channel, t, "warning",
                                  EventKind.PRESSURE_RISING, f"{where}: {tr.message}")

    def _apply(self, tr: Transition | None, t: float) -> None:
        if tr is None:
            return
        ctx = self.ctx
        level = {"hold": "alarm", "release": "info"}.get(tr.action, "warning")
        ctx.writer.event(ctx.run_key, None, t, level, EventKind.interlock(tr.action),
                         tr.message)
        if tr.action in ("hold", "release"):
            for r in self.runners:
                r.hold_requested = tr.action == "hold"
                r.nudge()

    def _fault(self, sensor: Any, t: float, exc: InstrumentError) -> None:
        """A poll that gave nothing (the driver's retries ran out): the first of a spell is an
        event; the spell's length is in the event that ends it."""
        if sensor.name not in self.faulty:
            self.ctx.writer.event(self.ctx.run_key, sensor.channel, t, "warning",
                                  EventKind.SENSOR_FAULT,
                                  f"sensor {sensor.name}: {type(exc).__name__}: {exc}")
        self.faulty[sensor.name] = self.faulty.get(sensor.name, 0) + 1

    def _retried(self, sensor: Any, t: float) -> None:
        """Attempts the driver retried during this poll: each is a fault on the wire even when
        the retry cured it, so each is counted in an event."""
        count, kept = sensor.driver.retried.take()
        if count:
            first = kept[0] if kept else ""
            self.ctx.writer.event(
                self.ctx.run_key, sensor.channel, t, "warning", EventKind.SENSOR_RETRIED,
                f"sensor {sensor.name}: {count} failed attempt{'s' if count > 1 else ''} "
                f"retried ({first}{'; ...' if count > 1 else ''})")
            self.retried_total[sensor.name] = self.retried_total.get(sensor.name, 0) + count

    def _recovered(self, sensor: Any, t: float) -> None:
        missed = self.faulty.pop(sensor.name, 0)
        if missed:
            self.ctx.writer.event(self.ctx.run_key, sensor.channel, t, "info",
                                  EventKind.SENSOR_OK,
                                  f"sensor {sensor.name} answers again after {missed} failed "
                                  f"poll{'s' if missed > 1 else ''}")
