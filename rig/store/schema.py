"""The store's schema and how a connection to it is opened.

One SQLite file per station, in WAL mode: one writer connection (the RunWriter's thread) and
any number of readers that never block it. Column types are the portable three (INTEGER, REAL,
TEXT) so a lab can mirror runs to PostgreSQL. Times: ``t``, ``started_at``, ``ended_at`` are
Unix seconds on the run's clock (virtual in simulation); ``heartbeat_at``, ``issued_at`` and
``handled_at`` are wall time.

``meta.schema_version`` records the schema; ``open_db`` creates it or migrates an older one.

    >>> conn = open_db(tmp / "narig.db")
    >>> conn.execute("PRAGMA journal_mode").fetchone()
    ('wal',)
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import platformdirs

from rig.store.errors import BadStore, SchemaTooNew

if TYPE_CHECKING:  # imported when a schema is created: readers need not pay for it
    import sqlite_utils

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

# interrupted: stopped by a signal with every output off, resumable (`rig resume`)
RUN_STATUSES = ("running", "completed", "ended_early", "aborted", "failed", "crashed",
                "interrupted")
CHANNEL_STATUSES = ("pending", "running", "paused", "held", "ended")
EVENT_LEVELS = ("info", "warning", "alarm", "error")
COMMANDS = ("pause", "resume", "abort")



class SampleRow(NamedTuple):
    """One stored sample of a channel, in the samples table's column order (SI: s, V, A, C).

    ``q`` is the step's charge so far. The engine builds every row it stores as one of these;
    it is a tuple, so the writer binds it unchanged.
    """

    t: float
    step: int
    cycle: int
    e: float
    i: float
    q: float


SAMPLE_COLUMNS = SampleRow._fields
STEP_COLUMNS = (
    "step", "cycle", "label", "kind", "half_cycle", "t_start", "t_end", "end_reason",
    "charge_C", "e_mean_abs_V", "e_end_V", "n_samples",
)

# table -> (columns, primary key, not-null columns)
TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...] | None, tuple[str, ...]]] = {
    "meta": ({"key": str, "value": str}, "key", ()),
    "runs": (
        {
            "key": int, "id": str, "name": str, "kind": str, "protocol_path": str,
            "protocol_text": str, "plan_json": str, "station_json": str,
            "software_version": str, "status": str, "end_reason": str, "started_at": float,
            "ended_at": float, "heartbeat_at": float, "pid": int, "host": str, "clock": str,
        },
        "key",
        ("id", "status"),
    ),
    "channels": (
        {
            "run_key": int, "channel": int, "cell_id": str, "cell_type": str,
            "area_cm2": float, "electrolyte": str, "headspace_mL": float, "notes": str,
            "instrument": str, "status": str, "end_reason": str, "outcome_json": str,
        },
        ("run_key", "channel"),
        ("status",),
    ),
    # 10^7 rows: no primary key of its own (the implicit rowid), one index.
    "samples": (
        {"run_key": int, "channel": int, "t": float, "step": int, "cycle": int,
         "e": float, "i": float, "q": float},
        None,
        (),
    ),
    "steps": (
        {
            "run_key": int, "channel": int, "step": int, "cycle": int, "label": str,
            "kind": str, "half_cycle": str, "t_start": float, "t_end": float,
            "end_reason": str, "charge_C": float, "e_mean_abs_V": float, "e_end_V": float,
            "n_samples": int,
        },
        ("run_key", "channel", "step"),
        (),
    ),
    "eis": (
        {"run_key": int, "channel": int, "sweep": int, "t": float, "f_Hz": float,
         "z_re": float, "z_im": float},
        None,
        (),
    ),
    "sensors": (
        {"run_key": int, "t": float, "sensor": str, "quantity": str, "value": float},
        None,
        (),
    ),
    "events": (
        {"id": int, "run_key": int, "channel": int, "t": float, "level": str, "kind": str,
         "message": str},
        "id",
        ("level",),
    ),
    "checkpoints": (
        {"run_key": int, "channel": int, "t": float, "state_json": str},
        ("run_key", "channel"),
        ("state_json",),
    ),
    "commands": (
        {"id": int, "run_key": int, "channel": int, "command": str, "issued_at": float,
         "handled_at": float, "result": str},
        "id",
        ("command",),
    ),
}

# (table, columns, unique)
INDEXES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("runs", ("id",), True),
    ("samples", ("run_key", "channel", "t"), False),
    ("eis", ("run_key", "channel", "sweep"), False),
    ("sensors", ("run_key", "sensor", "quantity", "t"), False),
    ("events", ("run_key",), False),
    ("commands", ("run_key", "handled_at"), False),
)

# from_version -> function that upgrades the schema to from_version + 1 (none yet).
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {}


def default_db_path() -> Path:
    """``$NARIG_DB`` if set, else ``<user data dir>/narig/narig.db``.

    >>> default_db_path()
    PosixPath('/home/ana/.local/share/narig/narig.db')
    """
    env = os.environ.get("NARIG_DB")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("narig", appauthor=False)) / "narig.db"


def open_db(path: str | os.PathLike) -> sqlite3.Connection:
    """A writing connection to the store at ``path``, creating the file and schema if missing.

    WAL mode, ``synchronous=NORMAL`` (a commit survives a process crash; a power cut may lose
    the last commits but never corrupts), a busy timeout, foreign keys off. The connection is
    in autocommit mode (``isolation_level=None``): callers issue BEGIN/COMMIT themselves.

    A new store is created user-only (file 0600, so its -wal/-shm too; a directory we create
    0700). Refused (``BadStore``, nothing written): a path that is not a regular file, a file
    that is not SQLite, another program's database, one failing ``PRAGMA quick_check``.
    """
    path = Path(path)
    check_store_path(path)
    if not path.exists():
        _create_private(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               cached_statements=256)
    except sqlite3.Error as exc:
        raise BadStore(f"{path}: cannot open the store: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        check_narig_db(conn, path, integrity=True)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def check_store_path(path: Path) -> None:
    """Refuse a path that can never be a store file (a directory, a device, /dev/null)."""
    if path.is_dir():
        raise BadStore(f"{path}: is a directory, not a store file (give a file path, e.g. "
                       f"{path / 'narig.db'})")
    if path.exists() and not path.is_file():
        raise BadStore(f"{path}: is not a regular file (a device or a pipe): not a store")
    if path.parent.exists() and not path.parent.is_dir():
        raise BadStore(f"{path}: {path.parent} is not a directory")


def _create_private(path: Path) -> None:
    """An empty store file readable by its owner only (and the directory, when we make it)."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass  # another process created it first
    except OSError as exc:
        raise BadStore(f"{path}: cannot create the store: {exc.strerror or exc}") from None


def check_narig_db(conn: sqlite3.Connection, path: Path, integrity: bool = False) -> None:
    """Refuse a file that is not SQLite, a database of another program, a damaged one."""
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if integrity and tables:
            bad = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if bad != ["ok"]:
                raise BadStore(f"{path}: the store is damaged (PRAGMA quick_check: "
                               f"{'; '.join(bad)[:300]}); nothing was written to it. Keep a "
                               "copy and try: sqlite3 FILE .recover")
    except sqlite3.DatabaseError as exc:
        raise BadStore(f"{path}: not a narig store ({exc})") from None
    if tables and "meta" not in tables:
        raise BadStore(f"{path}: is another program's SQLite database (tables "
                       f"{', '.join(sorted(tables)[:5])}), not a narig store; nothing was "
                       "written to it")


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The version recorded in ``meta``, or None for an empty database."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables and indexes if missing; migrate an older schema; refuse a newer one.

    Idempotent and safe when two processes open a new file at once (IF NOT EXISTS everywhere).
    """
    version = schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"this store has schema version {version}; this narig knows up to "
            f"{SCHEMA_VERSION}: upgrade narig to open it")
    import sqlite_utils

    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    if version is None:
        _create(db)
    elif version < SCHEMA_VERSION:
        _migrate(conn, db, version)


def _create(db: sqlite_utils.Database) -> None:
    for name, (columns, pk, not_null) in TABLES.items():
        db.table(name).create(columns, pk=pk, not_null=set(not_null), if_not_exists=True)
    for table, index_columns, unique in INDEXES:
        db.table(table).create_index(list(index_columns),
                                     index_name=f"ix_{table}_{'_'.join(index_columns)}",
                                     unique=unique, if_not_exists=True)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
               [str(SCHEMA_VERSION)])
    db.conn.commit()


def _migrate(conn: sqlite3.Connection, db: sqlite_utils.Database, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn) or version  # another process may have migrated
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db)
            version += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
