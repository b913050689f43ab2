"""``summary.md``: the run, each channel's cell, outcome and end reason, the per-cycle tables,
the EIS fits and gas per cycle, the figures (linked by relative path) and the ones skipped."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from rig.report.context import Channel, RunContext

if TYPE_CHECKING:
    from rig.report.build import Report
    from rig.report.eis import Sweep

MAX_ROWS = 200  # per-cycle rows per channel before only every Nth cycle is listed
MAH = 3.6


def _num(x: Any, nd: int, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x * scale:.{nd}f}"


def _utc(t: float | None) -> str:
    return "–" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _cell(text: Any) -> str:
    return str(text if text not in (None, "") else "–").replace("|", "\\|").replace("\n", " ")


def _outcome(ch: Channel) -> str:
    o = ch.outcome
    if not o:
        return "–"
    from rig.cli import outcome_text  # the same words as `rig show`

    return outcome_text(o)


def _cycle_table(ch: Channel) -> list[str]:
    rows = ch.cycles
    if not rows:
        return ["No plating/stripping cycles."]
    durations: dict[int, float] = {}
    for s in ch.steps:
        if s.get("half_cycle") in ("plate", "strip") and s.get("t_end") is not None:
            durations[s["cycle"]] = durations.get(s["cycle"], 0.0) + s["t_end"] - s["t_start"]
    every = max(1, math.ceil(len(rows) / MAX_ROWS))
    shown = [r for k, r in enumerate(rows) if k % every == 0 or k == len(rows) - 1]
    ce_any = any(ch.ce_meaningful(r["cycle"]) for r in rows)
    lines = []
    if every > 1:
        lines += [f"Every {every}th cycle of {len(rows)} and the last (all of them: "
                  "`rig show RUN --json`).", ""]
    if not ce_any:
        why = ("a symmetric cell" if ch.row.get("cell_type") == "symmetric"
               else "no strip ran to a potential cutoff")
        lines += [f"CE is not listed: each half-cycle passed a fixed charge ({why}), so it "
                  "would be 100 % by construction"
                  + ("; the reservoir-method CE is the channel's outcome above."
                     if (ch.outcome or {}).get("outcome") == "reservoir_ce" else "."), ""]
    head = ["cycle", "plated mAh", "stripped mAh"] + (["CE %"] if ce_any else []) + [
        "η plate mV", "η strip mV", "η plate end mV", "η strip end mV", "time h"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in shown:
        ce = (_num(r["ce"], 3, 100) if ch.ce_meaningful(r["cycle"]) else "n/m")
        cells = [str(r["cycle"]), _num(r["plated_C"], 4, 1 / MAH),
                 _num(r["stripped_C"], 4, 1 / MAH)] + ([ce] if ce_any else []) + [
            _num(r["eta_plate_V"], 1, 1e3), _num(r["eta_strip_V"], 1, 1e3),
            _num(r["eta_plate_end_V"], 1, 1e3), _num(r["eta_strip_end_V"], 1, 1e3),
            _num(durations.get(r["cycle"]), 2, 1 / 3600)]
        lines.append("| " + " | ".join(cells) + " |")
    if ce_any:
        lines += ["", "n/m: not meaningful (the strip passed a fixed charge, it did not run to "
                  "the cutoff)."]
    return lines


def _eis_table(ctx: RunContext, sweeps: list[Sweep]) -> list[str]:
    lines = ["| sweep | t h | Rs Ω | R_SEI Ω | Rct Ω | misfit % | note |",
             "|---:|---:|---:|---:|---:|---:|:--|"]
    for s in sweeps:
        t_h = _num(float(ctx.hours(s.t)), 2)
        if s.fit is None:
            lines.append(f"| {s.sweep} | {t_h} | – | – | – | – | "
                         f"fit failed: {_cell(s.reason)} |")
            continue

        def pm(v: float, e: float | None) -> str:
            return f"{v:.4g} ± {e:.2g}" if e is not None else f"{v:.4g}"
        lines.append(f"| {s.sweep} | {t_h} | {s.fit.rs_ohm:.3g} | "
                     f"{pm(s.fit.r_sei_ohm, s.r_sei_err)} | {pm(s.fit.rct_ohm, s.rct_err)} | "
                     f"{s.fit.residual * 100:.2f} | |")
    return lines


def _gas_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| cycle | gas µmol | gas µL STP |", "|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cycle']}{' (formation)' if r['cycle'] == 1 else ''} | "
                     f"{r['gas_umol']:.3f} | {r['gas_uL_stp']:.1f} |")
    return lines


def write_summary(ctx: RunContext, report: Report, fitted: dict[int, list[Sweep]]) -> None:
    from rig.report.figures import gas_rows

    r = ctx.run
    dur_h = (ctx.t_end - ctx.t0) / 3600
    out = [f"# {_cell(r.get('name'))}", "",
           f"Run `{r['id']}` ({r.get('kind')}): **{r['status']}**"
           + (f" — {r['end_reason']}" if r.get("end_reason") else "") + ".  ",
           f"Started {_utc(r.get('started_at'))}, {dur_h:.2f} h on the {r.get('clock')} clock; "
           f"station {_cell(ctx.station.get('name'))}; narig {_cell(r.get('software_version'))}.",
           "", "## Channels", "",
           "| ch | cell | type | area cm² | electrolyte | instrument | status | end reason | "
           "outcome |", "|---:|:--|:--|---:|:--|:--|:--|:--|:--|"]
    for ch in ctx.channels:
        row = ch.row
        out.append(f"| {ch.number} | {_cell(ch.cell_id)} | {_cell(row.get('cell_type'))} | "
                   f"{_num(row.get('area_cm2'), 2)} | {_cell(row.get('electrolyte'))} | "
                   f"{_cell(str(row.get('instrument') or '').split(' on ')[0])} | {_cell(row.get('status'))} | "
                   f"{_cell(row.get('end_reason'))} | {_cell(_outcome(ch))} |")
    alarms = [e for e in ctx.events if e["level"] in ("alarm", "error")]
    if alarms:
        out += ["", "## Alarms and errors", ""]
        for e in alarms:
            where = f"ch {e['channel']}" if e["channel"] is not None else "run"
            out.append(f"- {float(ctx.hours(e['t'])):.2f} h, {where}, {e['level']} "
                       f"`{e['kind']}`: {_cell(e['message'])}")
    out += ["", "## Figures", ""]
    section = None
    for f in report.figures:
        if f.section != section:
            section = f.section
            out += [f"### {section}", ""]
        out += [f"**{f.title}**", "", f"![{f.title}]({f.path.relative_to(report.out).as_posix()})",
                ""]
    if report.skipped:
        out += ["## Figures not made", ""]
        out += [f"- {s.section}, {s.title}: {s.reason}" for s in report.skipped]
        out.append("")
    out += ["## Per-cycle tables", ""]
    for ch in ctx.channels:
        out += [f"### channel {ch.number} · {_cell(ch.label)}", "", *_cycle_table(ch), ""]
    for ch in ctx.channels:
        if fitted.get(ch.number):
            out += [f"## Impedance fits, channel {ch.number} · {_cell(ch.label)}", "",
                    "R0-p(R1,CPE1)-p(R2,CPE2)-W1; R_SEI = R1, Rct = R2, ± one standard error; "
                    "misfit: relative RMS.", "", *_eis_table(ctx, fitted[ch.number]), ""]
    for ch in ctx.channels:
        rows = gas_rows(ctx, ch)
        if rows:
            out += [f"## Gas per cycle, channel {ch.number} · {_cell(ch.label)}", "",
                    f"Headspace {_num(ch.row.get('headspace_mL'), 2)} mL.", "",
                    *_gas_table(rows), ""]
    report.summary.write_text("\n".join(out), encoding="utf-8")
