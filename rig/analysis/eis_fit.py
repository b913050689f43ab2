"""Fit impedance spectra to Rs + R_SEI‖CPE + Rct‖CPE + W (domain.md), with impedance.py.

The circuit is ``R0-p(R1,CPE1)-p(R2,CPE2)-W1`` in impedance.py's notation: R0 is Rs (electrolyte
and contacts), R1‖CPE1 the SEI (the high-frequency arc), R2‖CPE2 charge transfer with the
double layer (the lower-frequency arc), W1 a semi-infinite Warburg (Z = σ(1−j)/√ω). Fits are
fragile, so:

- each fit of a series starts from the previous good fit (``fit_series``), and falls back to a
  guess read off the spectrum itself (``initial_guess``) when that fails;
- the two arcs are put in order after the fit: R1 is always the arc with the higher
  characteristic frequency, whatever the optimiser converged to;
- nothing raises: a spectrum that cannot be fitted gives ``(None, reason)``;
- a fit is trusted only if it is good and determined: its relative RMS misfit (``residual``) is
  at most ``MAX_RESIDUAL`` and R_SEI and Rct are each known to ``MAX_RELATIVE_ERROR`` (one
  standard error, from impedance.py's ``conf_``). A spectrum with one arc fits "well" with any
  split of its resistance between two arcs; that is "fit failed", never a number.

Example (a simulated glyme cell: R_SEI = 8 Ω·cm² / 1.13 cm²)::

    >>> import numpy as np
    >>> from rig.sim.cell import NaCell, PRESETS
    >>> cell = NaCell("symmetric", 1.13, PRESETS["glyme"])
    >>> f = np.logspace(np.log10(2e5), -1, 38)
    >>> fit, reason = fit_spectrum(f, cell.impedance(f))
    >>> round(fit.r_sei_ohm, 2), round(cell.r_sei_ohm, 2), reason
    (7.08, 7.08, '')
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CIRCUIT = "R0-p(R1,CPE1)-p(R2,CPE2)-W1"
PARAMETERS = ("rs_ohm", "r_sei_ohm", "cpe_sei_q", "cpe_sei_n", "rct_ohm", "cpe_dl_q",
              "cpe_dl_n", "warburg_sigma")
MAX_RESIDUAL = 0.05  # relative RMS misfit above which a fit is not trusted
MIN_POINTS = 10  # fewer points than this cannot pin 8 parameters
MAX_RELATIVE_ERROR = 0.5  # R_SEI or Rct less certain than ±50 % (1 sigma): not determined


@dataclass(frozen=True)
class EisFit:
    """One fitted spectrum. CPE: Z = 1/(Q·(jω)^n), Q in F·s^(n−1); Warburg σ in Ω·s^−½;
    ``residual``: relative RMS misfit, √mean(|Z_fit − Z|² / |Z|²); ``chi_square``: the reduced
    chi-square of the modulus-weighted fit, Σ|Z_fit − Z|²/|Z|² / (2N − 8). ``*_err``: one
    standard error of each parameter (impedance.py's ``conf_``, from the fit's covariance),
    same unit as the parameter; None where the covariance could not be estimated."""

    rs_ohm: float
    r_sei_ohm: float
    cpe_sei_q: float
    cpe_sei_n: float
    rct_ohm: float
    cpe_dl_q: float
    cpe_dl_n: float
    warburg_sigma: float
    residual: float
    rs_ohm_err: float | None = None
    r_sei_ohm_err: float | None = None
    cpe_sei_q_err: float | None = None
    cpe_sei_n_err: float | None = None
    rct_ohm_err: float | None = None
    cpe_dl_q_err: float | None = None
    cpe_dl_n_err: float | None = None
    warburg_sigma_err: float | None = None
    chi_square: float | None = None
    n_points: int | None = None

    @property
    def parameters(self) -> list[float]:
        """In impedance.py's order for ``CIRCUIT`` (an initial guess for the next fit)."""
        return [getattr(self, name) for name in PARAMETERS]

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _custom_circuit() -> Any:
    """impedance.py's CustomCircuit. Its module imports the package's plotting helpers, which
    need pandas (not a dependency of narig or, since altair 5, of impedance.py): when pandas is
    missing, those helpers are replaced by stubs that say so, and fitting works as usual."""
    try:
        import impedance.visualization  # noqa: F401
    except ModuleNotFoundError:
        stub = types.ModuleType("impedance.visualization")

        def needs_pandas(*_: Any, **__: Any) -> None:
            raise ImportError("impedance.py's plots need pandas; narig does not plot with them")

        stub.plot_altair = stub.plot_bode = stub.plot_nyquist = needs_pandas  # type: ignore
        sys.modules["impedance.visualization"] = stub
    from impedance.models.circuits import CustomCircuit

    return CustomCircuit


def initial_guess(f_Hz: np.ndarray, z: np.ndarray) -> list[float]:
    """A starting point read off the spectrum: Rs at the highest frequency, the rest of the
    low-frequency resistance shared between the two arcs, CPEs placed on the arcs' apexes."""
    order = np.argsort(f_Hz)[::-1]
    f, z = f_Hz[order], z[order]
    rs = max(float(z.real[0]), 1e-3)
    # where the arcs end: the lowest frequency before the Warburg tail makes -Z'' rise again
    low = int(np.argmin(-z.imag[len(z) // 2:])) + len(z) // 2
    r_arcs = max(float(z.real[low]) - rs, 1e-3)
    apex = f[int(np.argmax(-z.imag[:low + 1]))] if low > 0 else f[len(f) // 2]
    r1 = r2 = r_arcs / 2
    w1, w2 = 2 * math.pi * apex * 10, 2 * math.pi * apex / 10  # one decade either side
    sigma = max(float(z.real[-1] - z.real[low]) * math.sqrt(2 * math.pi * f[-1]), 1e-3)
    return [rs, r1, 1 / (r1 * w1), 0.85, r2, 1 / (r2 * w2), 0.8, sigma]


def _ordered(p: Sequence[float], err: Sequence[float | None] | None = None
             ) -> tuple[list[float], list[float | None]]:
    """R1‖CPE1 is the higher-frequency arc: swap the arcs (and their errors) if the fit put
    them the other way."""
    rs, r1, q1, n1, r2, q2, n2, sigma = p
    e: list[float | None] = list(err) if err is not None else [None] * 8

    def log_f_char(r: float, q: float, n: float) -> float:
        """log of the arc's characteristic frequency, (R·Q)^(-1/n) / 2π (logs: no overflow)."""
        return -math.log(r * q) / n if r > 0 and q > 0 and n > 0 else -math.inf

    if log_f_char(r1, q1, n1) < log_f_char(r2, q2, n2):
        r1, q1, n1, r2, q2, n2 = r2, q2, n2, r1, q1, n1
        e = [e[0], *e[4:7], *e[1:4], e[7]]
    return [rs, r1, q1, n1, r2, q2, n2, sigma], e


def _errors(circuit: Any) -> list[float | None]:
    conf = getattr(circuit, "conf_", None)
    if conf is None or len(conf) != len(PARAMETERS):
        return [None] * len(PARAMETERS)
    return [float(c) if math.isfinite(float(c)) else None for c in conf]


def _fit_once(f: np.ndarray, z: np.ndarray, guess: Sequence[float]) -> tuple[EisFit | None, str]:
    circuit = _custom_circuit()(CIRCUIT, initial_guess=list(guess))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            circuit.fit(f, z, weight_by_modulus=True, maxfev=20000)
            z_fit = circuit.predict(f)
            p = [float(v) for v in circuit.parameters_]
            misfit = np.abs(z_fit - z) ** 2 / np.abs(z) ** 2
            residual = float(np.sqrt(np.mean(misfit)))
            dof = max(2 * len(z) - len(PARAMETERS), 1)
            chi_square = float(np.sum(misfit) / dof)
    except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return None, f"the fit did not converge ({type(exc).__name__}: {exc})"
    if not all(math.isfinite(v) for v in [*p, residual]):
        return None, "the fit gave non-finite parameters"
    p, err = _ordered(p, _errors(circuit))
    values: dict[str, Any] = dict(zip(PARAMETERS, p))
    values.update({f"{name}_err": e for name, e in zip(PARAMETERS, err)})
    fit = EisFit(**values, residual=residual, chi_square=chi_square, n_points=len(z))
    if residual > MAX_RESIDUAL:
        return None, f"the fit misses the data by {residual:.1%} RMS (more than {MAX_RESIDUAL:.0%})"
    return _determined(fit)


def _determined(fit: EisFit) -> tuple[EisFit | None, str]:
    """The fit, or None and why, if R_SEI or Rct is not pinned down by the data."""
    for name, label in (("r_sei_ohm", "R_SEI"), ("rct_ohm", "Rct")):
        value, err = getattr(fit, name), getattr(fit, f"{name}_err")
        if err is None:
            return None, f"{label} has no uncertainty (the fit's covariance is singular)"
        if value <= 0 or err > MAX_RELATIVE_ERROR * value:
            return None, (f"{label} is not determined by the data ({value:.4g} ± {err:.2g} ohm, "
                          f"more than ±{MAX_RELATIVE_ERROR:.0%}): e.g. only one arc")
    return fit, ""


def fit_spectrum(f_Hz: Iterable[float], z: Iterable[complex],
                 guess: Sequence[float] | None = None) -> tuple[EisFit | None, str]:
    """Fit one spectrum; ``guess`` (e.g. the previous fit's ``parameters``) is tried first.

    Returns ``(fit, "")`` or ``(None, reason)``. Capacitive points have Z'' < 0.
    """
    f, zz = np.asarray(list(f_Hz), dtype=float), np.asarray(list(z), dtype=complex)
    if len(f) != len(zz):
        return None, f"{len(f)} frequencies but {len(zz)} impedances"
    ok = np.isfinite(f) & (f > 0) & np.isfinite(zz) & (np.abs(zz) > 0)
    f, zz = f[ok], zz[ok]
    if len(f) < MIN_POINTS:
        return None, f"{len(f)} usable points; a fit of 8 parameters needs at least {MIN_POINTS}"
    reasons = []
    for start in ([guess] if guess is not None else []) + [initial_guess(f, zz)]:
        fit, reason = _fit_once(f, zz, start)
        if fit is not None:
            return fit, ""
        reasons.append(reason)
    return None, reasons[-1]


def fit_series(spectra: Iterable[tuple[Iterable[float], Iterable[complex]]]
               ) -> list[tuple[EisFit | None, str]]:
    """Fit spectra in order, each starting from the last good fit before it."""
    out: list[tuple[EisFit | None, str]] = []
    last: EisFit | None = None
    for f, z in spectra:
        fit, reason = fit_spectrum(f, z, last.parameters if last else None)
        out.append((fit, reason))
        last = fit or last
    return out
