"""A protocol's named result for one channel, from what the store holds once it ended.

``compute_outcome(plan.outcome, steps, end_reason, plan.parameters, **extra)``: ``steps`` are
the channel's rows of the steps table (dicts with ``step, cycle, label, kind, half_cycle,
t_start, t_end, end_reason, charge_C, e_mean_abs_V, e_end_V, n_samples``), ``end_reason`` the
channel's. ``extra`` carries what some outcomes need: ``eis`` (rows ``(sweep, t, f_Hz, z_re,
z_im)``), ``sensors`` (rows ``(t, sensor, quantity, value)``), ``cell`` (the CellSpec, or any
object with ``area_cm2`` and ``headspace_mL``). Pure functions of data: no store, no clock.

Every result is a JSON-safe dict whose keys carry their units (``ce``, ``ccd_mA_cm2``,
``r_sei_ohm``, ``gas_umol``...). When a result cannot be computed the dict says why in
``reason`` and the main value is None; nothing raises for missing data.

Example (the reservoir method with domain.md's numbers, charges in mAh of a 1 cm² cell)::

    >>> mah = 3.6
    >>> steps = [{"label": "reservoir", "charge_C": -5 * mah, "cycle": 0}]
    >>> steps += [{"label": lab, "charge_C": q * mah, "cycle": c} for c in range(1, 11)
    ...           for lab, q in (("cycle_plate", -1.0), ("cycle_strip", 1.0))]
    >>> steps += [{"label": "final_strip", "charge_C": 4.9 * mah, "cycle": 10,
    ...            "end_reason": "potential_above"}]
    >>> round(compute_outcome("reservoir_ce", steps, "completed", {})["ce"], 5)
    0.99333
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rig.analysis.cycles import per_cycle
from rig.analysis.eis_fit import fit_series
from rig.analysis.gas import cycle_bounds, gas_per_cycle, pt_from_sensor_rows

MAH = 3.6  # C per mAh
END_KINDS = ("time", "charge", "potential_above", "potential_below", "current_above",
             "current_below", "dEdt_below", "sweep_done")
"""Step end reasons that mean "the step ended as planned" (an end condition, a finished sweep);
anything else (a short, the safety window, an abort) is the step failing."""
FAILURES = ("short_hard", "short_soft", "overpotential_divergence", "safety_window")
"""Channel end reasons that are a failure of the cell (not of the rig, not the user's abort)."""


def compute_outcome(plan_outcome: str, steps: list[dict[str, Any]], end_reason: str,
                    parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The named outcome of one channel (see the module docstring)."""
    try:
        compute = OUTCOMES[plan_outcome]
    except KeyError:
        raise ValueError(f"unknown outcome {plan_outcome!r}; known: {', '.join(OUTCOMES)}") \
            from None
    return {"outcome": plan_outcome, "end_reason": end_reason,
            **compute(steps, end_reason, parameters, **extra)}


# ---- Coulombic efficiency ----------------------------------------------------------------------

def _charge(steps: Iterable[dict[str, Any]], label: str) -> tuple[float, int]:
    """Total |charge| (C) of the steps with ``label``, and how many there were."""
    found = [abs(s["charge_C"]) for s in steps if s.get("label") == label]
    return sum(found), len(found)


def reservoir_ce(steps: list[dict[str, Any]], end_reason: str, parameters: dict[str, Any],
                 **_: Any) -> dict[str, Any]:
    """CE = (Σ cycle strips + Q_S) / (Σ cycle plates + Q_T), from the measured charges (with
    charge-limited cycles that is the textbook (n·Q_C + Q_S) / (n·Q_C + Q_T)).

    Keys: ``ce``, ``n_cycles``, ``q_t_mAh``, ``q_c_mAh`` (mean plated per cycle), ``q_s_mAh``,
    ``formation_ce``, ``final_strip_end`` (its end reason: ``potential_above`` = reached the
    cutoff), ``reservoir_exhausted`` (a cycle strip hit the cutoff), ``reason``.
    """
    q_t, n_res = _charge(steps, "reservoir")
    plated, n_cycles = _charge(steps, "cycle_plate")
    stripped, _n_strip = _charge(steps, "cycle_strip")
    q_s, n_final = _charge(steps, "final_strip")
    f_plate, _n_fplate = _charge(steps, "formation_plate")
    f_strip, n_fs = _charge(steps, "formation_strip")
    final = [s for s in steps if s.get("label") == "final_strip"]
    out: dict[str, Any] = {
        "ce": None, "n_cycles": n_cycles, "q_t_mAh": q_t / MAH,
        "q_c_mAh": plated / n_cycles / MAH if n_cycles else None, "q_s_mAh": q_s / MAH,
        "formation_ce": f_strip / f_plate if f_plate > 0 and n_fs else None,
        "final_strip_end": final[-1].get("end_reason") if final else None,
        "reservoir_exhausted": any(s.get("label") == "cycle_strip"
                                   and s.get("end_reason") == "potential_above" for s in steps),
        "reason": "",
    }
    if not n_res or not n_final:
        missing = "reservoir" if not n_res else "final_strip"
        out["reason"] = f"no {missing} step: the channel ended ({end_reason}) before it"
        return out
    if final[-1].get("end_reason") != "potential_above":
        out["reason"] = (f"the final strip ended on {final[-1].get('end_reason')}, not at the "
                         "cutoff: Q_S may be incomplete")
    out["ce"] = (stripped + q_s) / (plated + q_t)
    return out


def per_cycle_ce(steps: list[dict[str, Any]], end_reason: str, parameters: dict[str, Any],
                 **_: Any) -> dict[str, Any]:
    """CE of each cycle (stripped to the cutoff / plated) and the mean over cycles 2..n (cycle
    1 forms the SEI on the bare collector). A cycle whose strip did not reach the cutoff is
    listed with ``complete`` false and left out of the mean.

    Keys: ``cycles`` (rows ``cycle, ce, plated_mAh, stripped_mAh, complete``), ``ce_mean``,
    ``ce_mean_cycles`` ([first, last] averaged), ``first_cycle_ce``, ``n_cycles``, ``reason``.
    """
    strip_end = {s["cycle"]: s.get("end_reason") for s in steps if s.get("half_cycle") == "strip"}
    rows = []
    for c in per_cycle(steps):
        if math.isnan(c["ce"]):
            continue
        rows.append({"cycle": c["cycle"], "ce": c["ce"], "plated_mAh": c["plated_C"] / MAH,
                     "stripped_mAh": c["stripped_C"] / MAH,
                     "complete": strip_end.get(c["cycle"]) == "potential_above"})
    later = [r for r in rows if r["cycle"] >= 2 and r["complete"]]
    first = next((r["ce"] for r in rows if r["cycle"] == 1), None)
    out: dict[str, Any] = {"cycles": rows, "ce_mean": None, "ce_mean_cycles": None,
                           "first_cycle_ce": first, "n_cycles": len(rows), "reason": ""}
    if later:
        out["ce_mean"] = float(np.mean([r["ce"] for r in later]))
        out["ce_mean_cycles"] = [later[0]["cycle"], later[-1]["cycle"]]
    else:
        out["reason"] = "no complete cycle after cycle 1 to average"
    return out


# ---- failures: the cycle, the critical current density -----------------------------------------

def _failed_cycle(steps: list[dict[str, Any]], end_reason: str) -> int | None:
    """The cycle a failure ended the channel in: the cycle of the step that failed, or, when
    the failing step left no row (a short or a safety trip ends the channel mid-step), the
    cycle after the last completed half-cycle pair."""
    if end_reason not in FAILURES:
        return None
    bad = next((s for s in steps if s.get("end_reason") not in END_KINDS), None)
    if bad is not None:
        return bad.get("cycle")
    halves = [s for s in steps if s.get("half_cycle") in ("plate", "strip")]
    if not halves:
        return 1
    last = halves[-1]
    if end_reason == "overpotential_divergence":  # judged after the step that diverged
        return last["cycle"]
    return last["cycle"] + 1 if last["half_cycle"] == "strip" else last["cycle"]


def _completed_cycles(steps: list[dict[str, Any]]) -> int:
    done: dict[int, set[str]] = {}
    for s in steps:
        if s.get("half_cycle") in ("plate", "strip") and s.get("end_reason") in END_KINDS:
            done.setdefault(s["cycle"], set()).add(s["half_cycle"])
    return sum(1 for halves in done.values() if halves == {"plate", "strip"})


def failure_cycle(steps: list[dict[str, Any]], end_reason: str, parameters: dict[str, Any],
                  **_: Any) -> dict[str, Any]:
    """Whether the channel ended on a failure of the cell, which, and in which cycle.

    Keys: ``failed``, ``failure`` (the end reason, or None), ``failure_cycle``,
    ``cycles_completed``.
    """
    failed = end_reason in FAILURES
    return {"failed": failed, "failure": end_reason if failed else None,
            "failure_cycle": _failed_cycle(steps, end_reason),
            "cycles_completed": _completed_cycles(steps)}


def _rungs_from_steps(steps: list[dict[str, Any]], area_cm2: float) -> list[dict[str, Any]]:
    """Rungs read off the half-cycles: |charge| / duration / area, consecutive cycles at the
    same current density (to 3 significant figures) grouped."""
    by_cycle: dict[int, float] = {}
    for s in steps:
        dt = (s.get("t_end") or 0) - (s.get("t_start") or 0)
        if s.get("half_cycle") in ("plate", "strip") and dt > 0 and s["cycle"] not in by_cycle:
            by_cycle[s["cycle"]] = float(f"{abs(s['charge_C']) / dt / area_cm2:.3g}")
    rungs: list[dict[str, Any]] = []
    for c in sorted(by_cycle):
        j = by_cycle[c]
        if rungs and rungs[-1]["current_density_A_per_cm2"] == j:
            rungs[-1]["last_cycle"] = c
        else:
            rungs.append({"current_density_A_per_cm2": j, "first_cycle": c, "last_cycle": c})
    return rungs


def ccd(steps: list[dict[str, Any]], end_reason: str, parameters: dict[str, Any],
        **extra: Any) -> dict[str, Any]:
    """The critical current density: the last one whose cycles all completed before the cell
    failed, and the one it failed at. Rungs come from ``parameters["rungs"]`` (the template's),
    else from the steps' charge and duration with the cell's area (``cell`` in ``extra``).

    Keys: ``ccd_mA_cm2`` (None if the first rung failed), ``failing_mA_cm2`` (None if none
    failed), ``failure_cycle``, ``failure``, ``reached_max`` (every rung completed),
    ``rungs_completed``, ``reason``.
    """
    rungs = parameters.get("rungs")
    failed_in = _failed_cycle(steps, end_reason)
    if not rungs:
        area = getattr(extra.get("cell"), "area_cm2", None) or extra.get("area_cm2")
        rungs = _rungs_from_steps(steps, area) if area else []
        _extend_last_rung(rungs, failed_in)
    out: dict[str, Any] = {"ccd_mA_cm2": None, "failing_mA_cm2": None, "failure_cycle": None,
                           "failure": end_reason if end_reason in FAILURES else None,
                           "reached_max": False, "rungs_completed": 0, "reason": ""}
    if not rungs:
        out["reason"] = "no current densities: neither the plan's rungs nor a cell area"
        return out
    done_cycles = _completed_cycles(steps)
    complete = [r for r in rungs if r["last_cycle"] <= (
        failed_in - 1 if failed_in is not None else done_cycles)]
    failing = next((r for r in rungs if failed_in is not None
                    and r["first_cycle"] <= failed_in <= r["last_cycle"]), None)
    out["rungs_completed"] = len(complete)
    out["failure_cycle"] = failed_in
    if complete:
        out["ccd_mA_cm2"] = complete[-1]["current_density_A_per_cm2"] * 1e3
    if failing is not None:
        out["failing_mA_cm2"] = failing["current_density_A_per_cm2"] * 1e3
    out["reached_max"] = end_reason == "completed" and len(complete) == len(rungs)
    if failed_in is None and len(complete) < len(rungs):
        out["reason"] = f"the channel ended ({end_reason}) before the last rung, without a failure"
    elif failed_in is not None and failing is None:
        out["reason"] = "the failing current density is not in the steps (read off the steps)"
    return out


def _extend_last_rung(rungs: list[dict[str, Any]], failed_in: int | None) -> None:
    """Rungs read off the steps end where the data ends. A failure after the last one belongs
    to it when it is shorter than the rungs before it (it was cut short), or when it is the
    only one; else it came in a rung the steps never reached."""
    if not rungs or failed_in is None or failed_in <= rungs[-1]["last_cycle"]:
        return
    length = [r["last_cycle"] - r["first_cycle"] + 1 for r in rungs]
    if len(rungs) == 1 or length[-1] < length[0]:
        rungs[-1]["last_cycle"] = failed_in


# ---- SEI growth from EIS -----------------------------------------------------------------------

def _sweeps(rows: Iterable[Sequence[Any]]) -> list[tuple[int, float, list[float], list[complex]]]:
    """Store rows ``(sweep, t, f_Hz, z_re, z_im)`` grouped by sweep, in sweep order."""
    grouped: dict[int, tuple[float, list[float], list[complex]]] = {}
    for sweep, t, f, re, im in rows:
        entry = grouped.setdefault(int(sweep), (float(t), [], []))
        entry[1].append(float(f))
        entry[2].append(complex(re, im))
    return [(k, *grouped[k]) for k in sorted(grouped)]


def _slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 2 or max(x) == min(x):
        return None
    return float(np.polyfit(np.asarray(x), np.asarray(y), 1)[0])


def sei_growth(steps: list[dict[str, Any]], end_reason: str, parameters: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    """Fit every EIS sweep (``rig.analysis.eis_fit``, each from the previous fit) and report
    R_SEI against time since the first sweep.

    Keys: ``sweeps`` (rows ``sweep, t_h, rs_ohm, r_sei_ohm, rct_ohm, cpe_sei_q, cpe_sei_n,
    cpe_dl_q, cpe_dl_n, warburg_sigma, residual``), ``r_sei_ohm`` and ``t_h`` (the fitted sweeps,
    as lists), ``r_sei_growth_ohm_per_h`` (least-squares slope), ``r_sei_growth_ohm_per_sqrt_h``
    (slope against √t, the law of diffusion-limited SEI growth), ``r_sei_ohm_cm2`` (last R_SEI x
    the cell's area, if known), ``failed_fits`` (rows ``sweep, reason``), ``reason``.
    """
    sweeps = _sweeps(extra.get("eis") or [])
    out: dict[str, Any] = {"sweeps": [], "r_sei_ohm": [], "t_h": [],
                           "r_sei_growth_ohm_per_h": None, "r_sei_growth_ohm_per_sqrt_h": None,
                           "r_sei_ohm_cm2": None, "failed_fits": [], "reason": ""}
    if not sweeps:
        out["reason"] = "no EIS sweeps recorded"
        return out
    t0 = sweeps[0][1]
    fits = fit_series((f, z) for _, _, f, z in sweeps)
    for (sweep, t, _, _), (fit, why) in zip(sweeps, fits):
        if fit is None:
            out["failed_fits"].append({"sweep": sweep, "reason": why})
            continue
        t_h = (t - t0) / 3600
        out["sweeps"].append({"sweep": sweep, "t_h": t_h, **fit.to_dict()})
        out["t_h"].append(t_h)
        out["r_sei_ohm"].append(fit.r_sei_ohm)
    t_h, r = out["t_h"], out["r_sei_ohm"]
    out["r_sei_growth_ohm_per_h"] = _slope(t_h, r)
    out["r_sei_growth_ohm_per_sqrt_h"] = _slope([math.sqrt(t) for t in t_h], r)
    area = getattr(extra.get("cell"), "area_cm2", None)
    if r and area:
        out["r_sei_ohm_cm2"] = r[-1] * area
    if not r:
        out["reason"] = "no sweep could be fitted"
    return out


# ---- gas ---------------------------------------------------------------------------------------

def _headspace(parameters: dict[str, Any], extra: dict[str, Any]) -> float | None:
    if extra.get("headspace_mL"):
        return float(extra["headspace_mL"])
    cell: Any = extra.get("cell")  # a CellModel or a row object: read by attribute
    if getattr(cell, "headspace_mL", None):
        return float(cell.headspace_mL)
    rows = parameters.get("cells") or []
    if len(rows) == 1 and rows[0].get("headspace_mL"):
        return float(rows[0]["headspace_mL"])
    return None


def gas_per_cycle_outcome(steps: list[dict[str, Any]], end_reason: str,
                          parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Gas per cycle from the holder's pressure and temperature (``rig.analysis.gas``).

    Keys: ``cycles`` (rows ``cycle, gas_umol, gas_uL_stp``), ``first_cycle_umol``,
    ``later_mean_umol``, ``total_umol``, ``total_uL_stp``, ``before_cycling_umol``,
    ``headspace_mL``, ``reason``.
    """
    headspace = _headspace(parameters, extra)
    empty: dict[str, Any] = {"cycles": [], "first_cycle_umol": None, "later_mean_umol": None,
             "total_umol": None, "total_uL_stp": None, "before_cycling_umol": None,
             "headspace_mL": headspace}
    if headspace is None:
        return {**empty, "reason": "no headspace volume for this cell"}
    try:
        t, p, temp = pt_from_sensor_rows(extra.get("sensors") or [])
    except ValueError as exc:
        return {**empty, "reason": str(exc)}
    bounds = cycle_bounds(steps)
    if not bounds:
        return {**empty, "reason": "no cycles in the steps"}
    return {**gas_per_cycle(t, p, temp, bounds, headspace), "reason": ""}


OUTCOMES = {
    "reservoir_ce": reservoir_ce,
    "per_cycle_ce": per_cycle_ce,
    "ccd": ccd,
    "failure_cycle": failure_cycle,
    "sei_growth": sei_growth,
    "gas_per_cycle": gas_per_cycle_outcome,
}
"""Every outcome a Plan may name (``protocols.model.OUTCOMES`` lists the same names)."""
