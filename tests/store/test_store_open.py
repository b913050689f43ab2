"""Bad stores and paths: one clear line and exit 2, nothing written into a file that is not
narig's; stores created user-only; --clock values that can never run refused up front."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from rig.store import BadStore, open_db, open_reader
from tests.support.protocol_text import two_cells
from tests.support.rig_process import assert_no_traceback, rig


@pytest.fixture
def protocol(tmp_path: Path) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(two_cells("open", cycles=1))
    return p


def _foreign(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()
    return path


def _truncated(tmp_path: Path) -> Path:
    good = tmp_path / "good.db"
    open_db(good).close()
    data = good.read_bytes()
    bad = tmp_path / "truncated.db"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _bad_stores(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    (tmp_path / "adir").mkdir()
    return {"directory": tmp_path / "adir", "text file": text, "/dev/null": Path("/dev/null"),
            "foreign": _foreign(tmp_path / "foreign.db"), "truncated": _truncated(tmp_path)}


@pytest.mark.parametrize("command", ["run", "runs", "show", "pause", "abort", "resume"])
def test_every_bad_store_is_one_clear_line_and_exit_2(tmp_path, protocol, command, capsys):
    from rig.cli import main

    for what, db in _bad_stores(tmp_path).items():
        args = {"run": ("run", str(protocol)), "runs": ("runs",)}.get(command,
                                                                      (command, "latest"))
        code = main([*args, "--db", str(db)])  # an exception here would be the traceback
        err = capsys.readouterr().err
        assert code == 2, (what, err)
        assert len(err.strip().splitlines()) == 1, (what, err)
        assert err.startswith("rig: ") and str(db) in err, (what, err)


def test_a_bad_store_from_the_command_line_prints_no_traceback(tmp_path, protocol):
    out = rig("run", str(protocol), "--db", str(_truncated(tmp_path)))
    assert_no_traceback(out)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_narig_db_set_to_a_directory_is_one_clear_line(tmp_path, protocol):
    out = rig("run", str(protocol), env={**os.environ, "NARIG_DB": str(tmp_path)})
    assert_no_traceback(out)
    assert out.returncode == 2 and "is a directory" in out.stderr


def test_a_foreign_database_is_refused_and_left_untouched(tmp_path):
    db = _foreign(tmp_path / "theirs.db")
    before = db.read_bytes()
    with pytest.raises(BadStore, match="another program's SQLite database"):
        open_db(db)
    with pytest.raises(BadStore):
        open_reader(db)
    assert db.read_bytes() == before
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert tables == {"invoices"}


def test_a_store_failing_its_integrity_check_is_not_appended_to(tmp_path):
    db = tmp_path / "s.db"
    conn = open_db(db)
    conn.execute("INSERT INTO runs (id, status) VALUES ('r', 'completed')")
    conn.execute("CREATE TABLE pad (x TEXT)")
    conn.executemany("INSERT INTO pad VALUES (?)", [("x" * 500,) for _ in range(400)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    last = len(data) // page - 1
    for k in range(last * page, last * page + 12):  # a b-tree page's header, scribbled over
        data[k] = 0xA5
    db.write_bytes(bytes(data))
    with pytest.raises(BadStore, match="damaged|not a narig store"):
        open_db(db)
    assert bytes(data) == db.read_bytes()


def test_a_new_store_is_created_user_only_under_a_permissive_umask(tmp_path):
    old = os.umask(0o022)
    try:
        db = tmp_path / "new" / "narig.db"
        conn = open_db(db)
        conn.execute("INSERT INTO runs (id, status) VALUES ('r', 'running')")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files if f.exists()}
        conn.close()
    finally:
        os.umask(old)
    assert modes["narig.db"] == 0o600
    assert all(m == 0o600 for m in modes.values()), modes
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("spec", ["xnan", "xinf", "x0", "x1e-300", "x-5", "xfast", "warp"])
def test_clock_values_that_can_never_run_are_refused_before_anything_starts(tmp_path, protocol,
                                                                             spec):
    db = tmp_path / "s.db"
    out = rig("run", str(protocol), "--db", str(db), "--clock", spec, timeout=30)
    assert_no_traceback(out)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--clock" in out.stderr
    assert not db.exists()
