"""Pydantic's validation errors as sentences a person can act on.

Each error becomes ``(path, message)``: the path is the field as written in the file
(``cells[1].area``), the message says what was given and what is allowed.

Example:
    >>> from pydantic import TypeAdapter, ValidationError
    >>> from protocols.model import ProtocolFile
    >>> try:
    ...     TypeAdapter(ProtocolFile).validate_python({"kind": "plating_strip"})
    ... except ValidationError as e:
    ...     print(describe_all(e.errors())[0])
    ('kind', '"plating_strip" is not one of plating_stripping')
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from protocols.model import KINDS, PLANNED_KINDS, kind_names

Problem = tuple[str, str]


def show(value: Any) -> str:
    """A value as the user wrote it in TOML.

    >>> show("5 V"), show(0), show(True), show({"a": 1})
    ('"5 V"', '0', 'true', 'a table')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def path_of(loc: tuple[Any, ...]) -> str:
    """A pydantic ``loc`` as a dotted path with indices.

    >>> path_of(("cells", 1, "area"))
    'cells[1].area'
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the fields at ``loc`` (``("cells", 0)`` -> CellModel)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field else None
    return model


def field_at(root: type[BaseModel], loc: tuple[Any, ...]) -> FieldInfo | None:
    """The FieldInfo of the field at ``loc``, if ``loc`` names one."""
    names = [i for i, part in enumerate(loc) if isinstance(part, str)]
    if not names:
        return None
    model = model_at(root, loc[:names[-1]])
    return model.model_fields.get(loc[names[-1]]) if model else None


def _example(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    field = field_at(root, loc)
    if field is None or not field.examples:
        return None
    return show(field.examples[0])


def _choices(root: type[BaseModel], loc: tuple[Any, ...], ctx: dict) -> str:
    field = field_at(root, loc)
    args = typing.get_args(field.annotation) if field else ()
    if args and all(isinstance(a, str) for a in args):
        return ", ".join(args)
    return str(ctx.get("expected", "")).replace("'", "")


def _kind_message(error: dict) -> str:
    tag = error.get("ctx", {}).get("tag")
    available = ", ".join(kind_names())
    if error["type"] == "union_tag_not_found":
        return f'missing; the file must say what it is, e.g. kind = "{kind_names()[0]}"'
    if tag in PLANNED_KINDS:
        return f'"{tag}" is not available yet (available: {available})'
    return f"{show(tag)} is not one of {available}"


def _unknown_field(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    model = model_at(root, loc[:-1])
    if model is None:
        return "unknown field"
    allowed = [n for n in model.model_fields if n != "kind"]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown field ({hint}allowed: {', '.join(allowed)})"


def _missing(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    if loc and loc[-1] == "cells":
        return "missing; add one [[cells]] table per channel"
    example = _example(root, loc)
    return f"missing; add e.g. {loc[-1]} = {example}" if example else "missing (required)"


def _message(error: dict, root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind, ctx, given = error["type"], error.get("ctx", {}), show(error.get("input"))
    example = _example(root, loc)
    eg = f", e.g. {example}" if example else ""
    quotes = " without quotes" if isinstance(error.get("input"), str) else ""
    simple = {
        "greater_than_equal": f"must be at least {ctx.get('ge')} (got {given})",
        "greater_than": f"must be greater than {ctx.get('gt')} (got {given})",
        "int_type": f"must be a whole number{quotes}{eg} (got {given})",
        "int_parsing": f"must be a whole number{eg} (got {given})",
        "int_from_float": f"must be a whole number{eg} (got {given})",
        "string_type": f"must be text in quotes{eg} (got {given})",
        "string_too_short": "must not be empty",
        "literal_error": f"{given} is not one of {_choices(root, loc, ctx)}",
        "list_type": f"must be a list of tables, [[{loc[-1] if loc else ''}]] (got {given})",
        "too_short": f"at least one [[{loc[-1] if loc else ''}]] table is needed",
        "model_type": f"must be a table (got {given})",
        "dict_type": f"must be a table (got {given})",
    }
    if kind in simple:
        return simple[kind]
    if kind == "extra_forbidden":
        return _unknown_field(root, loc)
    if kind == "missing":
        return _missing(root, loc)
    msg = error["msg"].removeprefix("Value error, ")
    return msg if kind == "quantity" else f"{msg[:1].lower()}{msg[1:]} (got {given})"


def describe(error: dict) -> Problem:
    """One pydantic error (from ``ValidationError.errors()``) as ``(path, message)``."""
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "kind", _kind_message(error)
    loc = tuple(error["loc"])
    root: type[BaseModel] = KINDS[0]
    by_kind = {name: model for name, model in zip(kind_names(), KINDS)}
    if loc and loc[0] in by_kind:  # a discriminated union puts the tag first
        root, loc = by_kind[loc[0]], loc[1:]
    return path_of(loc), _message(error, root, loc)


def describe_all(errors: list[dict]) -> list[Problem]:
    """Every error, in pydantic's order (the file's field order)."""
    return [describe(e) for e in errors]

