"""Chunks of columns (``bdf.rows``) as Arrow record batches: the one conversion the CSV and
Parquet writers share. Missing numbers (NaN) become nulls: empty cells in CSV, nulls in
Parquet."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rig.export.bdf import COLUMNS

_TYPES = {"f8": pa.float64(), "i8": pa.int64(), "str": pa.string()}


def schema(columns: list[str], metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    """The Arrow schema of these BDF columns (float64, int64, string)."""
    return pa.schema([pa.field(c, _TYPES[COLUMNS[c][0]]) for c in columns], metadata=metadata)


def batch(block: dict[str, np.ndarray], sch: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for f in sch:
        values = block[f.name]
        if f.type == pa.string():
            arrays.append(pa.array(values, type=pa.string()))
        else:
            arrays.append(pa.array(values, type=f.type, from_pandas=True))  # NaN -> null
    return pa.RecordBatch.from_arrays(arrays, schema=sch)


def write_batches(writer: Any, blocks: Iterable[dict[str, np.ndarray]], sch: pa.Schema) -> int:
    """Every chunk through ``writer.write_batch`` (a CSV or Parquet writer); the rows written."""
    n = 0
    for block in blocks:
        rb = batch(block, sch)
        writer.write_batch(rb)
        n += rb.num_rows
    return n


def partial(path: Path) -> Path:
    """Where a file is written before it is renamed into place (a failed export never leaves
    a file that looks complete)."""
    return path.with_name(f".{path.name}.part")


def commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
