"""The agent's command line: its help is argparse's own, at every terminal width, although its
formatter finds the width without importing shutil (tests/agent/test_footprint.py)."""

from __future__ import annotations

import argparse

import pytest

from rport.agent.cli import build_parser


@pytest.mark.parametrize("columns", ["40", "80", "132", "", "junk", "-5"])
def test_help_is_argparses_own(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    parser = build_parser()
    ours = parser.format_help(), parser.format_usage()
    parser.formatter_class = argparse.HelpFormatter
    assert (parser.format_help(), parser.format_usage()) == ours
