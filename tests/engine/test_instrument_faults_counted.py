"""A potentiostat reply lost on the wire and recovered by the driver (it re-synchronises and
sends again) is counted in an event, as a sensor's retried attempts are (issue 9: "every fault
is in an event"; a lost EmStat script reply left no trace in the store)."""

from __future__ import annotations

import re

from rig.store import get_events
from tests.support.station_runs import cycling_plan, run, station_for


def test_every_lost_emstat_reply_the_driver_recovered_from_is_counted_in_an_event(tmp_path):
    from rig.sim.emstat import FaultProfile

    plan = cycling_plan(6)  # 12 steps: a script, its abort or end and output-off each
    station = station_for(plan, faults={"es4-ch0": FaultProfile(no_reply=0.15, seed=3)})
    sim = station.simulation.by_name["es4-ch0"]
    result, conn = run(plan, tmp_path / "s.db", station)
    lost = sim.faults_injected["no_reply"]
    with conn:
        events = get_events(conn, result.run_key)
    counted = sum(int(re.match(r"(\d+) lost or garbled repl", e["message"]).group(1))
                  for e in events if e["kind"] == "instrument_retried")
    assert result.status == "completed"
    assert lost >= 2  # the profile really dropped replies
    # every lost reply was recovered and counted (a reply late on a loaded machine is counted
    # too, so the events may count more than the simulator dropped, never fewer)
    assert counted >= lost
