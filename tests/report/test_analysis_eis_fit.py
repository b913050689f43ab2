"""EIS fits of R0-p(R1,CPE1)-p(R2,CPE2)-W1 on spectra of the simulated Na cell (the real
model, rig/sim/cell.py): R_SEI, Rs and Rct come back within 10 %, and bad data gives a reason."""

from __future__ import annotations

import numpy as np
import pytest

from rig.analysis.eis_fit import EisFit, fit_series, fit_spectrum
from rig.sim.cell import PRESETS, NaCell

F = np.logspace(np.log10(2e5), -1, 38)  # 200 kHz -> 100 mHz, 6 points per decade


def noisy(z: np.ndarray, rel: float, rng: np.random.Generator) -> np.ndarray:
    return z * (1 + rel * (rng.standard_normal(len(z)) + 1j * rng.standard_normal(len(z))))


@pytest.mark.parametrize("preset", ["glyme", "carbonate"])
def test_fit_recovers_rs_r_sei_and_rct_of_the_simulated_cell(preset):
    cell = NaCell("symmetric", 1.13, PRESETS[preset], seed=3)
    fit, reason = fit_spectrum(F, cell.impedance(F))
    assert reason == "" and isinstance(fit, EisFit)
    assert fit.rs_ohm == pytest.approx(cell.rs_ohm, rel=0.1)
    assert fit.r_sei_ohm == pytest.approx(cell.r_sei_ohm, rel=0.1)
    assert fit.rct_ohm == pytest.approx(cell.rct_ohm, rel=0.1)
    el = cell.electrolyte
    assert fit.cpe_sei_n == pytest.approx(el.cpe_sei_n, abs=0.05)
    assert fit.cpe_dl_n == pytest.approx(el.cpe_dl_n, abs=0.05)
    assert fit.residual < 0.01


def test_a_series_at_rest_follows_r_sei_growth_within_ten_percent_through_noise():
    cell = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=3)
    rng = np.random.default_rng(5)
    spectra, truth = [], []
    for hour in range(7):
        if hour:
            for _ in range(60):
                cell.open_circuit(60.0)
        spectra.append((F, noisy(cell.impedance(F), 0.003, rng)))
        truth.append(cell.r_sei_ohm)
    fits = fit_series(spectra)
    assert all(reason == "" for _, reason in fits)
    fitted = [fit.r_sei_ohm for fit, _ in fits]
    assert fitted == pytest.approx(truth, rel=0.1)
    assert truth[-1] > 1.3 * truth[0]  # the carbonate SEI grows at rest, and the fit sees it


def test_the_sei_arc_is_r1_even_when_the_guess_has_the_arcs_swapped():
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=3)
    right, _ = fit_spectrum(F, cell.impedance(F))
    p = right.parameters
    swapped = [p[0], p[4], p[5], p[6], p[1], p[2], p[3], p[7]]
    fit, _ = fit_spectrum(F, cell.impedance(F), guess=swapped)
    assert fit.r_sei_ohm == pytest.approx(cell.r_sei_ohm, rel=0.1)
    assert fit.cpe_sei_q < fit.cpe_dl_q


def test_too_few_points_give_none_and_a_reason():
    fit, reason = fit_spectrum(F[:5], np.ones(5) + 0j)
    assert fit is None and reason == "5 usable points; a fit of 8 parameters needs at least 10"


def test_non_finite_points_are_dropped_before_fitting():
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=3)
    z = cell.impedance(F)
    z[3] = np.nan
    fit, reason = fit_spectrum(F, z)
    assert reason == "" and fit.r_sei_ohm == pytest.approx(cell.r_sei_ohm, rel=0.1)


def test_data_the_circuit_cannot_describe_gives_none_and_a_reason():
    rng = np.random.default_rng(1)
    garbage = rng.uniform(1, 100, len(F)) + 1j * rng.uniform(-100, 100, len(F))
    fit, reason = fit_spectrum(F, garbage)
    assert fit is None
    assert reason.startswith(("the fit misses the data", "the fit did not converge"))


def test_mismatched_lengths_are_a_reason_not_a_crash():
    assert fit_spectrum(F, np.ones(3)) == (None, "38 frequencies but 3 impedances")


def test_a_failed_fit_does_not_become_the_next_guess():
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=3)
    good = (F, cell.impedance(F))
    fits = fit_series([good, (F[:4], np.ones(4) + 0j), good])
    assert [fit is not None for fit, _ in fits] == [True, False, True]
