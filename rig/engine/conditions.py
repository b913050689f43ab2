"""End conditions and failure detectors, evaluated per sample (pure, cheap, stateful where they
must look back in time)."""

from __future__ import annotations

import math
from collections import deque

from protocols.plan import EndCondition, FailureCriteria, Safety

SAMPLE_END_KINDS = ("potential_above", "potential_below", "current_above", "current_below")


class BadPlan(Exception):
    """A step the engine cannot bound in time."""


def time_end(ends: tuple[EndCondition, ...]) -> EndCondition | None:
    """The step's earliest time end, if it has one."""
    return min((c for c in ends if c.kind == "time"), key=lambda c: c.value, default=None)


def charge_end(ends: tuple[EndCondition, ...]) -> EndCondition | None:
    return next((c for c in ends if c.kind == "charge"), None)


def sample_ends(ends: tuple[EndCondition, ...]) -> tuple[EndCondition, ...]:
    return tuple(c for c in ends if c.kind in SAMPLE_END_KINDS)


def first_end(ends: tuple[EndCondition, ...], e: float, i: float) -> EndCondition | None:
    for c in ends:
        k = c.kind
        if ((k == "potential_above" and e >= c.value) or (k == "potential_below" and e <= c.value)
                or (k == "current_above" and abs(i) >= c.value)
                or (k == "current_below" and abs(i) <= c.value)):
            return c
    return None


def instrument_window(ends: tuple[EndCondition, ...], safety: Safety) -> tuple[float, float]:
    """The potential limits armed inside the instrument for a current step: the safety window,
    narrowed to the step's own potential cutoffs, so the instrument stops at the cutoff even
    if the host is slow."""
    above = [c.value for c in ends if c.kind == "potential_above"]
    below = [c.value for c in ends if c.kind == "potential_below"]
    return max([safety.e_min_V, *below]), min([safety.e_max_V, *above])


def planned_cutoff(ends: tuple[EndCondition, ...], e: float, i: float,
                   overload: bool, i_max: float,
                   e_range_V: float | None = None) -> EndCondition | None:
    """A potential end of the step that this out-of-window sample also crossed (a cutoff
    overshot in one sample, e.g. a Na||Cu strip when the Na runs out), else None. Never for a
    current over the limit, and never for an overload - except a potential pinned at the
    instrument's range ``e_range_V`` on the far side of the step's own potential cutoff: the
    reading then proves the cutoff was crossed (the spike of a Na||Cu strip whose Na ran out
    goes past a +-3 V range), and the instrument, armed at that cutoff, stopped there."""
    if abs(i) > i_max:
        return None
    if overload:
        pinned = e_range_V is not None and abs(e) >= e_range_V * (1 - 1e-6)
        hit = first_end(ends, e, i) if pinned else None
        return hit if hit is not None and hit.kind.startswith("potential") else None
    hit = first_end(ends, e, i)
    return hit if hit is not None and hit.kind.startswith("potential") else None


class DeDtWatcher:
    """|dE/dt| below a threshold ("rest until stable"), judged over a look-back window long
    enough that instrument noise does not fake a slope: max(10 min, 10 sample intervals)."""

    def __init__(self, end: EndCondition, interval_s: float) -> None:
        self.end = end
        self.window_s = max(600.0, 10 * interval_s)
        self.history: deque[tuple[float, float]] = deque()

    def check(self, ts: float, e: float) -> EndCondition | None:
        h = self.history
        h.append((ts, e))
        while len(h) > 2 and ts - h[1][0] >= self.window_s:
            h.popleft()
        t_old, e_old = h[0]
        if ts - t_old < self.window_s:
            return None
        return self.end if abs(e - e_old) / (ts - t_old) < self.end.value else None


class ShortDetector:
    """During a constant-current step, a short shows as |E| collapsing: below ``short_below_V``,
    or falling by more than ``short_drop_fraction`` of its recent level within
    ``short_drop_window_s``. The recent level is a moving average over that window (O(1) per
    sample; a noise spike moves it little, a plateau sets it). Which kind of short it is shows
    only afterwards, so the detector waits one window: still collapsed (|E| ~ I x R_short,
    below the threshold) is a hard short; back up, or settled on a lower plateau above the
    threshold, is a soft short."""

    def __init__(self, fc: FailureCriteria) -> None:
        self.below = fc.short_below_V
        self.frac = fc.short_drop_fraction
        self.window_s = fc.short_drop_window_s
        self.level: float | None = None
        self.last_ts = 0.0
        self.suspect_since: float | None = None

    @property
    def active(self) -> bool:
        return self.below is not None or self.frac is not None

    def check(self, ts: float, e: float) -> str | None:
        a = abs(e)
        if self.suspect_since is not None:
            return self.classify(a) if ts - self.suspect_since >= self.window_s else None
        level = self.level
        collapsed = self.below is not None and a < self.below
        dropped = (self.frac is not None and level is not None and level > 0
                   and (level - a) / level > self.frac)
        if collapsed or dropped:
            self.suspect_since = ts
            return None
        weight = min(1.0, (ts - self.last_ts) / self.window_s)
        self.level = a if level is None else level + weight * (a - level)
        self.last_ts = ts
        return None

    def classify(self, a: float) -> str:
        """Hard if |E| is still under the hard threshold, else soft."""
        self.suspect_since = None
        self.level = None
        return "short_hard" if self.below is not None and a < self.below else "short_soft"


def diverged(etas: list[float], eta: float, fc: FailureCriteria) -> float | None:
    """The reference overpotential if ``eta`` (a half-cycle's mean |E|) exceeds k x the mean of
    the first cycles' values, else None. ``etas``: per-cycle means so far, cycle 1 first."""
    n, k = fc.divergence_reference_cycles, fc.divergence_factor
    if k is None or len(etas) < n or n < 1:
        return None
    ref = sum(etas[:n]) / n
    return ref if math.isfinite(eta) and eta > k * ref else None
