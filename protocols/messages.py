"""Pydantic's validation errors as sentences a person can act on.

Each error becomes ``(path, message)``: the path is the field as written in the file
(``cells[1].area``, ``steps[2].steps[0].until[1].then``), the message says what was given and
what is allowed. Pydantic puts the tag of a discriminated union into its error locations
(``("sequence", "steps", 2, "loop", "count")``); ``resolve`` takes those out again, so a path
never names something the user did not write.

Example:
    >>> from pydantic import TypeAdapter, ValidationError
    >>> from protocols.kinds import ProtocolFile
    >>> try:
    ...     TypeAdapter(ProtocolFile).validate_python({"kind": "plating_strip"})
    ... except ValidationError as e:
    ...     print(describe_all(e.errors())[0])  # doctest: +ELLIPSIS
    ('kind', '"plating_strip" is not one of plating_stripping, coulombic_efficiency, ...')
"""

from __future__ import annotations

import difflib
import json
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from protocols.kinds import KINDS, kind_names
from protocols.model import PLANNED_KINDS

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
    """A location as a dotted path with indices.

    >>> path_of(("cells", 1, "area"))
    'cells[1].area'
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every model class an annotation mentions (through lists, unions, Annotated, Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += [m for m in models_in(arg) if m not in found]
    return found


def _is_tag(model: type[BaseModel], name: str) -> bool:
    """Whether ``name`` is the model's discriminator: ``kind`` or ``type`` fixed to one value."""
    field = model.model_fields.get(name) if name in ("kind", "type") else None
    args = typing.get_args(field.annotation) if field else ()
    return len(args) == 1 and isinstance(args[0], str)


def tags_of(models: list[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` for a discriminated union of models (tag field ``kind`` or ``type``)."""
    tags = {}
    for model in models:
        for name in ("kind", "type"):
            if _is_tag(model, name):
                tags[typing.get_args(model.model_fields[name].annotation)[0]] = model
    return tags if len(tags) > 1 else {}


@dataclass(frozen=True)
class Where:
    """An error location resolved against the models."""

    loc: tuple[Any, ...]  # as the user wrote it: no union tags
    owner: type[BaseModel] | None  # the model that holds (or should hold) the last field
    field: FieldInfo | None  # the last named field, if it exists
    union: dict[str, type[BaseModel]]  # the tagged union the location ends at, if any


def resolve(loc: tuple[Any, ...]) -> Where:
    """Walk ``loc`` from the top of the file, dropping discriminator tags.

    >>> where = resolve(("sequence", "steps", 2, "loop", "steps", 0, "current", "until", 1,
    ...                  "then"))
    >>> path_of(where.loc), where.owner.__name__
    ('steps[2].steps[0].until[1].then', 'EndModel')
    """
    union = tags_of(list(KINDS))
    model: type[BaseModel] | None = None
    owner, field, clean = None, None, []
    for part in loc:
        if isinstance(part, int):
            clean.append(part)
            continue
        if union and part in union:
            model, union = union[part], {}
            continue
        clean.append(part)
        owner, field = model, (model.model_fields.get(part) if model else None)
        inner = models_in(field.annotation) if field else []
        union = tags_of(inner)
        model = inner[0] if len(inner) == 1 else None
    return Where(tuple(clean), owner, field, union)


def toml_value(value: Any) -> str:
    """A value as TOML source, for examples in messages.

    >>> toml_value({"time": "1 h", "then": "next"}), toml_value(["1 mA/cm^2"]), toml_value(2.0)
    ('{time = "1 h", then = "next"}', '["1 mA/cm^2"]', '2.0')
    """
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return show(value)


def _example(where: Where) -> str | None:
    if where.field is None or not where.field.examples:
        return None
    return toml_value(where.field.examples[0])


def _choices(where: Where, ctx: dict) -> str:
    args = typing.get_args(where.field.annotation) if where.field else ()
    literal = [a for a in args if typing.get_origin(a) is typing.Literal]
    if literal:
        args = typing.get_args(literal[0])
    if args and all(isinstance(a, str) for a in args):
        return ", ".join(args)
    return str(ctx.get("expected", "")).replace("'", "")


def _holds_tables(where: Where) -> bool:
    return bool(where.field and models_in(where.field.annotation))


def _tag_message(error: dict, where: Where) -> str:
    """An unknown or missing ``kind`` (top level) or step ``type``."""
    tag = error.get("ctx", {}).get("tag")
    if not where.loc:
        available = ", ".join(kind_names())
        if error["type"] == "union_tag_not_found":
            return f'missing; the file must say what it is, e.g. kind = "{kind_names()[0]}"'
        if tag in PLANNED_KINDS:
            return f'"{tag}" is not available yet (available: {available})'
        return f"{show(tag)} is not one of {available}"
    expected = ", ".join(where.union)
    if error["type"] == "union_tag_not_found":
        first = next(iter(where.union), "rest")
        return f'missing; each step says what it is, e.g. type = "{first}" (one of {expected})'
    return f"{show(tag)} is not one of {expected}"


def _unknown_field(where: Where) -> str:
    model = where.owner
    if model is None:
        return "unknown field"
    allowed = [n for n in model.model_fields if not _is_tag(model, n)]
    close = difflib.get_close_matches(str(where.loc[-1]), allowed, n=1)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown field ({hint}allowed: {', '.join(allowed)})"


def _missing(where: Where) -> str:
    loc = where.loc
    if loc and loc[-1] == "cells":
        return "missing; add one [[cells]] table per channel"
    if loc and loc[-1] == "steps":
        return 'missing; add the steps as [[steps]] tables, e.g. type = "rest"'
    example = _example(where)
    return f"missing; add e.g. {loc[-1]} = {example}" if example else "missing (required)"


def _list_message(kind: str, where: Where, given: str) -> str:
    name = where.loc[-1] if where.loc else ""
    if name == "until":
        return f'must be a table or a list of tables, e.g. until = {{time = "1 h"}} (got {given})'
    if kind == "too_short":
        return (f"at least one [[{name}]] table is needed" if _holds_tables(where)
                else "must not be empty")
    if _holds_tables(where):
        return f"must be a list of tables, [[{name}]] (got {given})"
    example = _example(where)
    return f"must be a list, e.g. {name} = {example} (got {given})" if example else (
        f"must be a list (got {given})")


def _message(error: dict, where: Where) -> str:
    kind, given = error["type"], show(error.get("input"))
    ctx = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in error.get("ctx", {}).items()}
    example = _example(where)
    eg = f", e.g. {example}" if example else ""
    quotes = " without quotes" if isinstance(error.get("input"), str) else ""
    simple = {
        "greater_than_equal": f"must be at least {ctx.get('ge')} (got {given})",
        "greater_than": f"must be greater than {ctx.get('gt')} (got {given})",
        "less_than_equal": f"must be at most {ctx.get('le')} (got {given})",
        "less_than": f"must be less than {ctx.get('lt')} (got {given})",
        "int_type": f"must be a whole number{quotes}{eg} (got {given})",
        "int_parsing": f"must be a whole number{eg} (got {given})",
        "int_from_float": f"must be a whole number{eg} (got {given})",
        "float_type": f"must be a number{quotes}{eg} (got {given})",
        "float_parsing": f"must be a number{eg} (got {given})",
        "bool_type": f"must be true or false{quotes} (got {given})",
        "string_type": f"must be text in quotes{eg} (got {given})",
        "string_too_short": "must not be empty",
        "string_too_long": (f"must be at most {ctx.get('max_length')} characters (got "
                            f"{len(str(error.get('input', '')))})"),
        "literal_error": f"{given} is not one of {_choices(where, ctx)}",
        "model_type": f"must be a table (got {given})",
        "dict_type": f"must be a table (got {given})",
        "model_attributes_type": f"must be a table (got {given})",
    }
    if kind in simple:
        return simple[kind]
    if kind in ("list_type", "too_short"):
        return _list_message(kind, where, given)
    if kind == "too_long":
        name = where.loc[-1] if where.loc else "list"
        items = f"[[{name}]] tables" if _holds_tables(where) else "items"
        return f"at most {ctx.get('max_length')} {items} (got {ctx.get('actual_length')})"
    if kind == "extra_forbidden":
        return _unknown_field(where)
    if kind == "missing":
        return _missing(where)
    msg = error["msg"].removeprefix("Value error, ")
    return msg if kind in ("quantity", "text") else f"{msg[:1].lower()}{msg[1:]} (got {given})"


def describe(error: dict) -> Problem:
    """One pydantic error (from ``ValidationError.errors()``) as ``(path, message)``."""
    where = resolve(tuple(error["loc"]))
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = path_of(where.loc)
        return (f"{path}.type" if path else "kind"), _tag_message(error, where)
    return path_of(where.loc), _message(error, where)


def describe_all(errors: list[dict]) -> list[Problem]:
    """Every error, in pydantic's order (the file's field order)."""
    return [describe(e) for e in errors]
