"""The Battery Data Format table as Parquet (``.bdf.parquet``): typed columns (float64, int64,
string), one row group per chunk (pyarrow ParquetWriter: bounded memory), and the run's
metadata in the file's key-value metadata under ``narig`` (the sidecar without its series)
and ``bdf:*`` keys."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rig.export import tables

METADATA_KEY = b"narig"


def key_value_metadata(meta: dict[str, Any]) -> dict[bytes, bytes]:
    """The file's key-value metadata: everything of the sidecar except the long series and the
    steps (those stay in the ``.metadata.json``), and a few keys of their own."""
    small = {k: v for k, v in meta.items() if k not in ("custom_measurements", "steps")}
    return {
        METADATA_KEY: json.dumps(small).encode(),
        b"bdf:cell": json.dumps(meta["cell"]).encode(),
        b"bdf:software": json.dumps(meta["software"]).encode(),
        b"bdf:sign_convention": meta["sign_convention"].encode(),
        b"bdf:protocol": (meta["protocol"].get("text") or "").encode(),
    }


def write_bdf_parquet(path: Path, columns: list[str], blocks: Iterable[dict[str, np.ndarray]],
                      meta: dict[str, Any]) -> int:
    sch = tables.schema(columns, key_value_metadata(meta))
    tmp = tables.partial(path)
    with pq.ParquetWriter(str(tmp), sch, compression="zstd") as w:
        n = tables.write_batches(w, blocks, sch)
    tables.commit(tmp, path)
    return n
