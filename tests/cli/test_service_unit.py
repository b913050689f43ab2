"""The systemd unit narig ships (rig/deploy/narig@.service, printed by `rig service unit`) and what
it relies on: systemd accepts it, the commands it names are real `rig` commands, docs/unattended.md
shows that very unit, and what it runs at boot — `rig resume --all --station FILE` — takes over
exactly the runs of its station that a crash or power cut (SIGKILL) or a stop (SIGTERM) left,
and starts an engine that dies under it again."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from rig.lifecycle import EXIT_INTERRUPTED
from rig.service import UNIT_FILE, UNIT_RIG, unit_text
from tests.support.rig_process import ROOT, count, query, rig, rig_cmd, stop, wait_for
from tests.support.protocol_text import GLYME, two_cells

# the waits inside give the clear messages; this is only the last resort
pytestmark = pytest.mark.timeout(600)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here (apt install systemd)")
SPEED = 100


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def directives(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit_lines(text) if line.startswith(f"{key}=")]


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    unit = tmp_path / "narig@glovebox-a.service"  # an instance: a template alone names nothing
    unit.write_text(text)
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_unit_rig_service_unit_prints(tmp_path):
    out = rig("service", "unit")
    assert out.returncode == 0, out.stderr
    executable = directives(out.stdout, "ExecStart")[0].split()[0]
    assert os.access(executable, os.X_OK), f"ExecStart names {executable}: not this rig"
    checked = verify(tmp_path, out.stdout)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), \
        checked.stdout + checked.stderr
    # the check can fail: systemd names a misspelt directive and a missing executable
    broken = out.stdout.replace("Restart=on-failure", "Restart=on-falure").replace(
        "ExecStart=" + directives(out.stdout, "ExecStart")[0].split()[0], "ExecStart=/no/rig")
    bad = verify(tmp_path, broken)
    assert "on-falure" in bad.stdout + bad.stderr and "/no/rig" in bad.stdout + bad.stderr


def test_the_units_commands_are_real_rig_commands_with_real_options(tmp_path):
    """Every Exec* line starts the shipped `rig` with a subcommand and options the parser
    knows; ExecStart itself runs (on an empty store it finds nothing to resume, exit 0)."""
    from rig.cli import _parser

    text = UNIT_FILE.read_text()
    execs = [(k, v) for k in ("ExecStart", "ExecStartPre", "ExecStop", "ExecStopPost",
                              "ExecReload") for v in directives(text, k)]
    assert [k for k, _ in execs].count("ExecStart") == 1
    db = tmp_path / "glovebox-a.db"
    for key, line in execs:
        argv = shlex.split(line.replace("%i", "glovebox-a"))
        assert argv[0] == UNIT_RIG, f"{key} does not start rig: {line}"
        try:
            _parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{key}: `{line}` is not a rig command line")
        if key == "ExecStart":
            env = {**os.environ, "NARIG_DB": str(db)}  # what Environment=NARIG_DB= sets
            out = rig(*argv[1:], env=env)
            assert out.returncode == 0 and "nothing to resume" in out.stdout, out.stderr
    assert directives(text, "Environment")[0] == "NARIG_DB=/var/lib/narig/%i.db"
    assert directives(text, "SuccessExitStatus") == [str(EXIT_INTERRUPTED)]
    assert directives(text, "KillSignal") == ["SIGTERM"]


def test_docs_unattended_shows_the_unit_that_ships():
    doc = (ROOT / "docs" / "unattended.md").read_text()
    shown = re.search(r"```ini\n(.*?)```", doc, re.S)
    assert shown, "docs/unattended.md shows no unit"
    assert unit_lines(shown.group(1)) == unit_lines(UNIT_FILE.read_text())
    assert "rig service unit" in doc and "rig/deploy/narig@.service" in doc


def test_rig_service_unit_points_execstart_at_the_rig_given():
    assert directives(unit_text("/srv/lab/venv/bin/rig"), "ExecStart") == [
        "/srv/lab/venv/bin/rig resume --all --station /etc/narig/%i.toml"]


# ---- what the unit runs ------------------------------------------------------------------------
@pytest.fixture
def station(tmp_path):
    """Two cells' instruments served by this process (they outlive every engine, as real ones
    do, so what an engine left on can be watched): a station file, and the potentiostats."""
    from protocols import load_protocol
    from rig.clock import RealClock
    from rig.sim.serve import SimulatedInstruments, builtin_station_data

    both = tmp_path / "both.toml"
    both.write_text(two_cells("station", cells=(("G1", GLYME), ("G2", GLYME))))
    plan = load_protocol(both).plan
    sims = SimulatedInstruments(builtin_station_data(plan), plan, RealClock(speed=SPEED), 0)
    try:
        file = tmp_path / "glovebox-a.toml"
        file.write_text(sims.text)
        yield file, [s for s in sims.simulators if hasattr(s, "output_on")]
    finally:
        sims.close()


def one_cell(tmp_path: Path, channel: int, cycles: int) -> Path:
    p = tmp_path / f"ch{channel}.toml"
    text = two_cells(f"cell on ch{channel}", q="0.02 mAh/cm^2", cycles=cycles,
                     cells=((f"G{channel + 1}", GLYME),))
    p.write_text(text.replace("channel = 0", f"channel = {channel}"))
    return p


def start_and_stop(db: Path, args: list[str], sig: signal.Signals, enough) -> str:
    """`rig run ARGS`, stopped with ``sig`` once ``enough()``; the new run's id."""
    before = count(db, "SELECT count(*) FROM runs")
    proc = subprocess.Popen(rig_cmd("run", *args, "--db", str(db)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: count(db, "SELECT count(*) FROM runs") > before and enough(),
                 timeout=120, every=0.01)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    return query(db, "SELECT id FROM runs ORDER BY key DESC LIMIT 1")[0][0]


def status_of(db: Path, run_id: str) -> str:
    return query(db, "SELECT status FROM runs WHERE id = ?", run_id)[0][0]


def test_resume_all_of_a_station_takes_over_its_crashed_and_interrupted_runs_only(
        station, tmp_path):
    """After a power cut (here SIGKILL: no cleanup, the instrument left driving its cell) and a
    `systemctl stop` (SIGTERM), the unit's command at boot resumes both runs of its station —
    and not a run of another station — and they complete with every output off."""
    file, potentiostats = station
    db = tmp_path / "glovebox-a.db"
    on = "--station", str(file), "--clock", f"x{SPEED}"

    def driving(ch: int):
        return lambda: potentiostats[ch].output_on and count(
            db, "SELECT count(*) FROM steps WHERE run_key = (SELECT max(key) FROM runs)") >= 1

    crashed = start_and_stop(db, [str(one_cell(tmp_path, 0, 4)), *on], signal.SIGKILL,
                             driving(0))
    assert potentiostats[0].output_on  # what a crash leaves: nobody switched it off
    stopped = start_and_stop(db, [str(one_cell(tmp_path, 1, 4)), *on], signal.SIGTERM,
                             driving(1))
    # killed, never resumed: long, so the kill always lands mid-run
    elsewhere = start_and_stop(db, [str(one_cell(tmp_path, 0, 5000))], signal.SIGKILL,
                               lambda: count(db, "SELECT count(*) FROM samples WHERE run_key ="
                                                 " (SELECT max(key) FROM runs)") > 20)
    assert [status_of(db, r) for r in (crashed, stopped, elsewhere)] == [
        "running", "interrupted", "running"]

    out = rig("resume", "--all", "--station", str(file), "--db", str(db), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming run {crashed}" in out.stdout and f"resuming run {stopped}" in out.stdout
    assert elsewhere not in out.stdout
    assert [status_of(db, r) for r in (crashed, stopped, elsewhere)] == [
        "completed", "completed", "running"]
    assert [p.output_on for p in potentiostats] == [False, False]
    for run in (crashed, stopped):
        cycles = query(db, "SELECT count(*) FROM steps s JOIN runs r ON s.run_key = r.key "
                           "WHERE r.id = ? AND s.label = 'strip'", run)[0][0]
        assert cycles == 4


def test_resume_all_starts_an_engine_that_dies_under_it_again_and_stops_like_systemctl_stop(
        station, tmp_path):
    """The service's main process outlives its engines: one killed without cleanup (the OOM
    killer, a crash) is started again for its run at once, not when every other run ends; and
    SIGTERM to the main process (`systemctl stop`) stops the engines safely: exit 4, which the
    unit counts as success, the run 'interrupted' with its outputs off."""
    file, potentiostats = station
    db = tmp_path / "glovebox-a.db"
    run_id = start_and_stop(
        db, [str(one_cell(tmp_path, 0, 400)), "--station", str(file), "--clock", f"x{SPEED}"],
        signal.SIGKILL, lambda: count(db, "SELECT count(*) FROM steps") >= 1)
    engines = [query(db, "SELECT pid FROM runs")[0][0]]
    service = subprocess.Popen(rig_cmd("resume", "--all", "--station", str(file), "--db",
                                       str(db)), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        def new_engine() -> int | None:
            (pid, status), = query(db, "SELECT pid, status FROM runs")
            return pid if pid not in engines and status == "running" and \
                potentiostats[0].output_on else None
        engines.append(wait_for(new_engine, timeout=120, every=0.01))
        os.kill(engines[-1], signal.SIGKILL)
        engines.append(wait_for(new_engine, timeout=120, every=0.01))
        service.send_signal(signal.SIGTERM)
        stdout, stderr = service.communicate(timeout=120)
    finally:
        stop(service)
    assert f"the engine of run {run_id} died (killed by SIGKILL); resuming it again (1 of 3)" \
        in stdout
    assert service.returncode == EXIT_INTERRUPTED, stdout + stderr
    assert status_of(db, run_id) == "interrupted"
    assert potentiostats[0].output_on is False
