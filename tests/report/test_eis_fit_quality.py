"""EIS fits say how sure they are: each parameter's standard error and a fit-quality figure,
and "fit failed" (None and a reason) rather than a number the data do not determine. Spectra
from the simulated cell with 0.5 % measurement noise (rig/sim/cell.py ``eis_noise_rel``)."""

from __future__ import annotations

import numpy as np
import pytest

from rig.analysis.eis_fit import MAX_RELATIVE_ERROR, fit_series, fit_spectrum
from rig.analysis.outcomes import sei_growth
from rig.sim.cell import PRESETS, NaCell

F = np.logspace(np.log10(2e5), -1, 38)  # 200 kHz -> 100 mHz, 6 points per decade


@pytest.mark.parametrize("preset", ["glyme", "carbonate"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spectra_with_half_a_percent_noise_still_give_r_sei_within_ten_percent(preset, seed):
    cell = NaCell("symmetric", 1.13, PRESETS[preset], seed=seed, eis_noise_rel=0.005)
    z = cell.impedance(F)
    clean = NaCell("symmetric", 1.13, PRESETS[preset], seed=seed).impedance(F)
    assert 0.002 < np.sqrt(np.mean(np.abs(z / clean - 1) ** 2)) < 0.01  # the noise is there
    fit, reason = fit_spectrum(F, z)
    assert reason == ""
    assert fit.r_sei_ohm == pytest.approx(cell.r_sei_ohm, rel=0.1)
    assert fit.rct_ohm == pytest.approx(cell.rct_ohm, rel=0.1)
    # the quality figures see the noise: misfit about the noise level, chi-square ~ noise^2
    assert 0.002 < fit.residual < 0.02
    assert 1e-6 < fit.chi_square < 4e-4
    assert fit.n_points == len(F)
    # every parameter has an uncertainty, and R_SEI's is small but not zero
    assert all(getattr(fit, f"{name}_err") is not None for name in (
        "rs_ohm", "r_sei_ohm", "cpe_sei_q", "cpe_sei_n", "rct_ohm", "cpe_dl_q", "cpe_dl_n",
        "warburg_sigma"))
    assert 0 < fit.r_sei_ohm_err < 0.1 * fit.r_sei_ohm
    # the truth lies within a few standard errors of the fit
    assert abs(fit.r_sei_ohm - cell.r_sei_ohm) < 4 * fit.r_sei_ohm_err + 0.01 * cell.r_sei_ohm


def test_noise_is_seeded_and_leaves_the_potential_trace_unchanged():
    a = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=7, eis_noise_rel=0.005)
    b = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=7, eis_noise_rel=0.005)
    quiet = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=7)
    assert np.array_equal(a.impedance(F), b.impedance(F))
    assert not np.array_equal(a.impedance(F), a.impedance(F))  # each sweep its own noise
    quiet.impedance(F)
    trace = [a.apply_current(1.13e-3, 10.0) for _ in range(50)]
    assert trace == [quiet.apply_current(1.13e-3, 10.0) for _ in range(50)]


def test_a_spectrum_with_one_arc_is_a_failed_fit_not_an_r_sei():
    # Rs + one R||C: the two-arc circuit fits it closely with any split of the 50 ohm, so an
    # R_SEI read off it would be a number the data do not determine
    jw = 2j * np.pi * F
    z = 5 + 50 / (1 + jw * 50 * 1e-5)
    fit, reason = fit_spectrum(F, z)
    assert fit is None
    assert "not determined" in reason and f"±{MAX_RELATIVE_ERROR:.0%}" in reason


def test_the_sei_growth_outcome_carries_each_sweeps_uncertainty_and_quality():
    cell = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=3, eis_noise_rel=0.005)
    rows, truth = [], []
    for sweep in range(4):
        if sweep:
            for _ in range(60):
                cell.open_circuit(60.0)
        truth.append(cell.r_sei_ohm)
        rows += [(sweep, sweep * 3600.0, f, z.real, z.imag) for f, z in zip(F, cell.impedance(F))]
    out = sei_growth([], "completed", {}, eis=rows)
    assert [s["sweep"] for s in out["sweeps"]] == [0, 1, 2, 3] and not out["failed_fits"]
    for s, r in zip(out["sweeps"], truth):
        assert s["r_sei_ohm"] == pytest.approx(r, rel=0.1)
        assert s["r_sei_ohm_err"] > 0 and s["rct_ohm_err"] > 0 and s["chi_square"] > 0
    assert out["r_sei_growth_ohm_per_h"] > 0


def test_a_series_keeps_going_after_a_one_arc_sweep():
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=3, eis_noise_rel=0.005)
    jw = 2j * np.pi * F
    one_arc = 5 + 50 / (1 + jw * 50 * 1e-5)
    fits = fit_series([(F, cell.impedance(F)), (F, one_arc), (F, cell.impedance(F))])
    assert [fit is not None for fit, _ in fits] == [True, False, True]
    assert fits[2][0].r_sei_ohm == pytest.approx(cell.r_sei_ohm, rel=0.1)
