"""EIS for the report: every sweep of a channel fitted (``rig.analysis.eis_fit``, each from the
previous fit, as the run's outcome was), with one standard error on R_SEI and Rct, and the
fitted circuit's impedance to draw over the data.

The errors are the fit's own when ``EisFit`` carries them (``r_sei_ohm_err``, ``rct_ohm_err``);
otherwise they come from the covariance impedance.py estimates (``CustomCircuit.conf_``) when
the fit is repeated from its own result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rig.analysis.eis_fit import CIRCUIT, EisFit, _custom_circuit, fit_series


@dataclass(frozen=True)
class Sweep:
    sweep: int
    t: float
    f_Hz: np.ndarray
    z: np.ndarray
    fit: EisFit | None
    reason: str  # why there is no fit
    r_sei_err: float | None = None
    rct_err: float | None = None


def circuit_impedance(p: Sequence[float], f_Hz: np.ndarray) -> np.ndarray:
    """Z of R0-p(R1,CPE1)-p(R2,CPE2)-W1 (impedance.py's elements: CPE 1/(Q(jω)^n), Warburg
    σ(1−j)/√ω) at ``f_Hz``, parameters in ``rig.analysis.eis_fit.PARAMETERS`` order."""
    rs, r1, q1, n1, r2, q2, n2, sigma = p
    jw = 1j * 2 * np.pi * np.asarray(f_Hz, dtype=float)
    return (rs + r1 / (1 + r1 * q1 * jw ** n1) + r2 / (1 + r2 * q2 * jw ** n2)
            + sigma * (1 - 1j) / np.sqrt(jw.imag))


def _covariance_errors(f: np.ndarray, z: np.ndarray, fit: EisFit) -> tuple[float | None, ...]:
    """(σ R_SEI, σ Rct) from impedance.py's ``conf_`` after a fit started at ``fit`` itself."""
    circuit = _custom_circuit()(CIRCUIT, initial_guess=fit.parameters)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            circuit.fit(f, z, weight_by_modulus=True, maxfev=20000)
    except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None, None
    conf = getattr(circuit, "conf_", None)
    p = getattr(circuit, "parameters_", None)
    if conf is None or p is None or len(conf) != 8:
        return None, None
    # the refit may swap the arcs: match each of ours with the refit arc nearest to it
    r_a, r_b = float(p[1]), float(p[4])
    swap = abs(r_a - fit.r_sei_ohm) + abs(r_b - fit.rct_ohm) > \
        abs(r_b - fit.r_sei_ohm) + abs(r_a - fit.rct_ohm)
    e1, e2 = (float(conf[4]), float(conf[1])) if swap else (float(conf[1]), float(conf[4]))
    return tuple(e if math.isfinite(e) else None for e in (e1, e2))


def sweeps(rows: Sequence[Sequence[Any]]) -> list[Sweep]:
    """Store rows ``(sweep, t, f_Hz, z_re, z_im)`` of one channel -> fitted sweeps in order."""
    grouped: dict[int, tuple[float, list[float], list[complex]]] = {}
    for sweep, t, f, re, im in rows:
        entry = grouped.setdefault(int(sweep), (float(t), [], []))
        entry[1].append(float(f))
        entry[2].append(complex(re, im))
    order = sorted(grouped)
    data = [(np.array(grouped[k][1]), np.array(grouped[k][2])) for k in order]
    out = []
    for k, (f, z), (fit, reason) in zip(order, data, fit_series(data)):
        r_err = c_err = None
        if fit is not None:
            r_err, c_err = getattr(fit, "r_sei_ohm_err", None), getattr(fit, "rct_ohm_err", None)
            if r_err is None or c_err is None:
                ok = np.isfinite(f) & (f > 0) & np.isfinite(z)
                r_err, c_err = _covariance_errors(f[ok], z[ok], fit)
        out.append(Sweep(k, grouped[k][0], f, z, fit, reason, r_err, c_err))
    return out
