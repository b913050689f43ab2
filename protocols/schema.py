"""JSON Schema of protocol files, for editors (e.g. Even Better TOML / taplo).

Generated from the pydantic models, so it never drifts from what the loader accepts.
Quantities appear as strings with an example (``"1 mA/cm^2"``).

Example:
    >>> schema = json_schema()
    >>> schema["title"], "plating_stripping" in str(schema)
    ('narig protocol file', True)
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from protocols.kinds import ProtocolFile

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a protocol file, as a dict."""
    schema: dict = _drop_null(  # type: ignore[assignment]
        TypeAdapter(ProtocolFile).json_schema())
    return {"$schema": SCHEMA_URI, "title": "narig protocol file", **schema}


def _drop_null(node: object) -> object:
    """TOML has no null: an optional field is simply left out, so ``X | None`` becomes ``X``."""
    if isinstance(node, list):
        return [_drop_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _drop_null(v) for k, v in node.items()}
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        out.pop("anyOf")
        if out.get("default", 0) is None:
            out.pop("default")
        out = {**rest[0], **out} if len(rest) == 1 else {**out, "anyOf": rest}
    return out


def json_schema_text() -> str:
    """The schema as indented JSON text, ready to write to a ``.json`` file.

    >>> json_schema_text().startswith("{")
    True
    """
    return json.dumps(json_schema(), indent=2, ensure_ascii=False)
