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


def _tag_field(model: type[BaseModel], names: tuple[str, ...]) -> str | None:
    """The model's discriminator among ``names``: a field fixed to one string value."""
    for name in names:
        field = model.model_fields.get(name)
        args = typing.get_args(field.annotation) if field else ()
        if len(args) == 1 and isinstance(args[0], str):
            return name
    return None


def tags_of(models: list[type[BaseModel]], names: tuple[str, ...] = ("kind", "type")
            ) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` for a discriminated union of models (tag field one of ``names``)."""
    tags = {}
    for model in models:
        name = _tag_field(model, names)
        if name is not None:
            tags[typing.get_args(model.model_fields[name].annotation)[0]] = model
    return tags if len(tags) > 1 else {}


@dataclass(frozen=True)
class Where:
    """An error location resolved against the models."""

    loc: tuple[Any, ...]  # as the user wrote it: no union tags
    owner: type[BaseModel] | None  # the model that holds (or should hold) the last field
    field: FieldInfo | None  # the last named field, if it exists
    union: dict[str, type[BaseModel]]  # the tagged union the location ends at, if any


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


class Translator:
    """Pydantic errors of one kind of file as ``(path, message)``.

    ``top`` is the model of the whole file, or the tagged union of models it can be. The class
    attributes and the two hooks (``tag_message``, ``missing``) are what differs between files;
    everything else (locations without union tags, the messages per error type) is shared. A
    custom error (``PydanticCustomError``) of a type in ``verbatim`` is already a sentence for
    people; when its context has a ``field``, that sub-field is added to the path.
    """

    tag_fields: tuple[str, ...] = ("kind", "type")  # the fields that can be a union's tag
    examples_name_the_field = False  # "e.g. port = 5" rather than "e.g. 5"
    allowed_lists_tags = False  # whether "unknown field (allowed: ...)" lists the tag field
    verbatim: frozenset[str] = frozenset({"quantity", "text"})

    def __init__(self, top: type[BaseModel] | list[type[BaseModel]]) -> None:
        self.top = top

    # ---- where
    def resolve(self, loc: tuple[Any, ...]) -> Where:
        """Walk ``loc`` from the top of the file, dropping discriminator tags."""
        model: type[BaseModel] | None = None
        union: dict[str, type[BaseModel]] = {}
        if isinstance(self.top, list):
            union = tags_of(self.top, self.tag_fields)
        else:
            model = self.top
        owner: type[BaseModel] | None = None
        field: FieldInfo | None = None
        clean: list[Any] = []
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
            union = tags_of(inner, self.tag_fields)
            model = inner[0] if len(inner) == 1 else None
        return Where(tuple(clean), owner, field, union)

    def tag_of(self, union: dict[str, type[BaseModel]]) -> str:
        """The name of a union's tag field (``kind``, ``type``, ``driver``...)."""
        for model in union.values():
            name = _tag_field(model, self.tag_fields)
            if name is not None:
                return name
        return self.tag_fields[0]

    # ---- what
    def describe(self, error: Any) -> Problem:
        """One pydantic error (from ``ValidationError.errors()``) as ``(path, message)``."""
        where = self.resolve(tuple(error["loc"]))
        path = path_of(where.loc)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tag = self.tag_of(where.union or self._top_union())
            return (f"{path}.{tag}" if path else tag), self.tag_message(error, where)
        if error["type"] in self.verbatim:
            sub = (error.get("ctx") or {}).get("field") or ""
            return (f"{path}.{sub}" if sub and path else path or sub), error["msg"]
        return path, self._message(error, where)

    def describe_all(self, errors: list[Any]) -> list[Problem]:
        """Every error, in pydantic's order (the file's field order)."""
        return [self.describe(e) for e in errors]

    def _top_union(self) -> dict[str, type[BaseModel]]:
        return tags_of(self.top, self.tag_fields) if isinstance(self.top, list) else {}

    # ---- hooks
    def tag_message(self, error: Any, where: Where) -> str:
        """An unknown or missing union tag."""
        choices = ", ".join(where.union or self._top_union())
        if error["type"] == "union_tag_not_found":
            return f"missing; say which, one of {choices}"
        return f"{show((error.get('ctx') or {}).get('tag'))} is not one of {choices}"

    def missing(self, where: Where) -> str:
        """A required field that is not there."""
        name = where.loc[-1] if where.loc else ""
        if self._holds_tables(where) and self._is_list(where):
            return f"missing; add at least one [[{name}]] table"
        example = self._example(where)
        return f"missing; add e.g. {example}" if example else "missing (required)"

    # ---- the shared messages
    def _example(self, where: Where) -> str | None:
        """The field's first example as TOML (``name = value`` when examples name the field)."""
        if where.field is None or not where.field.examples:
            return None
        value = toml_value(where.field.examples[0])
        return f"{where.loc[-1]} = {value}" if where.loc else value

    def _short_example(self, where: Where) -> str | None:
        if where.field is None or not where.field.examples:
            return None
        value = toml_value(where.field.examples[0])
        return f"{where.loc[-1]} = {value}" if self.examples_name_the_field else value

    @staticmethod
    def _holds_tables(where: Where) -> bool:
        return bool(where.field and models_in(where.field.annotation))

    @staticmethod
    def _is_list(where: Where) -> bool:
        origin = typing.get_origin(where.field.annotation) if where.field else None
        return origin is list

    def _choices(self, where: Where, ctx: dict[str, Any]) -> str:
        args = typing.get_args(where.field.annotation) if where.field else ()
        literal = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literal:
            args = typing.get_args(literal[0])
        if args and all(isinstance(a, str) for a in args):
            return ", ".join(args)
        return str(ctx.get("expected", "")).replace("'", "")

    def _unknown_field(self, where: Where) -> str:
        model = where.owner
        if model is None:
            return "unknown field"
        tag = None if self.allowed_lists_tags else _tag_field(model, self.tag_fields)
        allowed = [n for n in model.model_fields if n != tag]
        close = difflib.get_close_matches(str(where.loc[-1]), allowed, n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        return f"unknown field ({hint}allowed: {', '.join(allowed)})"

    def _list_message(self, kind: str, where: Where, given: str) -> str:
        name = where.loc[-1] if where.loc else ""
        if kind == "too_short":
            return (f"at least one [[{name}]] table is needed" if self._holds_tables(where)
                    else "must not be empty")
        if self._holds_tables(where):
            return f"must be a list of tables, [[{name}]] (got {given})"
        example = self._example(where)
        return f"must be a list, e.g. {example} (got {given})" if example else (
            f"must be a list (got {given})")

    def _bool_message(self, error: Any, where: Where, given: str) -> str:
        # "without quotes" only helps when the text was "true" or "false"
        value = error.get("input")
        quotes = " without quotes" if value in ("true", "false") else ""
        example = self._short_example(where) if self.examples_name_the_field else None
        return f"must be true or false{quotes}{f', e.g. {example}' if example else ''} (got {given})"

    def _message(self, error: Any, where: Where) -> str:
        kind, given = error["type"], show(error.get("input"))
        ctx = {k: (f"{v:g}" if isinstance(v, float) else v)
               for k, v in (error.get("ctx") or {}).items()}
        example = self._short_example(where)
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
            "string_type": f"must be text in quotes{eg} (got {given})",
            "string_too_short": "must not be empty",
            "string_too_long": (f"must be at most {ctx.get('max_length')} characters (got "
                                f"{len(str(error.get('input', '')))})"),
            "literal_error": f"{given} is not one of {self._choices(where, ctx)}",
            "model_type": f"must be a table (got {given})",
            "dict_type": f"must be a table (got {given})",
            "model_attributes_type": f"must be a table (got {given})",
        }
        if kind in simple:
            return simple[kind]
        if kind == "bool_type":
            return self._bool_message(error, where, given)
        if kind in ("list_type", "too_short"):
            return self._list_message(kind, where, given)
        if kind == "too_long":
            name = where.loc[-1] if where.loc else "list"
            items = f"[[{name}]] tables" if self._holds_tables(where) else "items"
            return f"at most {ctx.get('max_length')} {items} (got {ctx.get('actual_length')})"
        if kind == "extra_forbidden":
            return self._unknown_field(where)
        if kind == "missing":
            return self.missing(where)
        msg = str(error["msg"]).removeprefix("Value error, ")
        return f"{msg[:1].lower()}{msg[1:]} (got {given})"


class ProtocolTranslator(Translator):
    """Protocol files: the top-level ``kind``, steps tagged by ``type``."""

    def tag_message(self, error: Any, where: Where) -> str:
        tag = (error.get("ctx") or {}).get("tag")
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

    def missing(self, where: Where) -> str:
        loc = where.loc
        if loc and loc[-1] == "cells":
            return "missing; add one [[cells]] table per channel"
        if loc and loc[-1] == "steps":
            return 'missing; add the steps as [[steps]] tables, e.g. type = "rest"'
        example = self._example(where)
        return f"missing; add e.g. {example}" if example else "missing (required)"

    def _list_message(self, kind: str, where: Where, given: str) -> str:
        if where.loc and where.loc[-1] == "until":
            return f'must be a table or a list of tables, e.g. until = {{time = "1 h"}} (got {given})'
        return super()._list_message(kind, where, given)


PROTOCOL = ProtocolTranslator(list(KINDS))


def resolve(loc: tuple[Any, ...]) -> Where:
    """Walk a protocol-file ``loc`` from the top, dropping discriminator tags.

    >>> where = resolve(("sequence", "steps", 2, "loop", "steps", 0, "current", "until", 1,
    ...                  "then"))
    >>> path_of(where.loc), where.owner.__name__
    ('steps[2].steps[0].until[1].then', 'EndModel')
    """
    return PROTOCOL.resolve(loc)


def describe(error: dict) -> Problem:
    """One pydantic error of a protocol file as ``(path, message)``."""
    return PROTOCOL.describe(error)


def describe_all(errors: list[Any]) -> list[Problem]:
    """Every error of a protocol file, in pydantic's order (the file's field order)."""
    return PROTOCOL.describe_all(errors)
