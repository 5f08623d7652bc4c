"""Every registered command loads and documents itself (the registry is lazy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from guestcpu.cli.main import COMMANDS, HELP, cli


def test_every_command_has_a_summary() -> None:
    assert set(COMMANDS) == set(HELP)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {name}") or f" {name} " in result.output.splitlines()[0]


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.startswith("  ")
              and not line.startswith("   ")}
    assert listed == set(COMMANDS)


def test_docs_point_only_at_files_a_clone_has() -> None:
    """Every repository path docs/ names (``tests/…``, ``src/…``, ``docs/…``) exists in the clone."""
    import re

    root = Path(__file__).resolve().parent.parent
    for doc in sorted((root / "docs").glob("*.md")):
        for path in re.findall(r"`((?:tests|src|docs|tools|benchmarks)/[^`:\s]+)", doc.read_text()):
            assert (root / path).exists(), f"{doc.name} names {path}, which a clone does not have"
        assert "shared/research" not in doc.read_text(), doc.name
