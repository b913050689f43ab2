"""narig protocols: protocol files (TOML) validated and expanded into a Plan, plain data in SI.

    >>> from protocols import builtin_protocol, load_protocol, summarize
    >>> plan = load_protocol(builtin_protocol("plating_stripping")).plan
    >>> print(summarize(plan).splitlines()[0])
    plating_stripping: Na‖Na plating–stripping, glyme vs carbonate

Nothing here imports ``drivers`` or ``rig``: a protocol can be checked without any hardware.
"""

from protocols.load import (
    LoadedProtocol,
    ProtocolError,
    builtin_protocol,
    load_protocol,
    parse_protocol,
)
from protocols.plan import Plan
from protocols.schema import json_schema
from protocols.summary import plan_totals, summarize

__all__ = [
    "LoadedProtocol", "Plan", "ProtocolError", "builtin_protocol", "json_schema", "load_protocol",
    "parse_protocol", "plan_totals", "summarize",
]
