"""A run's report: every figure its data allows, as PNG, and ``summary.md`` linking them.

    >>> report = build_report(db, "latest", Path("report"))
    >>> [f.path.name for f in report.figures][:2]
    ['potential_time_ch0.png', 'cycles_ch0.png']
    >>> [(s.title, s.reason) for s in report.skipped][-1]
    ('pressure and temperature vs time', 'no pressure readings (no gas holder on this station)')
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rig.report import eis as eis_mod
from rig.report import figures as figs
from rig.report.context import RunContext
from rig.report.summary import write_summary
from rig.store import open_reader, resolve_run

DPI = 150


@dataclass(frozen=True)
class FigureFile:
    section: str
    title: str
    path: Path
    seconds: float


@dataclass(frozen=True)
class Skipped:
    section: str
    title: str
    reason: str


@dataclass
class Report:
    run_id: str
    out: Path
    summary: Path
    figures: list[FigureFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _plan(ctx: RunContext, cycles: Sequence[int] | None,
          fitted: dict[int, list[eis_mod.Sweep]]
          ) -> list[tuple[str, str, str, Callable[[], Any]]]:
    """(section, title, file name, draw) of every figure the report tries, in reading order."""
    plan: list[tuple[str, str, str, Callable[[], Any]]] = []
    for ch in ctx.channels:
        plan.append(("Potential", f"channel {ch.number} ({ch.cell_id}): E vs time, whole run",
                     f"potential_time_ch{ch.number}.png",
                     partial(figs.potential_time, ctx, ch)))
    for ch in ctx.channels:
        plan.append(("Potential", f"channel {ch.number} ({ch.cell_id}): selected cycles",
                     f"cycles_ch{ch.number}.png",
                     partial(figs.cycles_overlay, ctx, ch, cycles)))
    plan.append(("Per cycle", "overpotential vs cycle", "overpotential.png",
                 lambda: figs.overpotential(ctx)))
    plan.append(("Per cycle", "Coulombic efficiency vs cycle", "coulombic_efficiency.png",
                 lambda: figs.coulombic_efficiency(ctx)))
    if _is_ccd(ctx):
        for ch in ctx.channels:
            plan.append(("Critical current density",
                         f"channel {ch.number} ({ch.cell_id}): current-density ladder",
                         f"ccd_ladder_ch{ch.number}.png", partial(figs.ccd_ladder, ctx, ch)))
    else:
        plan.append(("Critical current density", "current-density ladder", "",
                     _skip("not a critical-current-density run")))
    if fitted:
        for ch in ctx.channels:
            if ch.number in fitted:
                plan.append(("Impedance", f"channel {ch.number} ({ch.cell_id}): Nyquist",
                             f"nyquist_ch{ch.number}.png",
                             partial(figs.nyquist, ctx, ch, fitted[ch.number])))
    else:
        plan.append(("Impedance", "Nyquist plots", "", _skip("no EIS sweeps")))
    plan.append(("Impedance", "R_SEI and Rct vs time", "resistances_time.png",
                 lambda: figs.resistances_time(ctx, fitted)))
    plan.append(("Gas", "gas per cycle", "gas_per_cycle.png", lambda: figs.gas(ctx)))
    plan.append(("Gas", "pressure and temperature vs time", "pressure_temperature.png",
                 lambda: figs.pressure_temperature(ctx)))
    plan.append(("Atmosphere", "glovebox O2 and H2O vs time", "atmosphere.png",
                 lambda: figs.atmosphere(ctx)))
    return plan


def _is_ccd(ctx: RunContext) -> bool:
    return ctx.run.get("kind") == "critical_current_density" or any(
        (c.outcome or {}).get("outcome") == "ccd" for c in ctx.channels)


def _skip(reason: str) -> Callable[[], Any]:
    def draw() -> Any:
        raise figs.Skip(reason)
    return draw


def build_report(db: str | os.PathLike, run: str, out: str | os.PathLike,
                 cycles: Sequence[int] | None = None, dpi: int = DPI) -> Report:
    """Write the figures and ``summary.md`` of ``run`` (id, prefix or "latest") into ``out``.

    ``cycles``: the cycles to overlay (default: the first, three in between, the last).
    Raises ``rig.store.StoreError`` for a missing store or run.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open_reader(db) as conn:
        ctx = RunContext.load(conn, resolve_run(conn, run))
        fitted = {ch: eis_mod.sweeps(rows) for ch, rows in ctx.eis.items()}
        report = Report(ctx.run["id"], out, out / "summary.md")
        for section, title, name, draw in _plan(ctx, cycles, fitted):
            t = time.perf_counter()
            try:
                fig = draw()
            except figs.Skip as why:
                report.skipped.append(Skipped(section, title, str(why)))
                continue
            path = out / name
            fig.savefig(path, dpi=dpi)
            report.figures.append(FigureFile(section, title, path, time.perf_counter() - t))
        write_summary(ctx, report, fitted)
    return report
