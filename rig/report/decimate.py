"""Min/max decimation: a long series drawn from a few thousand points, with no extreme lost.

The time span is cut into equal buckets; each bucket keeps its minimum and its maximum (with
the times they happened), in time order. A plot of the result shows every spike and every dip
of the full series — a one-sample short or an overshoot is never averaged or skipped away, as
it would be by taking every Nth sample. Fed chunk by chunk, so the series never has to be in
memory at once.

    >>> d = MinMaxDecimator(0.0, 9.0, buckets=2)
    >>> d.add(np.arange(10.0), np.array([[0, 1, 0, 9, 0, 0, 0, -5, 0, 0]], float).T)
    >>> t, v = d.series()[0]
    >>> t.tolist(), v.tolist()
    ([0.0, 3.0, 7.0, 9.0], [0.0, 9.0, -5.0, 0.0])
"""

from __future__ import annotations

import math

import numpy as np


class MinMaxDecimator:
    """Minimum and maximum of each of ``n_series`` value columns per time bucket over
    ``[t0, t1]`` (samples outside go to the first or last bucket)."""

    def __init__(self, t0: float, t1: float, buckets: int = 2000, n_series: int = 1) -> None:
        if buckets < 1:
            raise ValueError("buckets must be at least 1")
        if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
            raise ValueError(f"bad time span [{t0}, {t1}]")
        self.t0, self.buckets = t0, buckets
        self.width = (t1 - t0) / buckets if t1 > t0 else 1.0
        shape = (n_series, buckets)
        self.min_v, self.max_v = np.full(shape, np.inf), np.full(shape, -np.inf)
        self.min_t, self.max_t = np.full(shape, np.nan), np.full(shape, np.nan)
        self.n = 0

    def add(self, t: np.ndarray, values: np.ndarray) -> None:
        """A chunk: times ``t`` (n,), in increasing order, and ``values`` (n, n_series)."""
        t = np.asarray(t, dtype=float)
        values = np.asarray(values, dtype=float).reshape(len(t), -1)
        if len(t) == 0:
            return
        self.n += len(t)
        b = np.clip(((t - self.t0) / self.width).astype(np.int64), 0, self.buckets - 1)
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])  # b is sorted: runs of buckets
        ends = np.r_[starts[1:], len(b)] - 1
        ub = b[starts]
        for k in range(values.shape[1]):
            v = values[:, k]
            ok = ~np.isnan(v)
            # within each run of one bucket, sorted by value: first = minimum, last = maximum
            # (a missing value, NaN, sorts to the far end: never an extreme)
            order = np.lexsort((np.where(ok, v, np.inf), b))
            i_min = order[starts]
            order_max = np.lexsort((np.where(ok, v, -np.inf), b))
            i_max = order_max[ends]
            self._merge(k, ub, v[i_min], t[i_min], np.less, self.min_v, self.min_t, ok[i_min])
            self._merge(k, ub, v[i_max], t[i_max], np.greater, self.max_v, self.max_t,
                        ok[i_max])

    @staticmethod
    def _merge(k: int, ub: np.ndarray, v: np.ndarray, t: np.ndarray, better: np.ufunc,
               best_v: np.ndarray, best_t: np.ndarray, ok: np.ndarray) -> None:
        take = ok & better(v, best_v[k, ub])
        best_v[k, ub[take]] = v[take]
        best_t[k, ub[take]] = t[take]

    def series(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per value column ``(t, v)``: each filled bucket's minimum and maximum in time order
        (one point where both are the same sample)."""
        out = []
        for k in range(self.min_v.shape[0]):
            filled = ~np.isnan(self.min_t[k])
            tm, vm = self.min_t[k, filled], self.min_v[k, filled]
            tx, vx = self.max_t[k, filled], self.max_v[k, filled]
            first_min = tm <= tx
            t = np.column_stack([np.where(first_min, tm, tx), np.where(first_min, tx, tm)])
            v = np.column_stack([np.where(first_min, vm, vx), np.where(first_min, vx, vm)])
            same = tm == tx
            keep = np.column_stack([np.ones_like(same), ~same]).ravel()
            out.append((t.ravel()[keep], v.ravel()[keep]))
        return out
