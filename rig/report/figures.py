"""The report's figures: one function per figure, each returning a matplotlib Figure or raising
``Skip`` with the reason the run has no data for it.

Drawn with matplotlib's object API on the Agg backend (no display, no pyplot state). Time axes
are hours since the run started; every axis names its quantity and unit. Whole-run traces come
from the min/max-decimated series (``rig.report.queries.decimated_series``): a spike or a short
is never lost, however long the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from rig.analysis.gas import STP_UL_PER_UMOL, cycle_bounds, gas_per_cycle  # noqa: E402
from rig.events import EventKind  # noqa: E402
from rig.report import eis as eis_mod  # noqa: E402
from rig.report.context import Channel, RunContext  # noqa: E402
from rig.report.queries import periods, window  # noqa: E402

WIDE, TALL = (8.0, 4.5), (8.0, 6.0)  # inches; at 150 dpi 1200 x 675 and 1200 x 900 px
SHORT_KINDS = (EventKind.SHORT_HARD, EventKind.SHORT_SOFT, EventKind.SAFETY_TRIP)
COLORS = [f"C{k}" for k in range(10)]


class Skip(Exception):
    """The run has no data for this figure; the message says why (it goes in the summary)."""


def _figure(size: tuple[float, float] = WIDE, rows: int = 1, sharex: bool = True
            ) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def _color(ctx: RunContext, ch: Channel) -> str:
    return COLORS[ctx.channels.index(ch) % len(COLORS)]


def _legend(ax: Axes, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", framealpha=0.85, **kw)


def _log_if_wide(ax: Axes, values: Sequence[float], ratio: float = 5.0) -> None:
    """Log scale when positive values span more than ``ratio`` (a glyme's 20 mV and a
    carbonate's 300 mV on one axis)."""
    v = [x for x in values if x is not None and math.isfinite(x) and x > 0]
    if v and max(v) / min(v) > ratio:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # 200, not 2 x 10^2
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))


def _volts(e: Any) -> tuple[float, str]:
    """Scale and unit for potentials: mV when every |E| is below 0.1 V (a cell at rest)."""
    e = np.asarray(e, dtype=float)
    small = e.size > 0 and float(np.nanmax(np.abs(e))) < 0.1
    return (1e3, "mV") if small else (1.0, "V")


def _title(ch: Channel) -> str:
    return f"channel {ch.number} · {ch.label}"


def _channel_events(ctx: RunContext, ch: Channel, kinds: Sequence[str]) -> list[dict]:
    return [e for e in ctx.events if e["channel"] == ch.number and e["kind"] in kinds]


def _mark_events(ctx: RunContext, ax: Axes, events: Sequence[dict], label: bool = True) -> None:
    for k, e in enumerate(events):
        ax.axvline(float(ctx.hours(e["t"])), color="red", lw=1.0, ls="--",
                   label=e["kind"].replace("_", " ") if label and k == 0 else None)


def _shade_holds(ctx: RunContext, ax: Axes, ch: Channel | None = None) -> None:
    """Interlock holds (run-wide) and the channel's own pauses and holds, shaded."""
    holds = periods(ctx.events, (EventKind.INTERLOCK_HOLD,), (
        EventKind.INTERLOCK_RELEASE, EventKind.INTERLOCK_ALARM_CLEARED_MANUAL), ctx.t_end)
    for k, (a, b) in enumerate(holds):
        ax.axvspan(float(ctx.hours(a)), float(ctx.hours(b)), color="tab:red", alpha=0.15, lw=0,
                   label="interlock hold" if k == 0 else None)
    mine = [e for e in ctx.events if ch is None or e["channel"] == ch.number]
    paused = periods(mine, ("paused",), ("resumed", "channel_end"), ctx.t_end)
    for k, (a, b) in enumerate(paused):
        ax.axvspan(float(ctx.hours(a)), float(ctx.hours(b)), color="0.5", alpha=0.2, lw=0,
                   label="paused" if k == 0 else None)


# ---- potential ------------------------------------------------------------------------------

def potential_time(ctx: RunContext, ch: Channel) -> Figure:
    """E against time over the whole run, one channel."""
    t, e = ctx.series(ch.number)["e"]
    if len(t) == 0:
        raise Skip("no samples recorded")
    fig, (ax,) = _figure()
    scale, unit = _volts(e)
    ax.plot(ctx.hours(t), e * scale, lw=0.6, color=_color(ctx, ch))
    _shade_holds(ctx, ax, ch)
    _mark_events(ctx, ax, _channel_events(ctx, ch, SHORT_KINDS))
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("time since start / h")
    ax.set_ylabel(f"E (WE vs CE) / {unit}")
    ax.set_title(_title(ch))
    _legend(ax, loc="best")
    return fig


def pick_cycles(available: Sequence[int], wanted: Sequence[int] | None, n: int = 5) -> list[int]:
    """The cycles to overlay: ``wanted`` (those the run has), else the first, a few evenly in
    between and the last.

    >>> pick_cycles(range(1, 201), None)
    [1, 50, 100, 150, 200]
    >>> pick_cycles([1, 2, 3], [1, 10, 100])
    [1]
    """
    cycles = sorted(set(available))
    if wanted:
        return [c for c in sorted(set(wanted)) if c in set(cycles)]
    if len(cycles) <= n:
        return cycles
    picks = {cycles[0], cycles[-1]}
    for k in range(1, n - 1):
        target = cycles[0] + (cycles[-1] - cycles[0]) * k / (n - 1)
        picks.add(min(cycles, key=lambda c: (abs(c - target), c)))
    return sorted(picks)


def cycles_overlay(ctx: RunContext, ch: Channel, wanted: Sequence[int] | None = None) -> Figure:
    """E against time within the cycle, selected cycles on one axis (the profile changing)."""
    bounds = {c: (a, b) for c, a, b in cycle_bounds(
        s for s in ch.steps if s.get("half_cycle") in ("plate", "strip"))}
    if not bounds:
        raise Skip("no plating/stripping cycles")
    picks = pick_cycles(list(bounds), wanted)
    if not picks:
        raise Skip(f"none of the cycles asked for ({', '.join(map(str, wanted or []))}) was "
                   f"recorded (cycles {min(bounds)}-{max(bounds)})")
    longest = max(bounds[c][1] - bounds[c][0] for c in picks)
    unit, scale = ("h", 3600.0) if longest > 2 * 3600 else ("min", 60.0)
    cmap = colormaps["viridis"]
    fig, (ax,) = _figure()
    for k, c in enumerate(picks):
        a, b = bounds[c]
        data = window(ctx.conn, ctx.key, ch.number, a, b, ("t", "e"), cycle=c)
        if len(data) == 0:
            continue
        color = cmap(k / max(len(picks) - 1, 1) * 0.9)
        ax.plot((data[:, 0] - a) / scale, data[:, 1], lw=1.0, color=color, label=f"cycle {c}")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel(f"time since the cycle's start / {unit}")
    ax.set_ylabel("E (WE vs CE) / V")
    ax.set_title(f"{_title(ch)}: selected cycles")
    _legend(ax, loc="best")
    return fig


# ---- per cycle --------------------------------------------------------------------------------

def overpotential(ctx: RunContext) -> Figure:
    """Mean |E| of each plating and stripping half-cycle against cycle, every channel."""
    with_cycles = [c for c in ctx.channels if c.cycles]
    if not with_cycles:
        raise Skip("no plating/stripping half-cycles")
    fig, (ax,) = _figure()
    values: list[float] = []
    for ch in with_cycles:
        color = _color(ctx, ch)
        n = [r["cycle"] for r in ch.cycles]
        plate = [r["eta_plate_V"] * 1e3 for r in ch.cycles]
        strip = [r["eta_strip_V"] * 1e3 for r in ch.cycles]
        marker = "o" if len(n) <= 60 else None
        ax.plot(n, plate, color=color, lw=1.2, marker=marker, ms=3, label=ch.label)
        ax.plot(n, strip, color=color, lw=1.0, ls="--", marker=marker, ms=3, mfc="none")
        values += plate + strip
    _log_if_wide(ax, values)
    ax.set_xlabel("cycle")
    ax.set_ylabel("overpotential, mean |E| of the half-cycle / mV")
    ax.set_title("overpotential per cycle")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", lw=1.2), Line2D([], [], color="k", lw=1.0, ls="--")]
    labels += ["plating (solid)", "stripping (dashed)"]
    ax.legend(handles, labels, fontsize="small", framealpha=0.85, loc="best")
    return fig


def coulombic_efficiency(ctx: RunContext) -> Figure:
    """CE of each cycle whose strip ran to the cutoff, every Na‖Cu/Al channel; the reservoir
    method's CE as a line."""
    lines = []
    for ch in ctx.channels:
        rows = [r for r in ch.cycles if ch.ce_meaningful(r["cycle"]) and not math.isnan(r["ce"])]
        o = ch.outcome or {}
        reservoir = (o.get("ce") if o.get("outcome") == "reservoir_ce"
                     and ch.row.get("cell_type") != "symmetric" else None)
        if rows or reservoir is not None:
            lines.append((ch, rows, reservoir))
    if not any(ch.cycles for ch in ctx.channels):
        raise Skip("no plating/stripping cycles")
    if not lines:
        raise Skip("CE means nothing here: every half-cycle passed a fixed charge (symmetric "
                   "Na‖Na cells, or no strip ran to a potential cutoff)")
    fig, (ax,) = _figure()
    for ch, rows, reservoir in lines:
        color = _color(ctx, ch)
        if rows:
            ax.plot([r["cycle"] for r in rows], [r["ce"] * 100 for r in rows], color=color,
                    marker="o", ms=3, label=ch.label)
        if reservoir is not None:
            ax.axhline(reservoir * 100, color=color, ls="--", lw=1.2,
                       label=f"{ch.label}: reservoir method {reservoir * 100:.2f} %")
            formation = (ch.outcome or {}).get("formation_ce")
            if formation is not None:
                ax.plot([0], [formation * 100], marker="s", ms=6, color=color, ls="none",
                        label=f"{ch.label}: formation (cycle 0) {formation * 100:.2f} %")
    last = max((r["cycle"] for ch, _, _ in lines for r in ch.cycles), default=1)
    formation = any((ch.outcome or {}).get("formation_ce") is not None and res is not None
                    for ch, _, res in lines)
    ax.set_xlim(-0.5 if formation else 0.5, last + 0.5)
    ax.set_xlabel("cycle")
    ax.set_ylabel("Coulombic efficiency / %")
    ax.set_title("Coulombic efficiency: charge stripped to the cutoff / charge plated")
    _legend(ax, loc="best")
    return fig


# ---- EIS --------------------------------------------------------------------------------------

def nyquist(ctx: RunContext, ch: Channel, fitted: list[eis_mod.Sweep]) -> Figure:
    """−Z'' against Z' of every sweep, coloured by time, with the fitted circuit over each."""
    if not fitted:
        raise Skip("no EIS sweeps")
    fig, (ax,) = _figure(TALL)
    hours = [float(ctx.hours(s.t)) for s in fitted]
    norm = Normalize(min(hours), max(hours) if max(hours) > min(hours) else min(hours) + 1)
    cmap = colormaps["viridis"]
    for s, h in zip(fitted, hours):
        color = cmap(norm(h))
        ax.plot(s.z.real, -s.z.imag, "o", ms=3, color=color, mfc="none")
        if s.fit is not None:
            f = np.logspace(np.log10(s.f_Hz.max()), np.log10(s.f_Hz.min()), 200)
            zf = eis_mod.circuit_impedance(s.fit.parameters, f)
            ax.plot(zf.real, -zf.imag, "-", lw=1.0, color=color)
    ax.set_aspect("equal", adjustable="datalim")  # arcs look like arcs
    ax.set_xlabel("Z′ / Ω")
    ax.set_ylabel("−Z″ / Ω")
    n_fail = sum(s.fit is None for s in fitted)
    ax.set_title(f"{_title(ch)}: {len(fitted)} sweeps"
                 + (f" ({n_fail} could not be fitted)" if n_fail else ""))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8)
    bar.set_label("time since start / h")
    ax.legend([Line2D([], [], ls="none", marker="o", mfc="none", color="0.3"),
               Line2D([], [], color="0.3")], ["measured", "fit R0-p(R1,CPE1)-p(R2,CPE2)-W1"],
              fontsize="small", loc="lower center")  # inside the arcs: empty
    return fig


def resistances_time(ctx: RunContext, fitted: dict[int, list[eis_mod.Sweep]]) -> Figure:
    """R_SEI and Rct of every fitted sweep against time, error bars one standard error."""
    if not any(s.fit for sweeps in fitted.values() for s in sweeps):
        raise Skip("no EIS sweep could be fitted" if fitted else "no EIS sweeps")
    fig, axes = _figure(TALL, rows=2)
    for ax, name, err_name, what in ((axes[0], "r_sei_ohm", "r_sei_err", "R_SEI"),
                                     (axes[1], "rct_ohm", "rct_err", "Rct")):
        values: list[float] = []
        for ch in ctx.channels:
            ok = [s for s in fitted.get(ch.number, []) if s.fit is not None]
            if not ok:
                continue
            y = [getattr(s.fit, name) for s in ok]
            err = [getattr(s, err_name) for s in ok]
            ax.errorbar([float(ctx.hours(s.t)) for s in ok], y,
                        yerr=[e if e is not None else 0.0 for e in err], color=_color(ctx, ch),
                        marker="o", ms=3, capsize=2, lw=1.0, label=ch.label)
            values += y
        _log_if_wide(ax, values)
        ax.set_ylabel(f"{what} / Ω")
    _legend(axes[0], loc="best")
    axes[0].set_title("interphase (R_SEI) and charge-transfer (Rct) resistance, "
                      "±1 s.e. of the fit")
    axes[1].set_xlabel("time since start / h")
    return fig


# ---- gas and sensors ------------------------------------------------------------------------

def gas_rows(ctx: RunContext, ch: Channel) -> list[dict[str, Any]]:
    """Gas per cycle of a channel: the run's outcome if it computed one, else from the holder's
    pressure and temperature (``rig.analysis.gas``)."""
    o = ch.outcome or {}
    if o.get("outcome") == "gas_per_cycle" and o.get("cycles"):
        return list(o["cycles"])
    sensor = ctx.pressure_sensor(ch.number)
    headspace = ch.row.get("headspace_mL")
    if not sensor or not headspace:
        return []
    p = ctx.sensor_series("pressure_Pa", sensor).get(sensor)
    temp = ctx.sensor_series("temperature_K", sensor).get(sensor)
    bounds = cycle_bounds(ch.steps)
    if p is None or temp is None or not bounds or len(p[0]) < 2:
        return []
    t_k = np.interp(p[0], temp[0], temp[1])
    result = gas_per_cycle(p[0].tolist(), p[1].tolist(), t_k.tolist(), bounds, float(headspace))
    return list(result["cycles"])


def _to_ul(umol: Any) -> Any:
    return np.asarray(umol) * STP_UL_PER_UMOL


def _to_umol(ul: Any) -> Any:
    return np.asarray(ul) / STP_UL_PER_UMOL


def gas(ctx: RunContext) -> Figure:
    """Gas made in each cycle (µmol, and µL at STP on the right), cycle 1 marked."""
    rows = {ch.number: gas_rows(ctx, ch) for ch in ctx.channels}
    if not any(rows.values()):
        raise Skip("no gas per cycle: no channel has a gas holder with pressure readings")
    fig, (ax,) = _figure()
    for ch in ctx.channels:
        r = rows[ch.number]
        if not r:
            continue
        cycles, umol = [x["cycle"] for x in r], [x["gas_umol"] for x in r]
        ax.plot(cycles, umol, marker="o", ms=4, lw=1.2, color=_color(ctx, ch), label=ch.label)
        if 1 in cycles:
            ax.plot([1], [umol[cycles.index(1)]], marker="*", ms=13, color=_color(ctx, ch),
                    mec="k", ls="none")
    ax.axvspan(0.5, 1.5, color="0.85", lw=0, zorder=0)
    ax.annotate("cycle 1\n(SEI formation)", xy=(1.0, 0.03), xycoords=("data", "axes fraction"),
                ha="center", va="bottom", fontsize="small")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("cycle")
    ax.set_ylabel("gas per cycle / µmol")
    right = ax.secondary_yaxis("right", functions=(_to_ul, _to_umol))
    right.set_ylabel("gas per cycle / µL at STP")
    ax.set_xlim(left=0.5)
    ax.set_title("gas evolved per cycle, n = PV/RT with the measured T")
    _legend(ax, loc="upper right")
    return fig


def _sensor_label(ctx: RunContext, sensor: str) -> str:
    for s in ctx.station.get("sensors") or []:
        if s.get("name") == sensor and s.get("channel") is not None:
            ch = next((c for c in ctx.channels if c.number == s["channel"]), None)
            if ch is not None:
                return f"{sensor} · {ch.label}"
    return sensor


def pressure_temperature(ctx: RunContext) -> Figure:
    """Each gas holder's pressure (mbar) and temperature (°C) against time."""
    pressure = ctx.sensor_series("pressure_Pa")
    if not pressure:
        raise Skip("no pressure readings (no gas holder on this station)")
    temperature = ctx.sensor_series("temperature_K")
    fig, (ax_p, ax_t) = _figure(TALL, rows=2)
    for k, (name, (t, p)) in enumerate(sorted(pressure.items())):
        color = COLORS[k % len(COLORS)]
        ax_p.plot(ctx.hours(t), p / 100.0, lw=1.0, color=color, label=_sensor_label(ctx, name))
        if name in temperature:
            tt, temp = temperature[name]
            ax_t.plot(ctx.hours(tt), temp - 273.15, lw=1.0, color=color)
    ax_p.set_ylabel("pressure / mbar")
    ax_t.set_ylabel("temperature / °C")
    ax_t.set_xlabel("time since start / h")
    ax_p.set_title("gas holders: pressure and temperature")
    _legend(ax_p, loc="best")
    return fig


def atmosphere(ctx: RunContext) -> Figure:
    """Glovebox O2 and H2O (ppm) against time, interlock holds and pauses shaded, the
    interlock thresholds dashed."""
    o2, h2o = ctx.sensor_series("o2_ppm"), ctx.sensor_series("h2o_ppm")
    if not o2 and not h2o:
        raise Skip("no glovebox O2/H2O readings")
    fig, (ax,) = _figure()
    limits = ctx.station.get("interlocks") or {}
    drawn: dict[float, list[str]] = {}  # threshold -> species (one line when they are equal)
    for series, name, color, limit in ((o2, "O2", "tab:blue", limits.get("o2_max_ppm")),
                                       (h2o, "H2O", "tab:green", limits.get("h2o_max_ppm"))):
        for sensor, (t, v) in sorted(series.items()):
            ax.plot(ctx.hours(t), v, lw=1.0, color=color, label=f"{name} ({sensor})")
        if series and limit:
            drawn.setdefault(float(limit), []).append(name)
    for limit, names in drawn.items():
        ax.axhline(limit, color="0.3", ls="--", lw=0.8,
                   label=f"{', '.join(names)} hold threshold {limit:g} ppm")
    _shade_holds(ctx, ax)
    # other station-wide alarms (an interlock hold is already shaded)
    alarms = [e for e in ctx.events if e["level"] == "alarm" and e["channel"] is None
              and not e["kind"].startswith("interlock")]
    for k, e in enumerate(alarms):
        ax.axvline(float(ctx.hours(e["t"])), color="tab:red", lw=0.8, ls=":",
                   label="alarm" if k == 0 else None)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time since start / h")
    ax.set_ylabel("concentration / ppm")
    ax.set_title("glovebox atmosphere")
    _legend(ax, loc="upper right")
    return fig


# ---- critical current density ----------------------------------------------------------------

def ccd_ladder(ctx: RunContext, ch: Channel) -> Figure:
    """Current density and E against time for a current-density ramp, the short marked."""
    series = ctx.series(ch.number)
    t_i, i = series["i"]
    t_e, e = series["e"]
    if len(t_e) == 0:
        raise Skip("no samples recorded")
    if not ch.area_cm2 or math.isnan(ch.area_cm2):
        raise Skip("the cell has no electrode area: no current density")
    fig, (ax_j, ax_e) = _figure(TALL, rows=2)
    color = _color(ctx, ch)
    ax_j.plot(ctx.hours(t_i), i * 1e3 / ch.area_cm2, lw=0.8, color=color)
    ax_e.plot(ctx.hours(t_e), e, lw=0.6, color=color)
    ax_j.axhline(0, color="0.6", lw=0.5)
    ax_e.axhline(0, color="0.6", lw=0.5)
    fails = _channel_events(ctx, ch, SHORT_KINDS)
    o = ch.outcome or {}
    for k, event in enumerate(fails):
        at = o.get("failing_mA_cm2")
        h = float(ctx.hours(event["t"]))
        text = (event["kind"].replace("_", " ") + (f" at {at:g} mA/cm²" if at and k == 0 else "")
                + f", {h:.2f} h")
        for ax in (ax_j, ax_e):
            ax.axvline(h, color="red", lw=1.0, ls="--", label=text if ax is ax_e else None)
    ax_j.set_ylabel("current density / mA cm⁻²")
    ax_e.set_ylabel("E (WE vs CE) / V")
    ax_e.set_xlabel("time since start / h")
    ccd = o.get("ccd_mA_cm2")
    ax_j.set_title(_title(ch) + (f": critical current density {ccd:g} mA/cm²"
                                 if ccd is not None else ""))
    _legend(ax_e, loc="upper left")
    return fig
