"""Config loading edge cases (the end-to-end CLI behaviour is in test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rport.agent.config import load_agent_config
from rport.core.confload import ConfigError
from rport.core.config import load_server_config


@pytest.mark.parametrize("text, problem", [
    ("server = 5\n", "server: must be a table"),
    ("api = 'x'\n", "api: must be a table"),
    ("[server]\nurl = 5\n", "server.url: expected a list of strings, got 5"),
])
def test_server_sections_of_the_wrong_shape_are_reported(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "rportd.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_server_config(path, environ={})
    assert problem in info.value.problems


def test_a_single_url_is_accepted_as_rport_does(tmp_path: Path) -> None:
    path = tmp_path / "rportd.conf"
    path.write_text('[server]\nurl = "https://rport.example.com:8080"\n')
    assert load_server_config(path, environ={}).server.url == ["https://rport.example.com:8080"]


def test_agent_section_of_the_wrong_shape_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rport.conf"
    path.write_text("client = []\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path, environ={})
    assert "client: must be a table" in info.value.problems
