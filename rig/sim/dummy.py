"""A dummy cell: a resistor wired in place of a cell, as a lab checks a channel with.

E = I x R exactly, no open-circuit potential, no charge stored, no gas: what hil/ checks a
channel against, and what `rig sim serve` simulates for a station channel with
``dummy_resistor``. It answers what the simulated instruments ask of a cell (rig.sim.cell.NaCell).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class DummyResistor:
    gas_mol = 0.0
    temperature_K = 298.15

    def __init__(self, resistance_ohm: float) -> None:
        if not resistance_ohm > 0:
            raise ValueError(f"resistance must be > 0 ohm, not {resistance_ohm!r}")
        self.resistance_ohm = resistance_ohm
        self.description = f"dummy {resistance_ohm:g} ohm resistor"

    def apply_current(self, current_A: float, dt_s: float) -> float:
        return current_A * self.resistance_ohm

    def open_circuit(self, dt_s: float) -> float:
        return 0.0

    def apply_potential(self, potential_V: float, dt_s: float) -> float:
        return potential_V / self.resistance_ohm

    def impedance(self, frequencies_Hz: Iterable[float] | np.ndarray) -> np.ndarray:
        f = np.asarray(list(frequencies_Hz), dtype=float)
        return np.full(f.shape, complex(self.resistance_ohm, 0.0))
