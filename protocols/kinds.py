"""Every kind of protocol file, joined into ``ProtocolFile``: a union discriminated on ``kind``.

A new kind is a model with ``kind: Literal["..."]`` added to ``KINDS`` and an expander added to
``protocols.templates.EXPANDERS``.

Example:
    >>> from pydantic import TypeAdapter
    >>> m = TypeAdapter(ProtocolFile).validate_python({
    ...     "kind": "plating_stripping", "name": "demo",
    ...     "current_density": "1 mA/cm^2", "areal_capacity": "1 mAh/cm^2", "cycles": 2,
    ...     "record_interval": "10 s",
    ...     "cells": [{"channel": 0, "cell_id": "A", "type": "symmetric",
    ...                "area": "1.13 cm^2", "electrolyte": "1 M NaPF6 in diglyme"}]})
    >>> type(m).__name__
    'PlatingStrippingModel'
"""

from __future__ import annotations

from typing import Annotated, Union, get_args

from pydantic import Field

from protocols.model import TEMPLATE_KINDS, ProtocolBase
from protocols.steps import SequenceModel

KINDS: tuple[type[ProtocolBase], ...] = (*TEMPLATE_KINDS, SequenceModel)
"""Every implemented kind's model, templates first."""

ProtocolFile = Annotated[
    Union[KINDS],  # type: ignore[valid-type]  # noqa: UP007 (a union from a tuple, at runtime)
    Field(discriminator="kind")]
"""The whole file: one of ``KINDS``, chosen by its ``kind`` field."""


def kind_names() -> tuple[str, ...]:
    """The implemented kinds, as written in a file.

    >>> kind_names()[:2]
    ('plating_stripping', 'coulombic_efficiency')
    """
    return tuple(get_args(m.model_fields["kind"].annotation)[0] for m in KINDS)
