"""`rig service unit`: the systemd unit that keeps a station's runs going across crashes and
reboots (rig/deploy/narig@.service, docs/unattended.md), with ExecStart pointing at this
installation's `rig`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

UNIT_FILE = Path(__file__).with_name("deploy") / "narig@.service"
UNIT_RIG = "/opt/narig/venv/bin/rig"  # where the shipped unit expects `rig`


def add_parser(sub: Any) -> None:
    p = sub.add_parser("service", help="run narig under systemd: print its unit file",
                       description="The systemd unit narig@<station>.service: `rig service "
                       "unit | sudo tee /etc/systemd/system/narig@.service` (docs/unattended.md).")
    action = p.add_subparsers(dest="service_command", required=True)
    unit = action.add_parser("unit", help="print the templated unit, its ExecStart pointing at "
                             "this installation's rig")
    unit.add_argument("--rig", help="the rig executable the unit starts (default: this "
                      "installation's)")
    p.set_defaults(func=cmd_service)


def this_rig() -> str:
    """The `rig` of this installation: beside the interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).with_name("rig")
    if beside.is_file():
        return str(beside)
    return shutil.which("rig") or UNIT_RIG


def unit_text(rig: str | None = None) -> str:
    return UNIT_FILE.read_text(encoding="utf-8").replace(UNIT_RIG, rig or this_rig())


def cmd_service(args: argparse.Namespace) -> int:
    sys.stdout.write(unit_text(args.rig))
    return 0
