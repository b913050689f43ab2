"""`rig protocols`: list the built-in protocol files, print one, or copy one to edit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rig.library import builtin_protocols, copy_protocol

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("protocols", help="the built-in protocol library: list, show, copy",
                       description="The built-in protocols. Run one by name "
                       "(`rig run plating_stripping`), or copy it, edit it, check it with "
                       "`rig validate FILE` and run the copy.")
    action = p.add_subparsers(dest="protocols_command")
    action.add_parser("list", help="each built-in protocol's name and what it answers")
    show = action.add_parser("show", help="print a built-in protocol file")
    show.add_argument("name")
    copy = action.add_parser("copy", help="copy a built-in protocol file to edit (never "
                             "overwrites)")
    copy.add_argument("name")
    copy.add_argument("dest", nargs="?", default=".",
                      help="file or directory to write (default: the current directory)")
    p.set_defaults(func=cmd_protocols)


def cmd_protocols(args: argparse.Namespace) -> int:
    command = args.protocols_command or "list"
    library = {p.name: p for p in builtin_protocols()}
    if command == "list":
        width = max(len(n) for n in library)
        for p in library.values():
            print(f"{p.name:<{width}}  {p.purpose}")
        print("\nrun one: rig run NAME    copy one to edit: rig protocols copy NAME [DEST]")
        return EXIT_OK
    name = args.name.removesuffix(".toml")
    if command == "show":
        if name not in library:
            print(f"rig: protocols show: no built-in protocol {args.name!r}; there are: "
                  f"{', '.join(library)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        sys.stdout.write(library[name].path.read_text(encoding="utf-8"))
        return EXIT_OK
    try:
        target = copy_protocol(name, Path(args.dest))
    except (ValueError, OSError) as exc:
        print(f"rig: protocols copy: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {target}; edit it, then: rig validate {target} && rig run {target}")
    return EXIT_OK
