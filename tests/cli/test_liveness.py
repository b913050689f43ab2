"""rig.lifecycle.run_is_alive: whether a 'running' run still has its engine — the test behind
`rig resume --all` (the service after a crash or a reboot), `rig abort` of a dead run and the
station lock. A pid is only a number: after a container restart or a quick reboot another
process can hold the dead engine's pid, and that must not keep the run from being taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from rig.lifecycle import HEARTBEAT_STALE_S, START_SLACK_S, run_is_alive
from tests.support.rig_process import wait_for


def running(pid: int, heartbeat_at: float) -> dict:
    return {"status": "running", "pid": pid, "host": socket.gethostname(),
            "heartbeat_at": heartbeat_at}


def test_an_engine_that_beat_just_now_and_still_runs_is_alive():
    assert run_is_alive(running(os.getpid(), time.time()))


def test_a_pid_now_held_by_a_process_started_after_the_last_heartbeat_is_not_the_engine():
    last_beat = time.time()
    # the engine died; time passes (beyond the slack, and the second /proc/stat rounds off)
    wait_for(lambda: time.time() > last_beat + START_SLACK_S + 1.5, timeout=30)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the heartbeat is still fresh, and a process with the recorded pid exists
        assert time.time() - last_beat < HEARTBEAT_STALE_S
        assert not run_is_alive(running(other.pid, last_beat))
    finally:
        other.kill()
        other.wait()


def test_an_engine_whose_process_is_gone_is_dead_at_once_and_a_stale_one_everywhere():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not run_is_alive(running(gone.pid, time.time()))
    elsewhere = {**running(1, time.time() - HEARTBEAT_STALE_S - 1), "host": "another-pc"}
    assert not run_is_alive(elsewhere)
    assert run_is_alive({**elsewhere, "heartbeat_at": time.time()})  # can't see its process
