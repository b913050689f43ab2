"""`rig export RUN --format bdf|csv|parquet --out DIR [--channel N]`.

One data file per cell (channel) and a ``.metadata.json`` beside it, named
``Instrument__Cell__YYYYMMDD_XXX`` (rig.export.bdf.base_name):

- ``bdf``: ``NAME.bdf.csv``, the Battery Data Format table (units in the column names);
- ``parquet``: ``NAME.bdf.parquet``, the same table typed, the metadata in the file too;
- ``csv``: for Origin and Excel: ``NAME.csv`` (the same table, names row then units row),
  ``NAME.cycles.csv`` (one row per cycle) and ``NAME.sensors.csv`` (every sensor reading).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FORMATS = ("bdf", "csv", "parquet")
CHUNK_ROWS = 50_000
"""Samples per chunk (and Parquet row group): peak memory is set by this, not by the run's
length (bench_export.py: ~210 MB for 10^7 samples; 200 000 costs 120 MB more, no faster)."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="write a run's data as Battery Data Format CSV/Parquet, or CSV for "
        "Origin/Excel: one file per cell plus a .metadata.json")
    p.add_argument("run", help="run id, a unique prefix of one, or 'latest'")
    p.add_argument("--format", choices=FORMATS, default="bdf",
                   help="bdf: NAME.bdf.csv; parquet: NAME.bdf.parquet; csv: NAME.csv with a "
                        "units row, NAME.cycles.csv, NAME.sensors.csv (default: bdf)")
    p.add_argument("--out", required=True, help="directory to write to (created if missing)")
    p.add_argument("--channel", type=int, default=None, help="only this channel")
    p.add_argument("--db", help="store file (default: the user data dir, or $NARIG_DB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rig.cli import EXIT_OK, UsageError, _db_path
    from rig.store import StoreError, open_reader, resolve_run

    db = _db_path(args.db)
    if not db.exists():
        raise UsageError(f"{db} does not exist: no runs recorded there")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    with open_reader(db) as conn:
        try:
            r = resolve_run(conn, args.run)
            written = export_run(conn, r, out, args.format, args.channel)
        except (StoreError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write: {exc}") from None
    for path, n in written:
        print(f"{path}  ({n} rows)" if n is not None else str(path))
    return EXIT_OK


def export_run(conn: Any, run: dict[str, Any], out: Path, fmt: str,
               channel: int | None = None,
               chunk_rows: int | None = None) -> list[tuple[Path, int | None]]:
    """Write the export of a run (a row of ``runs``); the files written and their row counts.
    Raises ValueError for an unknown format or channel."""
    from rig.export import bdf
    from rig.store import get_channels

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    cells = get_channels(conn, run["key"])
    if channel is not None:
        known = [c["channel"] for c in cells]
        if channel not in known:
            raise ValueError(f"run {run['id']} has no channel {channel} "
                             f"(channels: {', '.join(map(str, known)) or 'none'})")
        cells = [c for c in cells if c["channel"] == channel]
    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, int | None]] = []
    for cell in cells:
        src = bdf.Source.load(conn, run, cell, chunk_rows or CHUNK_ROWS)
        written += _export_cell(src, out, fmt)
    return written


def _export_cell(src: Any, out: Path, fmt: str) -> list[tuple[Path, int | None]]:
    from rig.export import bdf
    from rig.export.csv import write_bdf_csv, write_origin_csv

    name = bdf.base_name(src.run, src.cell)
    columns = src.columns()
    data = out / {"bdf": f"{name}.bdf.csv", "parquet": f"{name}.bdf.parquet",
                  "csv": f"{name}.csv"}[fmt]
    meta = bdf.json_safe(bdf.metadata(src, data.name, columns))
    written: list[tuple[Path, int | None]] = []
    if fmt == "bdf":
        written.append((data, write_bdf_csv(data, columns, bdf.rows(src))))
    elif fmt == "parquet":
        from rig.export.parquet import write_bdf_parquet

        written.append((data, write_bdf_parquet(data, columns, bdf.rows(src), meta)))
    else:
        written.append((data, write_origin_csv(data, columns, bdf.rows(src))))
        written += _origin_tables(src, out, name)
    side = out / f"{name}.metadata.json"
    side.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    written.append((side, None))
    return written


CYCLE_HEADER = [
    ("cycle", "1"), ("plated_C", "C"), ("stripped_C", "C"), ("ce", "1"),
    ("eta_plate_V", "V"), ("eta_strip_V", "V"), ("eta_plate_end_V", "V"),
    ("eta_strip_end_V", "V"), ("e_plate_end_V", "V"), ("e_strip_end_V", "V"),
    ("current_density_A_m2", "A/m^2"), ("t_start", "s"), ("t_end", "s"), ("duration_s", "s"),
]
SENSOR_HEADER = [("t", "s"), ("sensor", ""), ("quantity", ""), ("value", "SI: see quantity")]


def _origin_tables(src: Any, out: Path, name: str) -> list[tuple[Path, int | None]]:
    """The per-cycle table (SI, as rig.data's ``cycles``) and every sensor reading."""
    from rig.export.csv import write_table
    from rig.show import NOT_MEANINGFUL_CE, cycle_rows
    from rig.store import get_sensors

    rows = cycle_rows(src.steps, src.cell["area_cm2"])
    if src.cell["cell_type"] in NOT_MEANINGFUL_CE:
        for r in rows:
            r["ce"] = None  # a symmetric cell's CE is not a measurement
    cycles = out / f"{name}.cycles.csv"
    sensors = out / f"{name}.sensors.csv"
    readings = ({"t": t, "sensor": s, "quantity": q, "value": v}
                for t, s, q, v in get_sensors(src.conn, src.run["key"]))
    return [(cycles, write_table(cycles, CYCLE_HEADER, rows)),
            (sensors, write_table(sensors, SENSOR_HEADER, readings))]
