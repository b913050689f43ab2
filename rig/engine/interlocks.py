"""Station interlocks as small state machines fed with readings (no I/O here, so every edge
case is a plain test).

Atmosphere: O2 or H2O above its threshold for longer than the hold-off holds every channel at
open circuit; once both have been below threshold minus hysteresis for ``clear_for_s``, the
channels resume (if the protocol allows). A sensor that gives no valid reading for
``sensor_timeout_s`` is treated as unsafe. Pressure: above the holder's limit that cell ends
with ``overpressure``; a fast rise warns first.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class AtmosphereLimits:
    """Station interlocks in SI (ppm, s). Above a threshold for ``hold_off_s`` every channel is
    held at open circuit; the alarm clears once both species stay below threshold minus
    ``hysteresis_ppm`` for ``clear_for_s``; a sensor silent for ``sensor_timeout_s`` counts as
    an alarm (fail safe). ``resume_when_clear``: resume held channels when it clears.
    (`rig.station` calls it ``Interlocks``: the station file's ``[interlocks]`` table.)"""

    o2_max_ppm: float = 1.0
    h2o_max_ppm: float = 1.0
    hysteresis_ppm: float = 0.2
    hold_off_s: float = 30.0
    clear_for_s: float = 600.0
    sensor_timeout_s: float = 60.0
    resume_when_clear: bool = True


@dataclass(frozen=True)
class Transition:
    """What the engine must do now: ``hold`` or ``release`` every channel, with why."""

    action: str  # "hold" | "release" | "alarm_cleared_manual"
    message: str


class AtmosphereInterlock:
    """clear -> (high for hold_off) -> held -> (low for clear_for) -> clear."""

    def __init__(self, limits: AtmosphereLimits, t_start: float) -> None:
        self.limits = limits
        self.held = False
        self.high_since: float | None = None
        self.low_since: float | None = None
        self.last_valid = t_start
        self.reason = ""

    def _high(self, o2: float, h2o: float) -> str | None:
        lim = self.limits
        if o2 > lim.o2_max_ppm:
            return f"O2 {o2:.2f} ppm above {lim.o2_max_ppm:g} ppm"
        if h2o > lim.h2o_max_ppm:
            return f"H2O {h2o:.2f} ppm above {lim.h2o_max_ppm:g} ppm"
        return None

    def _low(self, o2: float, h2o: float) -> bool:
        lim = self.limits
        return (o2 < lim.o2_max_ppm - lim.hysteresis_ppm
                and h2o < lim.h2o_max_ppm - lim.hysteresis_ppm)

    def reading(self, t: float, o2_ppm: float, h2o_ppm: float) -> Transition | None:
        """A reading (NaN where the sensor had none). Returns a transition when one happens."""
        if math.isnan(o2_ppm) or math.isnan(h2o_ppm):
            return self.silence(t)
        self.last_valid = t
        high = self._high(o2_ppm, h2o_ppm)
        if not self.held:
            if high is None:
                self.high_since = None
                return None
            if self.high_since is None:
                self.high_since = t
            if t - self.high_since >= self.limits.hold_off_s:
                return self._hold(high + f" for {t - self.high_since:.0f} s")
            return None
        # held: wait for a clear spell; crossing again restarts it
        if not self._low(o2_ppm, h2o_ppm):
            self.low_since = None
            return None
        if self.low_since is None:
            self.low_since = t
        if t - self.low_since >= self.limits.clear_for_s:
            return self._release()
        return None

    def silence(self, t: float) -> Transition | None:
        """No valid reading at ``t`` (timeout, error, NaN): unsafe once it lasts too long."""
        self.low_since = None
        if not self.held and t - self.last_valid >= self.limits.sensor_timeout_s:
            return self._hold(f"no valid atmosphere reading for {t - self.last_valid:.0f} s")
        return None

    def _hold(self, why: str) -> Transition:
        self.held, self.high_since, self.low_since, self.reason = True, None, None, why
        return Transition("hold", f"atmosphere interlock: {why}; holding every channel at "
                                  "open circuit")

    def _release(self) -> Transition:
        if not self.limits.resume_when_clear:
            self.low_since = None
            return Transition("alarm_cleared_manual",
                              f"atmosphere clear for {self.limits.clear_for_s:.0f} s; the "
                              "protocol does not resume by itself: resume the run by hand")
        self.held, self.low_since = False, None
        return Transition("release", f"atmosphere clear for {self.limits.clear_for_s:.0f} s: "
                                     "channels resume where they were")


@dataclass(frozen=True)
class PressureLimits:
    limit_Pa: float
    rate_warning_Pa_per_s: float | None = None
    rate_window_s: float = 600.0


class PressureWatch:
    """One gas holder: above the limit ends its cell; a fast rise warns (once per window)."""

    def __init__(self, limits: PressureLimits) -> None:
        self.limits = limits
        self.history: deque[tuple[float, float]] = deque()
        self.warned_at = -math.inf

    def reading(self, t: float, pressure_Pa: float) -> Transition | None:
        lim = self.limits
        if math.isnan(pressure_Pa):
            return None
        if pressure_Pa > lim.limit_Pa:
            return Transition("overpressure", f"pressure {pressure_Pa / 1e5:.4f} bar above the "
                                              f"holder's limit {lim.limit_Pa / 1e5:.4f} bar")
        h = self.history
        h.append((t, pressure_Pa))
        while len(h) > 2 and t - h[1][0] >= lim.rate_window_s:
            h.popleft()
        t0, p0 = h[0]
        if lim.rate_warning_Pa_per_s is None or t - t0 < lim.rate_window_s / 2:
            return None
        rate = (pressure_Pa - p0) / (t - t0)
        if rate > lim.rate_warning_Pa_per_s and t - self.warned_at >= lim.rate_window_s:
            self.warned_at = t
            return Transition("rate_warning", f"pressure rising {rate * 36:.2f} mbar/h "
                                              f"(warning above "
                                              f"{lim.rate_warning_Pa_per_s * 36:.2f} mbar/h)")
        return None
