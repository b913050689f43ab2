"""`rig report RUN --out DIR`: the command line of ``rig.report.build``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="a run's figures (PNG) and summary.md, for a slide",
        description="Write every figure the run has data for (one PNG each) and summary.md "
        "(the run, each channel's cell, outcome and end reason, the per-cycle table, the "
        "figures linked) into DIR. Figures the run has no data for are listed in the summary "
        "with the reason.")
    p.add_argument("run", help="run id, a unique prefix of one, or 'latest'")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory to write into (created if missing)")
    p.add_argument("--db", help="store file (default: the user data dir, or $NARIG_DB)")
    p.add_argument("--cycles", help="cycles to overlay, e.g. 1,10,100 (default: the first, "
                   "three in between, the last)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNGs (default 150)")
    p.set_defaults(func=run)


def parse_cycles(text: str | None) -> list[int] | None:
    """``"1,10,100"`` -> ``[1, 10, 100]``; ValueError with the bad item named."""
    if text is None:
        return None
    cycles = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--cycles: {item!r} is not a cycle number (give e.g. 1,10,100)")
        cycles.append(int(item))
    return cycles


def run(args: argparse.Namespace) -> int:
    from rig.store import StoreError, default_db_path

    db = Path(args.db) if args.db else default_db_path()
    try:
        cycles = parse_cycles(args.cycles)
    except ValueError as exc:
        return _bad(str(exc))
    if not 50 <= args.dpi <= 1200:
        return _bad(f"--dpi: {args.dpi} is outside 50..1200")
    if not db.exists():
        return _bad(f"{db} does not exist: no runs recorded there")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _bad(f"--out: {out} exists and is not a directory")
    from rig.report.build import build_report

    try:
        report = build_report(db, args.run, out, cycles=cycles, dpi=args.dpi)
    except StoreError as exc:
        return _bad(str(exc))
    print(f"report of run {report.run_id} in {out}: {len(report.figures)} figures, "
          f"summary {report.summary.name}")
    for f in report.figures:
        print(f"  {f.path.name}")
    for s in report.skipped:
        print(f"  skipped {s.title}: {s.reason}")
    return EXIT_OK


def _bad(message: str) -> int:
    print(f"rig: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
