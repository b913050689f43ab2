"""What `rig show` says about a run, as plain data (``--json``) and as the tables it prints.

``summarize(conn, run)`` is the one source of ``rig show --json`` and of the notebook API's
``Run.summary()`` (rig.data), so both always agree. Per channel: the cell, status and end
reason, the protocol's outcome, one row per cycle (charges, CE, overpotentials, end
potentials, current density, start, end and duration), the formation CE, every EIS sweep's
fit with its uncertainties (or why it failed), and the gas per cycle. The JSON layout is
documented in docs/store.md and only ever grows: keys are added, never renamed.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import Any

from rig.analysis.cycles import per_cycle
from rig.store.read import get_channels, get_eis, get_events, get_steps

MAH = 3.6  # C per mAh
NOT_MEANINGFUL_CE = ("symmetric",)
"""Cell types whose CE is not a measurement: both half-cycles pass the same fixed charge."""


def cycle_rows(steps: Iterable[dict[str, Any]], area_cm2: float | None) -> list[dict[str, Any]]:
    """One row per cycle in SI units: ``rig.analysis.cycles.per_cycle``'s keys (charges in C,
    CE, mean |E| in V) plus ``t_start``, ``t_end`` (Unix s, run clock), ``duration_s``, the
    signed end potential of each half-cycle ``e_plate_end_V``, ``e_strip_end_V``, and the
    plating current density ``current_density_A_m2`` (|charge| / duration / area)."""
    steps = list(steps)
    rows = per_cycle(steps)
    by_cycle: dict[int, list[dict[str, Any]]] = {}
    for s in steps:
        if s.get("half_cycle") in ("plate", "strip"):
            by_cycle.setdefault(s["cycle"], []).append(s)
    for row in rows:
        halves = by_cycle.get(row["cycle"], [])
        starts = [s["t_start"] for s in halves if s.get("t_start") is not None]
        ends = [s["t_end"] for s in halves if s.get("t_end") is not None]
        row["t_start"] = min(starts) if starts else None
        row["t_end"] = max(ends) if ends else None
        row["duration_s"] = (row["t_end"] - row["t_start"]
                             if starts and ends else None)
        for half in ("plate", "strip"):
            last = [s for s in halves if s["half_cycle"] == half]
            row[f"e_{half}_end_V"] = last[-1].get("e_end_V") if last else None
        row["current_density_A_m2"] = _current_density(
            [s for s in halves if s["half_cycle"] == "plate"] or halves, area_cm2)
    return rows


def _current_density(steps: list[dict[str, Any]], area_cm2: float | None) -> float | None:
    if not steps or not area_cm2:
        return None
    s = steps[0]
    dt = (s.get("t_end") or 0.0) - (s.get("t_start") or 0.0)
    if dt <= 0 or s.get("charge_C") is None:
        return None
    return abs(s["charge_C"]) / dt / (area_cm2 * 1e-4)


def formation_ce(steps: Iterable[dict[str, Any]]) -> float | None:
    """Stripped / plated charge of the formation steps (labels ``formation_plate`` and
    ``formation_strip``), or None if the channel had none."""
    plated = stripped = 0.0
    n_strip = 0
    for s in steps:
        if s.get("label") == "formation_plate":
            plated += abs(s["charge_C"] or 0.0)
        elif s.get("label") == "formation_strip":
            stripped += abs(s["charge_C"] or 0.0)
            n_strip += 1
    return stripped / plated if plated > 0 and n_strip else None


def eis_fits(eis_rows: list[tuple], outcome: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per EIS sweep: ``sweep``, ``t``, ``fit_ok``, ``reason`` and the fit's keys
    (``rs_ohm``, ``r_sei_ohm``, ``r_sei_ohm_err``, ``rct_ohm``, ``rct_ohm_err``, ...,
    ``residual``, ``chi_square``); a failed fit has only the first four. The run's
    ``sei_growth`` outcome is used when it covers the sweeps (fitted once, at the end of the
    run); otherwise the sweeps are fitted here, each from the previous good fit."""
    from rig.analysis.eis_fit import fit_series
    from rig.analysis.outcomes import _sweeps

    sweeps = _sweeps(eis_rows)
    if not sweeps:
        return []
    times = {k: t for k, t, _, _ in sweeps}
    done: dict[int, dict[str, Any]] = {}
    if outcome and outcome.get("outcome") == "sei_growth":
        for row in outcome.get("sweeps") or []:
            done[row["sweep"]] = {"fit_ok": True, "reason": "",
                                  **{k: v for k, v in row.items() if k not in ("sweep", "t_h")}}
        for row in outcome.get("failed_fits") or []:
            done[row["sweep"]] = {"fit_ok": False, "reason": row["reason"]}
    if set(done) != set(times):
        done = {}
        for (k, _, _, _), (fit, why) in zip(sweeps, fit_series((f, z) for _, _, f, z in sweeps)):
            done[k] = ({"fit_ok": True, "reason": "", **fit.to_dict()} if fit is not None
                       else {"fit_ok": False, "reason": why})
    t0 = sweeps[0][1]
    return [{"sweep": k, "t": times[k], "t_h": (times[k] - t0) / 3600, **done[k]}
            for k in sorted(times)]


def summarize(conn: sqlite3.Connection, run: dict[str, Any],
              channel: int | None = None) -> dict[str, Any]:
    """The summary of one run (a row of ``runs``): what ``rig show --json`` prints.

    ``channel``: only that channel (raises ``ValueError`` naming the run's channels if it has
    no such channel)."""
    run_key = run["key"]
    rows = get_channels(conn, run_key)
    if channel is not None:
        known = [c["channel"] for c in rows]
        if channel not in known:
            raise ValueError(f"run {run['id']} has no channel {channel} "
                             f"(channels: {', '.join(map(str, known)) or 'none'})")
        rows = [c for c in rows if c["channel"] == channel]
    channels = [_channel(conn, run_key, ch) for ch in rows]
    events = [e for e in get_events(conn, run_key, channel)
              if e["level"] in ("warning", "alarm", "error")]
    return {"run": run["id"], "name": run["name"], "kind": run["kind"], "status": run["status"],
            "end_reason": run["end_reason"], "started_at": run["started_at"],
            "ended_at": run["ended_at"], "clock": run["clock"], "channels": channels,
            "alarms": events, "software_version": run.get("software_version")}


def _channel(conn: sqlite3.Connection, run_key: int, ch: dict[str, Any]) -> dict[str, Any]:
    steps = get_steps(conn, run_key, ch["channel"])
    outcome = json.loads(ch["outcome_json"]) if ch.get("outcome_json") else None
    gas = (outcome.get("cycles") if outcome and outcome.get("outcome") == "gas_per_cycle"
           else None)
    return {
        "channel": ch["channel"], "cell_id": ch["cell_id"], "cell_type": ch["cell_type"],
        "area_cm2": ch["area_cm2"], "electrolyte": ch["electrolyte"],
        "instrument": ch["instrument"], "status": ch["status"], "end_reason": ch["end_reason"],
        "outcome": outcome,
        "cycles": [cycle_out(c) for c in cycle_rows(steps, ch["area_cm2"])],
        "ce_meaningful": ch["cell_type"] not in NOT_MEANINGFUL_CE,
        "formation_ce": formation_ce(steps),
        "headspace_mL": ch.get("headspace_mL"), "notes": ch.get("notes"),
        "eis": [_json_safe(r) for r in eis_fits(get_eis(conn, run_key, ch["channel"]),
                                                outcome)],
        "gas": [{"cycle": g["cycle"], "gas_umol": g.get("gas_umol"),
                 "gas_uL_stp": g.get("gas_uL_stp")} for g in gas] if gas else [],
    }


def _num(x: float | None, scale: float = 1.0, nd: int = 6) -> float | None:
    return None if x is None or math.isnan(x) else round(x * scale, nd)


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def cycle_out(c: dict[str, Any]) -> dict[str, Any]:
    """A cycle row of ``cycle_rows`` in the units of ``rig show --json`` (mAh, mV, h)."""
    return {"cycle": c["cycle"], "plated_mAh": _num(c["plated_C"], 1 / MAH),
            "stripped_mAh": _num(c["stripped_C"], 1 / MAH), "ce": _num(c["ce"], 1, 6),
            "eta_plate_mV": _num(c["eta_plate_V"], 1e3, 3),
            "eta_strip_mV": _num(c["eta_strip_V"], 1e3, 3),
            "eta_plate_end_mV": _num(c["eta_plate_end_V"], 1e3, 3),
            "eta_strip_end_mV": _num(c["eta_strip_end_V"], 1e3, 3),
            "e_plate_end_mV": _num(c["e_plate_end_V"], 1e3, 3),
            "e_strip_end_mV": _num(c["e_strip_end_V"], 1e3, 3),
            "current_density_mA_cm2": _num(c["current_density_A_m2"], 0.1, 4),
            "t_start": c["t_start"], "t_end": c["t_end"],
            "duration_h": _num(c["duration_s"], 1 / 3600, 4)}


# ---- the text `rig show` prints ------------------------------------------------------------

def _f(x: float | None, nd: int, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.{nd}f}"


def channel_lines(ch: dict[str, Any], every: int = 1) -> list[str]:
    """The tables of one channel of a summary: cycles, EIS sweeps, gas per cycle."""
    out: list[str] = []
    if ch.get("formation_ce") is not None:
        out.append(f"  formation CE {ch['formation_ce'] * 100:.2f} %")
    rows = ch["cycles"]
    if rows:
        ce = ch.get("ce_meaningful", True)
        out.append(f"  {'cycle':>5} {'plated mAh':>11} {'stripped mAh':>13}"
                   + (f" {'CE %':>8}" if ce else "")
                   + f" {'j mA/cm²':>9} {'time h':>7} {'η plate mV':>11} {'η strip mV':>11}"
                   f" {'E plate end mV':>15} {'E strip end mV':>15}")
        for k, c in enumerate(rows):
            if every > 1 and (c["cycle"] % every) and k != len(rows) - 1 and k:
                continue
            out.append(f"  {c['cycle']:>5} {_f(c['plated_mAh'], 4):>11} "
                       f"{_f(c['stripped_mAh'], 4):>13}"
                       + (f" {_f(c['ce'], 3, 100):>8}" if ce else "")
                       + f" {_f(c.get('current_density_mA_cm2'), 3):>9}"
                       f" {_f(c.get('duration_h'), 3):>7} {_f(c['eta_plate_mV'], 1):>11}"
                       f" {_f(c['eta_strip_mV'], 1):>11} {_f(c.get('e_plate_end_mV'), 1):>15}"
                       f" {_f(c.get('e_strip_end_mV'), 1):>15}")
        if not ce:
            out.append("  (CE % not shown: not meaningful for a symmetric cell, whose "
                       "half-cycles pass a fixed charge)")
    if ch.get("eis"):
        out.append(f"  {'sweep':>5} {'t h':>7} {'Rs ohm':>8} {'R_SEI ohm':>18} "
                   f"{'Rct ohm':>18} {'misfit %':>9}")
        for s in ch["eis"]:
            if not s["fit_ok"]:
                out.append(f"  {s['sweep']:>5} {s['t_h']:>7.2f} fit failed: {s['reason']}")
                continue
            out.append(f"  {s['sweep']:>5} {s['t_h']:>7.2f} {_f(s['rs_ohm'], 2):>8} "
                       f"{_pm(s['r_sei_ohm'], s.get('r_sei_ohm_err')):>18} "
                       f"{_pm(s['rct_ohm'], s.get('rct_ohm_err')):>18} "
                       f"{_f(s['residual'], 2, 100):>9}")
    if ch.get("gas"):
        out.append(f"  {'cycle':>5} {'gas umol':>9} {'uL STP':>8}")
        for k, g in enumerate(ch["gas"]):
            if every > 1 and (g["cycle"] % every) and k != len(ch["gas"]) - 1 and k:
                continue
            out.append(f"  {g['cycle']:>5} {_f(g['gas_umol'], 3):>9} "
                       f"{_f(g['gas_uL_stp'], 1):>8}")
    return out


def _pm(value: float | None, err: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ± {err:.2g}" if err is not None else f"{value:.2f} ± ?"
