"""CSV writers: Battery Data Format (``.bdf.csv``, units in the column names) and the
Origin/Excel layout (``.csv``: a names row, then a units row, then the data), streamed with
pyarrow's CSV writer (shortest round-trip float text, so a read-back equals the store)."""

from __future__ import annotations

import csv as _csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rig.export import tables


def _options(header: bool) -> pacsv.WriteOptions:
    return pacsv.WriteOptions(include_header=header, quoting_style="needed")


def write_bdf_csv(path: Path, columns: list[str], blocks: Iterable[dict[str, np.ndarray]]) -> int:
    """The BDF table: one header row of ``Name / unit``; the number of data rows."""
    sch = tables.schema(columns)
    tmp = tables.partial(path)
    with pa.OSFile(str(tmp), "wb") as sink, pacsv.CSVWriter(sink, sch,
                                                            write_options=_options(True)) as w:
        n = tables.write_batches(w, blocks, sch)
    tables.commit(tmp, path)
    return n


def names_and_units(columns: list[str]) -> tuple[list[str], list[str]]:
    """``"Voltage / V"`` -> ("Voltage", "V"); a column without a unit gets ""."""
    split = [c.split(" / ", 1) if " / " in c else [c, ""] for c in columns]
    return [s[0] for s in split], [s[1] for s in split]


def write_origin_csv(path: Path, columns: list[str],
                     blocks: Iterable[dict[str, np.ndarray]]) -> int:
    """The same table with the long names in row 1 and the units in row 2 (Origin reads them
    as Long Name and Units; in pandas: ``read_csv(path, skiprows=[1])``)."""
    sch = tables.schema(columns)
    names, units = names_and_units(columns)
    tmp = tables.partial(path)
    with open(tmp, "wb") as f:
        f.write(_rows_text([names, units]).encode())
        with pacsv.CSVWriter(f, sch, write_options=_options(False)) as w:
            n = tables.write_batches(w, blocks, sch)
    tables.commit(tmp, path)
    return n


def write_table(path: Path, header: list[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> int:
    """A small table (cycles, steps, sensors) with a names row and a units row; ``header`` is
    ``(key, unit)`` pairs, in order; None is an empty cell."""
    tmp, n = tables.partial(path), 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = _csv.writer(f)
        w.writerow([k for k, _ in header])
        w.writerow([u for _, u in header])
        for r in rows:
            w.writerow(["" if r.get(k) is None else _text(r.get(k)) for k, _ in header])
            n += 1
    tables.commit(tmp, path)
    return n


def _text(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else repr(v)
    return str(v)


def _rows_text(rows: list[list[str]]) -> str:
    import io

    buf = io.StringIO()
    _csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
