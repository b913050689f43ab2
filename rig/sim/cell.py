"""A sodium-metal cell model for the simulated station: Na‖Na, Na‖Cu and Na‖Al.

Sign convention (project-wide; domain.md "Words"): **positive current is anodic at the working
electrode (WE)**: it strips Na from the WE; plating Na onto the WE is a
negative current. E is the WE potential versus the counter electrode. So

- symmetric Na‖Na: E has the sign of I and the overpotential is about |E|;
- Na‖Cu, Na‖Al: plating on the current collector (I < 0) gives E slightly negative; stripping
  (I > 0) gives E slightly positive until the Na on the collector runs out, then E spikes to the
  bare collector's branch (about +2.6 V and more on Cu): that spike ends a strip-to-cutoff. At open
  circuit E is about 0 V while Na is on the collector and ``Substrate.ocv_bare_V`` (2.2-2.6 V)
  once it is gone.

The model (every constant is a field of an :class:`Electrolyte` preset; areal values per cm² of
the electrode, charges in mAh/cm² where domain.md speaks in them)::

    E = I·(Rs + R_SEI) + Σ_electrodes (2RT/F)·asinh(i / 2·i0)      Butler-Volmer, α = 0.5
        + η_diff + η_nucleation + spikes + noise

- ``Rs`` (1-5 Ω) and ``R_SEI`` scale as 1/area. ``R_SEI`` (per cm², lumped over both
  interfaces) = ``r_sei0`` + a linear growth with cumulative areal charge q + a divergent term
  ``A·(exp(q/q_div) − 1)`` (electrolyte drying out, SEI build-up: domain.md problem 1) + a feed from
  dead Na + ``k·√(t_rest)`` at open circuit. Glyme: tens of Ω, flat; carbonate: hundreds of Ω
  growing past a thousand (domain.md table).
- ``η_diff`` relaxes toward ``I·R_diff`` with time constant ``tau_diff_s`` (concentration
  polarisation; it also relaxes at rest, so the OCV settles). ``η_nucleation`` is a peak at the
  start of each half-cycle, decaying over ``nucleation_mAh_cm2``.
- Coulombic efficiency: each plated coulomb loses ``dead_na_fraction`` (+ a formation term that
  decays with q) to dead Na and SEI. On Na‖Cu/Al this sets CE (glyme ≈ 99.9 %, Seh et al. 2015;
  5 M NaFSI/DME ≈ 99.3 %; carbonate 80-95 % [est]); on Na‖Na it only feeds R_SEI.
- Shorts: a seeded hazard per mAh/cm² plated, ``min((i/short_ccd)^n, max) · depth^m`` with i the
  current density and depth the areal charge since the last reversal (rare for glyme at
  ≤ 1 mA/cm², a few mA/cm² kill it: domain.md "failure from a few mA/cm² in ethers"). A soft short is a shunt that dips, then settles on a plateau (rectangular
  traces) and may recover; a hard short makes E ≈ I·``hard_short_ohm``. ``short_at_charge_C``
  builds a cell that shorts deterministically.
- Gas: ``gas_mol_per_C`` per coulomb passed, times a formation boost in the first cycles (cycle 1
  forms more). Carbonate about 3 µmol per 1 mAh/cm² cycle of a 1.13 cm² cell [est], glyme ~6x less.
- Noise: white ``noise_V`` plus a correlated relative part ``noise_rel`` of the overpotential
  (glyme quiet, ~0.2 mV; carbonate several %), and Poisson spikes for carbonate.
- Temperature: Arrhenius factors on i0, Rs and R_SEI; ``temperature_K`` is settable.
- EIS: ``R0-p(R1,CPE1)-p(R2,CPE2)-W1`` (impedance.py notation) with the present Rs, R_SEI,
  small-signal Rct = RT/(F·i0·A) per electrode, CPE (Q, n) and Warburg σ = R_diff/√(2·tau_diff);
  ``eis_noise_rel`` adds relative measurement noise, drawn from a generator of its own (seeded
  from the cell's seed), so noisy spectra leave the potential trace unchanged.

Same seed, same calls => identical traces (one ``random.Random(seed)``). ``apply_current`` is the
hot path (~10⁶ calls per run): pure ``math``/``random``, no numpy.

Example (glyme Na‖Na at 1 mA/cm² on 1.13 cm²: about 23 mV, the nucleation peak included)::

    >>> cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=1)
    >>> round(cell.apply_current(1.13e-3, 60.0), 3)
    0.024
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from scipy.optimize import brentq

FARADAY_C_MOL = 96485.33212
R_J_MOL_K = 8.314462618
T_REF_K = 298.15
C_PER_MAH = 3.6
CELL_TYPES = ("symmetric", "na_cu", "na_al")
EMPTY_C = 1e-12  # less Na than this on the working electrode counts as none
NUCLEATION_I_A_CM2 = 1e-4  # the nucleation peak reaches half its height at 0.1 mA/cm²

# Standard normal deviates, drawn by index from each cell's seeded generator: random.gauss costs
# ~0.7 µs a call, a table look-up ~0.1 µs (2^16 values are plenty for noise on a trace).
_NORMALS: tuple[float, ...] = tuple(
    np.random.default_rng(20240607).standard_normal(1 << 16).tolist())

_ETHERS = (
    "glyme", "monoglyme", "diglyme", "triglyme", "tetraglyme", "dme", "degdme", "tegdme",
    "g1", "g2", "g3", "g4", "ether", "ethers", "dimethoxyethane", "dol", "dioxolane", "thf",
)
_CARBONATES = ("ec", "pc", "dec", "dmc", "emc", "fec", "carbonate", "carbonates")


@dataclass(frozen=True)
class Electrolyte:
    """One electrolyte's parameters: a preset is data, add your own to ``PRESETS``.

    Areal quantities are per cm² of electrode; ``*_mAh_cm2`` are areal charges.
    """

    name: str
    # Matching free text (electrolyte_for): solvent words, and salt words that refine them.
    solvent_keywords: tuple[str, ...] = ()
    salt_keywords: tuple[str, ...] = ()
    # Ohmic and interfacial resistance.
    rs_ohm_cm2: float = 2.5  # electrolyte + separator
    r_sei0_ohm_cm2: float = 8.0  # SEI of a fresh cell, both interfaces lumped
    sei_growth_ohm_cm2_per_mAh_cm2: float = 0.005  # linear in cumulative areal |charge|
    sei_divergence_ohm_cm2: float = 1.0  # A in A·(exp(q/q_div) - 1)
    sei_divergence_mAh_cm2: float = 1500.0  # q_div
    sei_dead_na_ohm_cm2_per_mAh_cm2: float = 0.5  # dead Na feeds the SEI
    sei_rest_ohm_cm2_per_sqrt_h: float = 0.5  # chemical growth at open circuit
    # Kinetics and transport.
    i0_A_cm2: float = 5e-3  # exchange current density, per electrode
    r_diff_ohm_cm2: float = 2.0  # concentration polarisation at steady state
    tau_diff_s: float = 60.0
    nucleation_V: float = 0.004  # extra overpotential at the start of a half-cycle
    nucleation_mAh_cm2: float = 0.03
    # Temperature dependence (Arrhenius about T_REF_K).
    ea_ct_J_mol: float = 35e3  # of i0
    ea_ion_J_mol: float = 12e3  # of Rs
    ea_sei_J_mol: float = 40e3  # of R_SEI
    # Losses: Coulombic efficiency = 1 - dead_na_fraction after formation.
    dead_na_fraction: float = 0.001
    formation_loss_fraction: float = 0.02  # extra loss of a fresh surface ...
    formation_mAh_cm2: float = 1.0  # ... decaying with cumulative areal charge
    # Gas: mol per coulomb passed, boosted by (1 + factor·exp(-q/formation_mAh_cm2)).
    gas_mol_per_C: float = 6e-8
    gas_formation_factor: float = 2.0
    # Noise: white + correlated relative part of the overpotential + Poisson spikes.
    noise_V: float = 2e-4
    noise_rel: float = 0.005
    noise_tau_s: float = 30.0
    spike_rate_per_h: float = 0.0
    spike_rel: float = 0.3  # spike height / overpotential (times U(0.5, 1.5))
    spike_tau_s: float = 30.0
    # Shorts: hazard per mAh/cm² plated = min((i/short_ccd)^n, max) · (depth/1 mAh/cm²)^m.
    short_ccd_mA_cm2: float = 5.0
    short_current_exponent: float = 7.0
    short_depth_exponent: float = 2.0  # a dendrite needs depth to cross the separator
    short_hazard_max_per_mAh_cm2: float = 20.0  # saturation at very high current density
    soft_short_fraction: float = 0.7  # share of stochastic shorts that are soft
    soft_short_ohm: float = 8.0  # plateau resistance of a soft short
    soft_short_dip_fraction: float = 0.2  # the dip starts at this fraction of the plateau
    soft_short_settle_s: float = 300.0
    soft_short_recover_probability: float = 0.3
    soft_short_recover_s: float = 7200.0  # mean lifetime of a recovering soft short
    hard_short_ohm: float = 0.3
    short_at_charge_C: float | None = None  # deterministic short once this |charge| has passed
    short_kind: str = "hard"  # kind of the deterministic short: "soft" or "hard"
    # EIS: CPE Q in F·s^(n-1) per cm², exponents n.
    cpe_sei_Q_cm2: float = 3e-6
    cpe_sei_n: float = 0.88
    cpe_dl_Q_cm2: float = 5e-5
    cpe_dl_n: float = 0.8
    # EIS measurement noise: Z·(1 + eis_noise_rel·(g1 + j·g2)), g Gaussian (0.005 = 0.5 %).
    eis_noise_rel: float = 0.0

    def __post_init__(self) -> None:
        if self.short_kind not in ("soft", "hard"):
            raise ValueError(f"{self.name}: short_kind must be 'soft' or 'hard', "
                             f"not {self.short_kind!r}")
        positive = ("i0_A_cm2", "tau_diff_s", "nucleation_mAh_cm2", "formation_mAh_cm2",
                    "sei_divergence_mAh_cm2", "spike_tau_s", "short_ccd_mA_cm2",
                    "soft_short_settle_s", "soft_short_recover_s")
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{self.name}: {name} must be > 0, not {getattr(self, name)}")
        if not 0.0 <= self.dead_na_fraction < 1.0:
            raise ValueError(f"{self.name}: dead_na_fraction must be in [0, 1)")


@dataclass(frozen=True)
class Substrate:
    """The current collector of a Na‖Cu or Na‖Al cell, once no Na is left on it."""

    name: str
    ocv_bare_V: float  # open-circuit potential of the bare collector vs Na
    ox_tafel_V: float  # slope of the anodic branch (collector/electrolyte oxidation)
    ox_i0_A_cm2: float
    depletion_mAh_cm2: float  # the last Na strips harder (E rises before the spike)
    bare_rct_ohm_cm2: float  # a blocking interface, for EIS


SUBSTRATES: dict[str, Substrate] = {
    "na_cu": Substrate("Cu", 2.6, 0.05, 1e-5, 0.01, 1e5),
    "na_al": Substrate("Al", 2.3, 0.08, 1e-6, 0.01, 1e5),
}

PRESETS: dict[str, Electrolyte] = {
    "glyme": Electrolyte(
        name="1 M NaPF6 in diglyme", solvent_keywords=_ETHERS,
    ),
    "carbonate": Electrolyte(
        name="1 M NaClO4 in EC:DEC", solvent_keywords=_CARBONATES,
        rs_ohm_cm2=3.5, r_sei0_ohm_cm2=100.0, sei_growth_ohm_cm2_per_mAh_cm2=0.3,
        sei_divergence_ohm_cm2=45.0, sei_divergence_mAh_cm2=200.0,
        sei_dead_na_ohm_cm2_per_mAh_cm2=1.0, sei_rest_ohm_cm2_per_sqrt_h=15.0,
        i0_A_cm2=5e-4, r_diff_ohm_cm2=15.0, tau_diff_s=120.0,
        nucleation_V=0.04, nucleation_mAh_cm2=0.05,
        dead_na_fraction=0.10, formation_loss_fraction=0.05,
        gas_mol_per_C=3.5e-7,
        noise_V=5e-4, noise_rel=0.03, noise_tau_s=20.0, spike_rate_per_h=1.0, spike_rel=0.15,
        short_ccd_mA_cm2=2.5, short_current_exponent=9.0, soft_short_fraction=0.6,
        cpe_sei_Q_cm2=1.5e-6, cpe_sei_n=0.85, cpe_dl_Q_cm2=3e-5, cpe_dl_n=0.75,
    ),
    "fsi_dme": Electrolyte(
        name="5 M NaFSI in DME", solvent_keywords=_ETHERS, salt_keywords=("nafsi", "fsi"),
        rs_ohm_cm2=4.0, r_sei0_ohm_cm2=9.0, i0_A_cm2=4e-3,
        dead_na_fraction=0.007, formation_loss_fraction=0.03, gas_mol_per_C=4e-8,
    ),
}


def electrolyte_for(description: str) -> Electrolyte:
    """The preset for a protocol's free-text electrolyte.

    A preset key or name matches exactly; otherwise the first solvent word picks the family
    (glyme/DME/DEGDME/TEGDME/ether -> glyme; EC/PC/DEC/DMC/EMC/carbonate -> carbonate) and a
    salt word refines it ("NaFSI in DME" -> fsi_dme):

    >>> electrolyte_for("1M NaClO4 EC:DEC").name
    '1 M NaClO4 in EC:DEC'
    """
    text = description.strip().lower()
    for key, preset in PRESETS.items():
        if text in (key.lower(), preset.name.lower()):
            return preset
    tokens = re.findall(r"[a-z0-9]+", text)
    solvent = next((t for t in tokens if any(t in p.solvent_keywords for p in PRESETS.values())),
                   None)
    if solvent is None:
        raise ValueError(f"electrolyte {description!r} matches no preset; known presets: "
                         f"{', '.join(PRESETS)} (or name a solvent: glyme, DME, EC, DEC, ...)")
    candidates = [p for p in PRESETS.values() if solvent in p.solvent_keywords]
    salted = [p for p in candidates if set(p.salt_keywords) & set(tokens)]
    generic = [p for p in candidates if not p.salt_keywords]
    return (salted or generic or candidates)[0]


# Mutable state saved and restored around a trial step (apply_potential's solver).
_STATE = ("_t", "_t_rest", "_rest_term", "_q", "_charge_C", "_dead_C", "_inv", "_gas",
          "_depth", "_sign", "_eta_d", "_spike", "_r_sei")


class NaCell:
    """A simulated Na-metal cell driven by current and time (see the module docstring).

    ``cell_type``: "symmetric" (Na‖Na), "na_cu" or "na_al" (Na on the working electrode starts at
    ``na_inventory_C`` or 0). ``overrides``: any :class:`Electrolyte` field by name, e.g.
    ``short_at_charge_C=10.0, short_kind="soft"`` or ``noise_V=0.0``.
    """

    __slots__ = (
        *_STATE, "_el", "_sub", "_area", "_per_C", "_rng", "_cell_type", "_T", "_b", "_i0",
        "_rs", "_sei_scale", "_r_diff", "_short", "_short_t0", "_recover_at", "_forced",
        "_ou", "_last_dt", "_k_diff", "_k_spike", "_k_noise", "_g_noise",
        "_bv_i", "_bv_eta", "_hz_i", "_hz_k", "_eis_rng",
    )

    def __init__(self, cell_type: str, area_cm2: float, electrolyte: Electrolyte, seed: int = 0,
                 temperature_K: float = 298.15, na_inventory_C: float | None = None,
                 **overrides: object) -> None:
        self._el = _with_overrides(electrolyte, overrides)
        self._sub = _substrate(cell_type, na_inventory_C)
        if not area_cm2 > 0.0:
            raise ValueError(f"area_cm2 must be > 0, not {area_cm2}")
        self._cell_type, self._area = cell_type, float(area_cm2)
        self._per_C = 1.0 / (C_PER_MAH * self._area)  # C -> mAh/cm²
        self._rng = random.Random(seed)
        self._eis_rng = np.random.default_rng(seed)
        self._inv = None if self._sub is None else float(na_inventory_C or 0.0)
        self._t = self._t_rest = self._rest_term = self._q = 0.0
        self._charge_C = self._dead_C = self._gas = self._depth = 0.0
        self._eta_d = self._spike = 0.0
        self._sign = 0
        self._short: str | None = None
        self._short_t0, self._recover_at, self._forced = 0.0, math.inf, False
        self._ou = _NORMALS[self._rng.getrandbits(16)]
        self._last_dt = -1.0
        self._k_diff = self._k_spike = self._k_noise = self._g_noise = 0.0
        self._bv_i = self._bv_eta = self._hz_i = self._hz_k = -1.0  # per-current caches
        self.temperature_K = temperature_K

    # ----- read-only state -------------------------------------------------------------------
    @property
    def cell_type(self) -> str:
        return self._cell_type

    @property
    def area_cm2(self) -> float:
        return self._area

    @property
    def electrolyte(self) -> Electrolyte:
        """The parameters in use (preset with overrides applied)."""
        return self._el

    @property
    def time_s(self) -> float:
        """Simulated time since assembly."""
        return self._t

    @property
    def r_sei_ohm(self) -> float:
        return self._r_sei

    @property
    def rs_ohm(self) -> float:
        return self._rs

    @property
    def rct_ohm(self) -> float:
        """Small-signal charge-transfer resistance, RT/(F·i0·A) per electrode, both summed."""
        per_electrode = 0.5 * self._b / (self._i0 * self._area)
        if self._sub is not None and self._bare():
            return per_electrode + self._sub.bare_rct_ohm_cm2 / self._area
        return 2.0 * per_electrode

    @property
    def gas_mol(self) -> float:
        """Total gas produced so far (mol)."""
        return self._gas

    @property
    def na_inventory_C(self) -> float | None:
        """Na on the working electrode (C) for na_cu/na_al; None for a symmetric cell."""
        return self._inv

    @property
    def short(self) -> str | None:
        """None, "soft" or "hard"."""
        return self._short

    @property
    def charge_passed_C(self) -> float:
        """Cumulative |charge| through the terminals."""
        return self._charge_C

    @property
    def dead_na_C(self) -> float:
        """Na lost to dead Na and SEI so far (C)."""
        return self._dead_C

    @property
    def temperature_K(self) -> float:
        return self._T

    @temperature_K.setter
    def temperature_K(self, value: float) -> None:
        if not value > 0.0:
            raise ValueError(f"temperature_K must be > 0, not {value}")
        el, self._T = self._el, float(value)
        self._b = 2.0 * R_J_MOL_K * self._T / FARADAY_C_MOL
        self._i0 = el.i0_A_cm2 * _arrhenius(-el.ea_ct_J_mol, self._T)
        ion = _arrhenius(el.ea_ion_J_mol, self._T)
        self._rs = el.rs_ohm_cm2 * ion / self._area
        self._r_diff = el.r_diff_ohm_cm2 * ion / self._area
        self._sei_scale = _arrhenius(el.ea_sei_J_mol, self._T) / self._area
        self._bv_i = -1.0  # the Butler-Volmer cache depends on T
        self._update_sei()

    # ----- driving the cell ------------------------------------------------------------------
    def apply_current(self, current_A: float, dt_s: float) -> float:
        """Pass ``current_A`` (anodic at the WE > 0) for ``dt_s``; return E (V) at the end."""
        if not (0.0 <= dt_s < math.inf and -math.inf < current_A < math.inf):
            _check_step(current_A, dt_s)
        i_cell = self._advance(current_A, dt_s)
        self._events(i_cell, dt_s)
        e, eta, frac = self._clean(current_A)
        return e + self._disturbance(current_A, eta, frac, dt_s)

    def open_circuit(self, dt_s: float) -> float:
        """Rest ``dt_s`` at open circuit; return the OCV (V)."""
        return self.apply_current(0.0, dt_s)

    def apply_potential(self, potential_V: float, dt_s: float) -> float:
        """Hold E at ``potential_V`` for ``dt_s``; return the current (A) at the end."""
        _check_step(potential_V, dt_s)
        current = self._solve_current(potential_V, dt_s)
        slope = self._slope(current, dt_s)
        i_cell = self._advance(current, dt_s)
        self._events(i_cell, dt_s)
        _, eta, frac = self._clean(current)
        noise_V = self._disturbance(current, eta, frac, dt_s)
        return current - noise_V / slope if noise_V and slope > 0.0 else current

    def impedance(self, frequencies_Hz: Iterable[float] | np.ndarray) -> np.ndarray:
        """Complex Z (Ω) of R0-p(R1,CPE1)-p(R2,CPE2)-W1 at the present state."""
        f = np.asarray(frequencies_Hz, dtype=float)
        if np.any(~(f > 0.0)):
            raise ValueError("impedance: frequencies must be > 0 Hz")
        el, area = self._el, self._area
        jw = 2j * np.pi * f
        sigma = self._r_diff / math.sqrt(2.0 * el.tau_diff_s)
        z = (self._rs + _rq(self._r_sei, el.cpe_sei_Q_cm2 * area, el.cpe_sei_n, jw)
             + _rq(self.rct_ohm, el.cpe_dl_Q_cm2 * area, el.cpe_dl_n, jw)
             + sigma * (1.0 - 1.0j) / np.sqrt(2.0 * np.pi * f))
        if self._short:
            r_short = self._shunt_ohm()
            z = z * r_short / (z + r_short)
        if el.eis_noise_rel:
            g = self._eis_rng.standard_normal((2, z.size))
            z = z * (1.0 + el.eis_noise_rel * (g[0] + 1j * g[1]))
        return z

    # ----- state evolution (deterministic) ---------------------------------------------------
    def _advance(self, current_A: float, dt_s: float) -> float:
        """Move the state on by dt; return the current through the cell (not the shunt)."""
        if dt_s != self._last_dt:
            self._set_decays(dt_s)
        self._t += dt_s
        if current_A == 0.0:
            i_cell = 0.0
            self._rest(dt_s)
        else:
            i_cell = current_A * self._shunt_fraction(current_A) if self._short else current_A
            self._charge_C += abs(current_A) * dt_s
            self._pass(i_cell, dt_s)
        k = self._k_diff
        self._eta_d = self._eta_d * k + i_cell * self._r_diff * (1.0 - k)
        self._spike *= self._k_spike
        return i_cell

    def _pass(self, i_cell: float, dt_s: float) -> None:
        """Faradaic charge through the cell: depth, losses, inventory, gas, SEI."""
        el = self._el
        dq_C = abs(i_cell) * dt_s
        dq = dq_C * self._per_C
        sign = 1 if i_cell > 0.0 else -1
        if sign != self._sign:
            self._sign, self._depth = sign, 0.0
        self._depth += dq
        self._q += dq
        x = self._q / el.formation_mAh_cm2
        e_form = math.exp(-x) if x < 50.0 else 0.0
        loss = dq_C * (el.dead_na_fraction + el.formation_loss_fraction * e_form)
        inv = self._inv
        if inv is None:
            self._dead_C += loss
        elif i_cell < 0.0:
            self._dead_C += loss
            self._inv = inv + dq_C - loss
        else:
            left = inv - dq_C
            self._inv = left if left > EMPTY_C else 0.0
        self._gas += el.gas_mol_per_C * dq_C * (1.0 + el.gas_formation_factor * e_form)
        self._update_sei()

    def _rest(self, dt_s: float) -> None:
        self._t_rest += dt_s
        self._rest_term = self._el.sei_rest_ohm_cm2_per_sqrt_h * math.sqrt(self._t_rest / 3600.0)
        self._update_sei()

    def _update_sei(self) -> None:
        el = self._el
        q = self._q
        x = q / el.sei_divergence_mAh_cm2
        r = (el.r_sei0_ohm_cm2 + el.sei_growth_ohm_cm2_per_mAh_cm2 * q
             + el.sei_divergence_ohm_cm2 * (math.exp(min(50.0, x)) - 1.0)
             + el.sei_dead_na_ohm_cm2_per_mAh_cm2 * self._dead_C * self._per_C
             + self._rest_term)
        self._r_sei = r * self._sei_scale

    def _set_decays(self, dt_s: float) -> None:
        el = self._el
        self._last_dt = dt_s
        self._k_diff = math.exp(-dt_s / el.tau_diff_s)
        self._k_spike = math.exp(-dt_s / el.spike_tau_s)
        self._k_noise = math.exp(-dt_s / el.noise_tau_s) if el.noise_tau_s > 0.0 else 0.0
        self._g_noise = math.sqrt(1.0 - self._k_noise * self._k_noise)

    # ----- terminal potential ----------------------------------------------------------------
    def _clean(self, current_A: float) -> tuple[float, float, float]:
        """(E without noise, its overpotential part, share of current through the cell)."""
        if current_A == 0.0:
            return self._ocv()
        e, emf = self._unshorted(current_A)
        if not self._short:
            return e, e - emf, 1.0
        frac = self._fraction(e, current_A)
        return e * frac, e * frac, frac

    def _unshorted(self, current_A: float) -> tuple[float, float]:
        """(E of the cell alone at this current, its equilibrium part)."""
        el = self._el
        ai = abs(current_A) / self._area
        b, i0 = self._b, self._i0
        if ai != self._bv_i:  # one electrode's Butler-Volmer overpotential, cached per current
            self._bv_i, self._bv_eta = ai, b * math.asinh(ai / (2.0 * i0))
        eta_na = self._bv_eta
        x = self._depth / el.nucleation_mAh_cm2
        eta = 2.0 * eta_na
        if x < 50.0:  # the nucleation peak, continuous through I = 0
            eta += el.nucleation_V * math.exp(-x) * ai / (ai + NUCLEATION_I_A_CM2)
        ohmic = current_A * (self._rs + self._r_sei) + self._eta_d
        inv = self._inv
        if inv is None or current_A < 0.0:
            return (ohmic + eta if current_A > 0.0 else ohmic - eta), 0.0
        sub = self._sub
        assert sub is not None  # a cell with an inventory has a substrate
        if inv > 0.0:
            theta = inv * self._per_C / sub.depletion_mAh_cm2
            if theta < 1.0:
                eta += b * math.asinh(ai / (2.0 * i0 * theta)) - eta_na
            return ohmic + eta, 0.0
        ox = sub.ox_tafel_V * math.asinh(ai / (2.0 * sub.ox_i0_A_cm2))  # no Na left on the WE
        return sub.ocv_bare_V + ox + eta - eta_na + ohmic, sub.ocv_bare_V

    def _ocv(self) -> tuple[float, float, float]:
        if self._short:
            return 0.0, 0.0, 1.0  # the short discharges the cell: both sides at Na potential
        base = self._sub.ocv_bare_V if self._sub is not None and self._bare() else 0.0
        return base + self._eta_d, self._eta_d, 1.0

    def _bare(self) -> bool:
        """True when the working electrode of a Na‖Cu/Al cell has no Na left."""
        return self._inv is not None and self._inv <= 0.0

    def _shunt_ohm(self) -> float:
        el = self._el
        if self._short == "hard":
            return el.hard_short_ohm
        settle = math.exp(-(self._t - self._short_t0) / el.soft_short_settle_s)
        return el.soft_short_ohm * (1.0 - (1.0 - el.soft_short_dip_fraction) * settle)

    def _fraction(self, e_cell: float, current_A: float) -> float:
        """Share of the terminal current through the cell when a shunt is in parallel."""
        r_short = self._shunt_ohm()
        return r_short / (abs(e_cell / current_A) + r_short)

    def _shunt_fraction(self, current_A: float) -> float:
        return self._fraction(self._unshorted(current_A)[0], current_A)

    # ----- random events and noise (draw from the seeded generator) --------------------------
    def _events(self, i_cell: float, dt_s: float) -> None:
        el = self._el
        if self._short == "soft" and self._t >= self._recover_at:
            self._short, self._recover_at = None, math.inf
        if el.short_at_charge_C is not None and not self._forced \
                and self._charge_C >= el.short_at_charge_C:
            self._forced = True
            self._start_short(el.short_kind)
        elif i_cell != 0.0 and self._short != "hard":
            self._hazard(i_cell, dt_s)

    def _hazard(self, i_cell: float, dt_s: float) -> None:
        el = self._el
        ai = abs(i_cell)
        if ai != self._hz_i:  # the current-density factor, cached per current
            rate = (ai * 1e3 / self._area / el.short_ccd_mA_cm2) ** el.short_current_exponent
            self._hz_i, self._hz_k = ai, min(rate, el.short_hazard_max_per_mAh_cm2)
        x = self._hz_k * self._depth ** el.short_depth_exponent * ai * dt_s * self._per_C
        if x > 0.0:
            p = x if x < 1e-3 else 1.0 - math.exp(-x)
            if self._rng.random() < p:
                soft = self._rng.random() < el.soft_short_fraction
                self._start_short("soft" if soft else "hard")

    def _start_short(self, kind: str) -> None:
        el, rng = self._el, self._rng
        self._short, self._short_t0, self._recover_at = kind, self._t, math.inf
        if kind == "soft" and rng.random() < el.soft_short_recover_probability:
            self._recover_at = self._t + rng.expovariate(1.0 / el.soft_short_recover_s)

    def _disturbance(self, current_A: float, eta: float, frac: float, dt_s: float) -> float:
        """Spikes (under current) and noise to add to the clean potential."""
        el, rng = self._el, self._rng
        out = 0.0
        if current_A != 0.0 and el.spike_rate_per_h > 0.0:
            if rng.random() < el.spike_rate_per_h * dt_s / 3600.0:
                self._spike += el.spike_rel * abs(eta) * (0.5 + rng.random())
            if self._spike:
                out = self._spike * frac if current_A > 0.0 else -self._spike * frac
        if el.noise_rel:
            self._ou = self._ou * self._k_noise + self._g_noise * _NORMALS[rng.getrandbits(16)]
            out += el.noise_rel * abs(eta) * self._ou
        if el.noise_V:
            out += el.noise_V * _NORMALS[rng.getrandbits(16)]
        return out

    # ----- potentiostatic control ------------------------------------------------------------
    def _trial(self, current_A: float, dt_s: float) -> float:
        """Clean E after dt at this current, leaving the state as it was."""
        saved = tuple(getattr(self, name) for name in _STATE)
        self._advance(current_A, dt_s)
        e = self._clean(current_A)[0]
        for name, value in zip(_STATE, saved, strict=True):
            setattr(self, name, value)
        return e

    def _solve_current(self, potential_V: float, dt_s: float) -> float:
        def miss(current_A: float) -> float:
            return self._trial(current_A, dt_s) - potential_V

        current = _root_from_zero(miss, 1e-3 * self._area)
        if dt_s == 0.0:
            return current
        inv = self._inv
        if inv and current > 0.0 and abs(current * dt_s - inv) <= 1e-9 * inv + 2.0 * EMPTY_C:
            return inv / dt_s  # the root is the jump where the last Na goes: strip it all
        return 0.0 if abs(current) * dt_s < EMPTY_C else current  # the jump at 0 A (bare Cu)

    def _slope(self, current_A: float, dt_s: float) -> float:
        """dE/dI (Ω) at this current (numerically), to turn potential noise into current noise."""
        h = 1e-9 + 1e-4 * abs(current_A)
        return (self._trial(current_A + h, dt_s) - self._trial(current_A - h, dt_s)) / (2.0 * h)


def _root_from_zero(miss: Callable[[float], float], scale: float) -> float:
    """The current where ``miss`` changes sign, searching outward from 0 A."""
    m0 = miss(0.0)
    if m0 == 0.0:
        return 0.0
    step = scale if m0 < 0.0 else -scale
    for _ in range(60):
        if miss(step) * m0 <= 0.0:
            lo, hi = sorted((0.0, step))
            return float(brentq(miss, lo, hi, xtol=1e-18, rtol=1e-12, maxiter=200))
        step *= 4.0
    raise ValueError("apply_potential: no current reaches this potential")


def _rq(r: float, q: float, n: float, jw: np.ndarray) -> np.ndarray:
    """A resistor in parallel with a CPE (Q, n)."""
    return r / (1.0 + r * q * jw**n)


def _arrhenius(ea_J_mol: float, temperature_K: float) -> float:
    """exp(Ea/R·(1/T - 1/T_ref)): > 1 below T_ref for a positive Ea (resistances)."""
    return math.exp(ea_J_mol / R_J_MOL_K * (1.0 / temperature_K - 1.0 / T_REF_K))


def _check_step(value: float, dt_s: float) -> None:
    if not (dt_s >= 0.0 and math.isfinite(dt_s) and math.isfinite(value)):
        raise ValueError(f"need a finite setpoint and dt_s >= 0, got {value!r}, {dt_s!r}")


def _with_overrides(electrolyte: Electrolyte, overrides: dict[str, Any]) -> Electrolyte:
    # the field names are checked here; the values go to dataclasses.replace as given (Any)
    known = {f.name for f in fields(Electrolyte)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown Electrolyte field(s) {unknown}; known: {sorted(known)}")
    return replace(electrolyte, **overrides) if overrides else electrolyte


def _substrate(cell_type: str, na_inventory_C: float | None) -> Substrate | None:
    if cell_type == "full":
        raise ValueError("cell_type 'full' is not modelled yet; use symmetric, na_cu or na_al")
    if cell_type not in CELL_TYPES:
        raise ValueError(f"unknown cell_type {cell_type!r}; known: {', '.join(CELL_TYPES)}")
    if cell_type == "symmetric":
        if na_inventory_C is not None:
            raise ValueError("na_inventory_C is for na_cu/na_al; a symmetric cell has Na on both")
        return None
    if na_inventory_C is not None and not na_inventory_C >= 0.0:
        raise ValueError(f"na_inventory_C must be >= 0, not {na_inventory_C}")
    return SUBSTRATES[cell_type]
