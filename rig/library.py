"""The built-in protocol library from the command line: `rig protocols`, and protocol arguments
given by name (`rig run plating_stripping`) as well as by path.

A name is looked up only when no file of that name exists, so a user's own `plating_stripping`
file in the working directory always wins over the packaged one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from protocols.load import BUILTIN_DIR


@dataclass(frozen=True)
class BuiltinProtocol:
    name: str  # the file's stem: what `rig run NAME` takes
    title: str  # the file's `name` field
    purpose: str  # the first comment line: what it answers
    path: Path


def builtin_protocols() -> list[BuiltinProtocol]:
    """Every packaged protocol file, by name.

    >>> [p.name for p in builtin_protocols()][:2]
    ['coulombic_efficiency', 'critical_current_density']
    """
    found = []
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        first = _purpose(text)
        try:
            title = str(tomllib.loads(text).get("name", path.stem))
        except tomllib.TOMLDecodeError:  # a packaged file is valid; never let one hide the rest
            title = path.stem
        found.append(BuiltinProtocol(path.stem, title, first, path))
    return found


def _purpose(text: str) -> str:
    """The first sentence of the file's opening comment."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#") or not line.lstrip("# ").strip():
            break
        words.append(line.lstrip("# ").strip())
    first = " ".join(words)
    return first.split(". ")[0].rstrip(".") + "." if first else ""


def resolve_protocol(arg: str) -> Path:
    """A protocol argument as a path: an existing file as given, else a built-in by name.

    >>> resolve_protocol("plating_stripping").name
    'plating_stripping.toml'
    >>> resolve_protocol("no/such.toml")
    PosixPath('no/such.toml')
    """
    given = Path(arg)
    if given.exists():
        return given
    stem = given.name.removesuffix(".toml")
    if given.parent == Path(".") and (BUILTIN_DIR / f"{stem}.toml").is_file():
        return BUILTIN_DIR / f"{stem}.toml"
    return given  # loading it reports "cannot read the file" with the path the user typed


def copy_protocol(name: str, dest: Path) -> Path:
    """Write the built-in protocol ``name`` to ``dest`` (a file, or a directory to put it in).

    Never overwrites: a lab's edited copy is worth more than ours.
    """
    names = {p.name: p for p in builtin_protocols()}
    stem = name.removesuffix(".toml")
    if stem not in names:
        raise ValueError(f"no built-in protocol {name!r}; there are: {', '.join(sorted(names))}")
    target = dest / f"{stem}.toml" if dest.is_dir() else dest
    if target.exists():
        raise ValueError(f"{target} exists already: not overwriting it")
    target.write_text(names[stem].path.read_text(encoding="utf-8"), encoding="utf-8")
    return target
