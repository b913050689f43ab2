"""Templates: one module per ``kind``, each turning its validated file model into a Plan.

``EXPANDERS`` maps a kind to ``expand(model) -> Plan``; a new kind adds its model to
``protocols.kinds.KINDS`` and its expander here.

Example:
    >>> sorted(EXPANDERS)  # doctest: +NORMALIZE_WHITESPACE
    ['coulombic_efficiency', 'critical_current_density', 'gas_evolution', 'ocv_impedance',
     'plating_stripping', 'sequence']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols.plan import Plan
from protocols.templates import (
    coulombic_efficiency,
    critical_current_density,
    gas_evolution,
    ocv_impedance,
    plating_stripping,
    sequence,
)

EXPANDERS: dict[str, Callable[[Any], Plan]] = {
    "plating_stripping": plating_stripping.expand,
    "coulombic_efficiency": coulombic_efficiency.expand,
    "critical_current_density": critical_current_density.expand,
    "ocv_impedance": ocv_impedance.expand,
    "gas_evolution": gas_evolution.expand,
    "sequence": sequence.expand,
}
