"""How long an instrument's output stays on after its host dies: SIGKILL `rig run`, watch the
simulated instruments (`rig sim serve` prints each output switching on or off), print the time
from the kill to the output going off beside the bound the station file sets.

    python benchmarks/bench_host_loss.py [--bounds 5,60] [--keithley/--no-keithley]

For each bound: a station file (the built-in simulated station for a two-cell plating protocol
recorded every second, channel 1 on a Keithley 2450 unless --no-keithley) with
``[interlocks] host_watchdog`` set to it, served by `rig sim serve` on the real clock; `rig run`
on it; once every output is on, the run is killed with SIGKILL (no cleanup of any kind runs) and
the simulators are watched for up to the bound + 15 s. Everything runs in real time: the 60 s
default takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols import load_protocol  # noqa: E402
from rig.sim.serve import builtin_station_data, dumps_toml  # noqa: E402

LINE = re.compile(r"rig sim serve: (\S+) output (on|off) at t=([0-9.]+)")
MARGIN_S = 15.0   # how long past the bound to keep watching an output that stays on


def protocol_text() -> str:
    """plating_stripping, two cells, recorded every second (a chunk must hold a sample)."""
    text = (ROOT / "protocols/plating_stripping.toml").read_text(encoding="utf-8")
    text = text.replace('record_interval = "10 s"', 'record_interval = "1 s"')
    text = text.replace("cycles = 200", "cycles = 2")
    cells = text.split("\n[[cells]]\n")
    return "\n[[cells]]\n".join(cells[:3])   # the preamble and the first two cells


class Served:
    """`rig sim serve` in the background, its output switches collected as they come."""

    def __init__(self, station: Path, protocol: Path, out: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rig.cli", "sim", "serve", str(station), "--protocol",
             str(protocol), "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.events: list[tuple[str, bool, float]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = LINE.search(line)
            if m:
                with self.lock:
                    self.events.append((m.group(1), m.group(2) == "on", float(m.group(3))))

    def state(self) -> dict[str, tuple[bool, float]]:
        """Each instrument's latest switch: (on, t)."""
        with self.lock:
            return {name: (on, t) for name, on, t in self.events}

    def off_after(self, name: str, t: float) -> float | None:
        """When the instrument's output went off after t, if it did."""
        with self.lock:
            return next((s for n, on, s in self.events if n == name and not on and s >= t), None)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(what: str, ok, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_host_loss: gave up waiting for {what}")
        time.sleep(0.05)


def measure(bound_s: float, keithley: bool, work: Path) -> list[tuple[str, float | None, float]]:
    """[(instrument, seconds its output stayed on after the kill or None, seconds watched)]."""
    protocol = work / "protocol.toml"
    protocol.write_text(protocol_text(), encoding="utf-8")
    plan = load_protocol(protocol).plan
    data = builtin_station_data(plan, keithley_channels=(1,) if keithley else ())
    data["interlocks"]["host_watchdog"] = f"{bound_s:g} s"
    station, served_file = work / f"station-{bound_s:g}.toml", work / f"served-{bound_s:g}.toml"
    station.write_text(dumps_toml(data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    served = Served(station, protocol, served_file, env)
    run = None
    try:
        wait_for("the served station file", served_file.exists, 30)
        names = [i["name"] for i in data["instruments"]]
        log = (work / f"run-{bound_s:g}.log").open("w")
        run = subprocess.Popen(
            [sys.executable, "-m", "rig.cli", "run", str(protocol), "--station",
             str(served_file), "--db", str(work / f"run-{bound_s:g}.db")], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        wait_for("every output on", lambda: all(served.state().get(n, (False, 0))[0]
                                                for n in names), 60)
        time.sleep(min(2.0, bound_s / 3))   # somewhere inside a chunk, not at its start
        t_kill = time.time()
        run.send_signal(signal.SIGKILL)
        run.wait()
        watch = bound_s + MARGIN_S
        deadline = time.monotonic() + watch
        while time.monotonic() < deadline:
            if all(served.off_after(n, t_kill) is not None for n in names):
                break
            time.sleep(0.05)
        results = []
        for n in names:
            off = served.off_after(n, t_kill)
            results.append((n, None if off is None else off - t_kill, watch))
        return results
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        served.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bounds", default="5,60", help="host_watchdog values to try, in s")
    ap.add_argument("--keithley", action=argparse.BooleanOptionalAction, default=True,
                    help="put channel 1 on a simulated Keithley 2450 (default: yes)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-host-loss-"))
    print(f"{'host_watchdog':>14} {'instrument':>12} {'output on after SIGKILL':>24}")
    for bound in (float(b) for b in args.bounds.split(",")):
        for name, on_s, watched in measure(bound, args.keithley, work):
            if on_s is None:
                shown, verdict = f"still on after {watched:.0f} s", "OVER the bound"
            else:
                shown = f"{on_s:.2f} s"
                verdict = "within the bound" if on_s <= bound else "OVER the bound"
            print(f"{bound:>12g} s {name:>12} {shown:>24}  ({verdict})", flush=True)


if __name__ == "__main__":
    main()
