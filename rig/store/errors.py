"""The store's errors: types a caller can act on, messages a person can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Anything the store refuses or fails to do."""


class SchemaTooNew(StoreError):
    """The database was written by a newer narig (its schema_version is above ours)."""


class WriterError(StoreError):
    """The writer thread failed to commit queued data; raised on the caller's next call."""


class WriterClosed(StoreError):
    """A write was attempted on a RunWriter after close()."""


class RunNotFound(StoreError, LookupError):
    """No run matches the id, prefix or key given."""


class AmbiguousRun(StoreError, LookupError):
    """A run id prefix matches more than one run."""


class BadStore(StoreError):
    """The path given as a store is not one narig can use: a directory, a device, a file that
    is not SQLite, another program's database, or a damaged one. Nothing was written to it."""
