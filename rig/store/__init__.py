"""The store: one SQLite file per station — schema, the batched writer, the readers.

The only module of narig that writes SQL. See ``schema`` (tables, ``open_db``), ``writer``
(``RunWriter``, the one writer of a run) and ``read`` (readers and the commands table).
"""

from rig.store.errors import (
    AmbiguousRun,
    BadStore,
    RunNotFound,
    SchemaTooNew,
    StoreError,
    WriterClosed,
    WriterError,
)
from rig.store.read import (
    get_channels,
    get_checkpoint,
    get_eis,
    get_events,
    get_run,
    get_samples,
    get_sensors,
    get_steps,
    latest_sample,
    list_runs,
    mark_command_handled,
    open_reader,
    pending_commands,
    resolve_run,
    send_command,
)
from rig.store.schema import (
    CHANNEL_STATUSES,
    COMMANDS,
    EVENT_LEVELS,
    RUN_STATUSES,
    SAMPLE_COLUMNS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    SampleRow,
    default_db_path,
    open_db,
)
from rig.store.writer import RunWriter, WriterStats, new_run_id

__all__ = [
    "CHANNEL_STATUSES",
    "COMMANDS",
    "EVENT_LEVELS",
    "RUN_STATUSES",
    "SAMPLE_COLUMNS",
    "SCHEMA_VERSION",
    "STEP_COLUMNS",
    "SampleRow",
    "AmbiguousRun",
    "BadStore",
    "RunNotFound",
    "RunWriter",
    "SchemaTooNew",
    "StoreError",
    "WriterClosed",
    "WriterError",
    "WriterStats",
    "default_db_path",
    "get_channels",
    "get_checkpoint",
    "get_eis",
    "get_events",
    "get_run",
    "get_samples",
    "get_sensors",
    "get_steps",
    "latest_sample",
    "list_runs",
    "mark_command_handled",
    "new_run_id",
    "open_db",
    "open_reader",
    "pending_commands",
    "resolve_run",
    "send_command",
]
