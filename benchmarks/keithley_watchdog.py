"""The instrument stays safe without its host (issue 10): SIGKILL the host, watch the 2450.

    python benchmarks/keithley_watchdog.py [--watchdog 10] [--interval 0.5]

A simulated Keithley 2450 on a real TCP socket and the wall clock; a separate host process
(the production driver, as the engine uses it) starts a galvanostatic step and reads it every
interval, and is SIGKILLed after a few reads. The simulator is then polled: how long did its
output stay on after the kill, against the bound the driver armed (``watchdog_bound_s``)? The
baseline beside it: the same host without the watchdog (``host_watchdog_s=None``), whose output
stays on (shown up to three bounds). Exits 1 if the watched output outlived its bound.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rig.clock import RealClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import SimulatedKeithley2450

ROOT = Path(__file__).resolve().parents[1]

HOST = """
import sys, time
from drivers.keithley2450 import Keithley2450
resource, watchdog, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
smu = Keithley2450(resource, host_watchdog_s=None if watchdog == "none" else float(watchdog))
smu.start_current(1.13e-3, interval, 1e6, -1.0, 1.0)
print(smu.watchdog_bound_s, flush=True)
while True:
    time.sleep(interval)
    smu.read_samples(0.0)
"""


def kill_and_watch(watchdog_s: float | None, interval_s: float, give_up_s: float) -> tuple[
        float | None, float | None]:
    """(seconds the output stayed on after SIGKILL or None if still on at give_up_s, bound)."""
    clock = RealClock()
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"])
    with SimulatedKeithley2450(cell, clock) as sim:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        host = subprocess.Popen(
            [sys.executable, "-c", HOST, sim.resource,
             "none" if watchdog_s is None else str(watchdog_s), str(interval_s)],
            stdout=subprocess.PIPE, text=True, env=env)
        assert host.stdout is not None
        line = host.stdout.readline().strip()
        bound = None if line in ("", "None") else float(line)
        time.sleep(3 * interval_s)  # a few reads
        if not sim.output_on:
            host.kill()
            raise SystemExit("the host never switched the output on")
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
        t_kill = time.monotonic()
        while sim.output_on and time.monotonic() - t_kill < give_up_s:
            time.sleep(0.02)
        on_for = time.monotonic() - t_kill
        return (None if sim.output_on else on_for), bound


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchdog", type=float, default=10.0, help="host_watchdog_s (s)")
    ap.add_argument("--interval", type=float, default=0.5, help="the host's read interval (s)")
    args = ap.parse_args()
    give_up = 3 * args.watchdog
    base, _ = kill_and_watch(None, args.interval, give_up)
    print(f"baseline (no watchdog): output {'still on' if base is None else 'off'} "
          f"{give_up:g} s after SIGKILL of the host" if base is None else
          f"baseline (no watchdog): output off {base:.2f} s after SIGKILL")
    on_for, bound = kill_and_watch(args.watchdog, args.interval, give_up)
    if on_for is None:
        print(f"watchdog {args.watchdog:g} s (bound armed {bound} s): output STILL ON "
              f"{give_up:g} s after SIGKILL")
        return 1
    print(f"watchdog {args.watchdog:g} s, reads every {args.interval:g} s (bound armed "
          f"{bound} s): output off {on_for:.2f} s after SIGKILL of the host")
    return 0 if bound is not None and on_for <= bound + 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
