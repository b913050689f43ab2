"""Small protocol files the tests write: two symmetric cells on channels 0 and 1."""

from __future__ import annotations

GLYME, CARBONATE = "1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC"

_HEAD = """
kind = "plating_stripping"
name = "{name}"
current_density = "1 mA/cm^2"
areal_capacity = "{q}"
cycles = {cycles}
record_interval = "10 s"
"""

_CELL = """
[[cells]]
channel = {channel}
cell_id = "{cell_id}"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "{electrolyte}"
"""


def two_cells(name: str, *, q: str = "0.5 mAh/cm^2", cycles: int = 3,
              cells: tuple[tuple[str, str], ...] = (("G1", GLYME), ("C1", CARBONATE))) -> str:
    """A plating-stripping file: ``cells`` as (cell id, electrolyte) on channels 0, 1, ..."""
    return _HEAD.format(name=name, q=q, cycles=cycles) + "".join(
        _CELL.format(channel=k, cell_id=cid, electrolyte=el) for k, (cid, el) in enumerate(cells))
