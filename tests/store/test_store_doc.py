"""docs/store.md cannot drift: it documents every column of the real schema and every key of
`rig show --json` (and its outcomes) for a run of each kind; `rig export` and the data API are
described there too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rig.data import open_store
from rig.store import open_db, open_reader
from rig.store.frames import schema_columns
from tests.support.store_runs import make_store

DOC = (Path(__file__).resolve().parents[2] / "docs" / "store.md").read_text(encoding="utf-8")


def documented(section: str) -> set[str]:
    """The first-column names (`name`) of the markdown table under the heading ``section``."""
    m = re.search(rf"^###+ {re.escape(section)}\s*$(.*?)(?=^##)", DOC + "\n##", re.M | re.S)
    assert m, f"docs/store.md has no section {section!r}"
    return set(re.findall(r"^\| `([^`]+)` \|", m.group(1), re.M))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("doc") / "narig.db"
    return db, make_store(db)


def test_every_table_and_column_of_the_schema_is_documented(tmp_path):
    conn = open_db(tmp_path / "fresh.db")
    try:
        tables = schema_columns(conn)
    finally:
        conn.close()
    assert len(tables) >= 10
    for table, columns in tables.items():
        assert documented(f"`{table}`") == set(columns), table


def keys_of(rows: list[dict]) -> set[str]:
    return {k for r in rows for k in r}


def test_every_key_of_show_json_is_documented(store):
    db, ids = store
    seen: dict[str, set[str]] = {"run (top level)": set(), "channel": set(), "cycle": set(),
                                 "eis sweep": set(), "gas cycle": set(), "outcome": set()}
    with open_store(db) as s:
        for run_id in ids.values():
            summary = s.run(run_id).summary()
            seen["run (top level)"] |= set(summary)
            for ch in summary["channels"]:
                seen["channel"] |= set(ch)
                seen["cycle"] |= keys_of(ch["cycles"])
                seen["eis sweep"] |= keys_of(ch["eis"])
                seen["gas cycle"] |= keys_of(ch["gas"])
                seen["outcome"] |= set(ch["outcome"] or {})
    assert seen["eis sweep"] and seen["gas cycle"] and "formation_ce" in seen["outcome"]
    for section, keys in seen.items():
        missing = keys - documented(section)
        assert not missing, f"docs/store.md, {section}: undocumented keys {sorted(missing)}"


def test_the_alarm_objects_are_the_events_columns(store):
    db, ids = store
    with open_reader(db) as conn:
        events = schema_columns(conn)["events"]
    for col in events:
        assert f"`{col}`" in DOC.split("### run (top level)")[1].split("### channel")[0]


def test_the_export_formats_and_data_api_are_described():
    for word in ("--format bdf|csv|parquet", ".bdf.csv", ".bdf.parquet", ".metadata.json",
                 "Imaginary Impedance / ohm", "open_store", "iter_samples", "custom_measurements"):
        assert word in DOC, word
