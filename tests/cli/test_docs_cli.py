"""Docs that cannot drift (as sqlite-utils' test_commands_are_documented): every `rig`
subcommand and every one of its options appears in docs/cli.md, and the links in the README and
docs/ point at files that exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from rig.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"


def _commands(parser: argparse.ArgumentParser, prefix: str = "rig"
              ) -> list[tuple[str, argparse.ArgumentParser]]:
    """(`rig sub sub`, its parser) for every (nested) subcommand."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
                found.extend(_commands(sub, f"{prefix} {name}"))
    return found


COMMANDS = _commands(_parser())


def _section(doc: str, command: str) -> str:
    """The heading that names ``command`` and the text under it that names ``command`` (up to the next heading)."""
    m = re.search(rf"^#+ `{re.escape(command)}(?:`| )[^\n]*\n.*?(?=^#+ |\Z)", doc, re.M | re.S)
    return m.group(0) if m else ""


def test_the_cli_reference_lists_subcommands():
    assert {"rig run", "rig resume", "rig protocols", "rig sim serve"} <= {c for c, _ in COMMANDS}


@pytest.mark.parametrize("command,parser", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_subcommand_and_option_is_documented(command, parser):
    doc = CLI_DOC.read_text(encoding="utf-8")
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) and \
            f"`{command}" not in doc:
        pytest.fail(f"docs/cli.md does not mention {command}")
    section = _section(doc, command)
    assert section, f"docs/cli.md has no heading for `{command}`"
    missing = [opt for a in parser._actions for opt in a.option_strings
               if opt.startswith("--") and opt not in ("--help",) and a.help != argparse.SUPPRESS
               and f"`{opt}" not in section]
    missing += [a.dest for a in parser._actions if not a.option_strings
                and not isinstance(a, argparse._SubParsersAction)
                and a.dest.upper() not in section]
    assert not missing, f"docs/cli.md's `{command}` section does not document {missing}"


def _links(md: Path) -> list[str]:
    text = md.read_text(encoding="utf-8")
    return [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
            if not re.match(r"[a-z]+:", m)]


@pytest.mark.parametrize("md", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_links_in_the_docs_point_at_files_in_the_repository(md):
    broken = [link for link in _links(md) if not (md.parent / link).exists()]
    assert not broken, f"{md.relative_to(ROOT)} links to missing files: {broken}"


def test_protocols_doc_says_an_unexpected_named_end_is_an_early_end():
    """docs/protocols.md once promised that every `end:<name>` completes the run (exit 0); the
    engine ends such a run early unless `expected_ends` lists the name
    (tests/engine/test_engine_steps.py::test_a_time_end_takes_its_then_and_an_unexpected_named_end_is_an_early_end)."""
    text = (ROOT / "docs" / "protocols.md").read_text(encoding="utf-8")
    assert "even if `<name>` is not in `expected_ends`" not in text
    assert "`ended_early` (exit 1)" in text
    assert 'expected_ends = ["cutoff_not_reached"]' in text
