"""Templates: one module per ``kind``, each turning its validated file model into a Plan.

``EXPANDERS`` maps a kind to ``expand(model) -> Plan``; a new kind adds its model to
``protocols.model.KINDS`` and its expander here.

Example:
    >>> sorted(EXPANDERS)
    ['plating_stripping']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols.plan import Plan
from protocols.templates import plating_stripping

EXPANDERS: dict[str, Callable[[Any], Plan]] = {
    "plating_stripping": plating_stripping.expand,
}
