"""`rig run ... --detach`: the same run, in the background, in its own session.

The child is `rig run` again with the same options and a run id chosen here, started with
``start_new_session`` (setsid: no controlling terminal, so closing the terminal's SIGHUP never
reaches it), stdin from /dev/null, stdout and stderr to a log file beside the store. The parent
waits until the run is in the store (or the child failed to start it), prints the run id and how
to watch and stop it, and returns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rig.lifecycle import EXIT_OK

START_TIMEOUT_S = 120.0  # opening real instruments can take a while


def log_path(db: Path, run_id: str) -> Path:
    return db.parent / f"narig-{run_id}.log"


def child_argv(args: argparse.Namespace, db: Path, run_id: str) -> list[str]:
    argv = [sys.executable, "-m", "rig.cli", "run", str(Path(args.protocol).resolve()),
            "--db", str(db.resolve()), "--run-id", run_id, "--seed", str(args.seed)]
    if args.station:
        argv += ["--station", str(Path(args.station).resolve())]
    if args.clock:
        argv += ["--clock", args.clock]
    for ch in args.keithley:
        argv += ["--keithley", str(ch)]
    return argv


def detach_run(args: argparse.Namespace, db: Path) -> int:
    from rig.store import new_run_id, open_db

    open_db(db).close()  # a bad store is refused here, in the terminal, with exit 2
    run_id = new_run_id(time.time())
    log = log_path(db, run_id)
    with open(log, "ab") as out:
        child = subprocess.Popen(child_argv(args, db, run_id), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True)
    code = _wait_started(db, run_id, child)
    if code is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        for line in tail:
            print(line, file=sys.stderr)
        return code
    shown = f" --db {db}"
    print(f"run {run_id} started in the background (pid {child.pid}, its own session: closing "
          "this terminal does not stop it)")
    print(f"  watch it:  rig monitor{shown}    or: rig show {run_id}{shown}")
    print(f"  its log:   tail -f {log}")
    print(f"  stop it:   rig abort {run_id}{shown}    (or kill -TERM {child.pid}: outputs off, "
          f"resumable with rig resume {run_id}{shown})")
    return EXIT_OK


def _wait_started(db: Path, run_id: str, child: subprocess.Popen) -> int | None:
    """None once the run is in the store; the child's exit code if it ended first."""
    import sqlite3

    give_up = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < give_up:
        code = child.poll()
        try:
            conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=5)
            try:
                if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                    return None
            finally:
                conn.close()
        except sqlite3.Error:
            pass
        if code is not None:
            return code or 1
        time.sleep(0.1)
    return None  # still starting: it carries on; the log says how it goes
