"""``rport.core.entrypoints`` (which keeps ``importlib.metadata`` out of the agent) finds what
``importlib.metadata.entry_points(group=...)`` finds: the same entry points with the same
distribution names and versions, in this environment and with distributions that shadow one
another, egg-info directories, comments, and a zip file on ``sys.path``."""

from __future__ import annotations

import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from rport.core import entrypoints


def reference(group: str) -> list[tuple[str, str, str | None, str | None]]:
    return sorted((ep.name, ep.value, ep.dist.name if ep.dist else None,
                   ep.dist.version if ep.dist else None)
                  for ep in metadata.entry_points(group=group))


def ours(group: str) -> list[tuple[str, str, str | None, str | None]]:
    return sorted((ep.name, ep.value, ep.dist_name, ep.dist_version)
                  for ep in entrypoints.entry_points(group))


def dist_info(root: Path, dirname: str, metadata_text: str, entry_points_text: str,
              metadata_file: str = "METADATA") -> None:
    info = root / dirname
    info.mkdir(parents=True)
    (info / metadata_file).write_text(metadata_text)
    (info / "entry_points.txt").write_text(entry_points_text)


@pytest.mark.parametrize("group", ["rport.agent", "rport.server", "console_scripts", "pytest11",
                                   "no.such.group"])
def test_installed_entry_points(group: str) -> None:
    assert entrypoints._plain_paths_only()  # this environment takes the lean path
    assert ours(group) == reference(group)
    if group.startswith("rport."):
        assert ours(group)  # the built-in plugins are there


def test_shadowing_egg_info_comments_and_loading(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    # The same distribution twice (names normalize alike): the first on sys.path wins.
    dist_info(first, "Demo_Plug-1.0.dist-info",
              "Metadata-Version: 2.1\nName: Demo_Plug\nVersion: 1.0\nSummary: x\n\nBody: no\n",
              "# a comment\n\n[demo.group]\n  alpha = os.path:join  \nbeta=json\n[other]\ngamma = x\n")
    dist_info(second, "demo.plug-2.0.dist-info",
              "Metadata-Version: 2.1\nName: demo.plug\nVersion: 2.0\n",
              "[demo.group]\nalpha = shadowed\n")
    # An egg-info directory: PKG-INFO, no version in its name.
    dist_info(second, "eggy.egg-info", "Metadata-Version: 1.1\nName: eggy\nVersion: 0.3\n",
              "[demo.group]\ndelta = os.path\n", metadata_file="PKG-INFO")
    # Metadata that does not say its version.
    dist_info(second, "bare-0.1.dist-info", "Metadata-Version: 2.1\nName: bare\n",
              "[demo.group]\nepsilon = os\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    assert entrypoints._plain_paths_only()
    found = ours("demo.group")
    assert found == reference("demo.group")
    assert ("alpha", "os.path:join", "Demo_Plug", "1.0") in found
    assert ("delta", "os.path", "eggy", "0.3") in found
    assert ("epsilon", "os", "bare", None) in found
    assert not any(value == "shadowed" for _, value, _, _ in found)
    loaded = {ep.name: ep.load() for ep in entrypoints.entry_points("demo.group")}
    import json
    import os.path
    assert loaded["alpha"] is os.path.join and loaded["beta"] is json and loaded["delta"] is os.path


def test_a_zip_on_sys_path_is_left_to_importlib_metadata(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-0.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 0.2\n")
        zf.writestr("zipped-0.2.dist-info/entry_points.txt", "[demo.zipped]\nzeta = os\n")
    monkeypatch.syspath_prepend(str(archive))
    assert not entrypoints._plain_paths_only()
    assert ours("demo.zipped") == reference("demo.zipped") == [("zeta", "os", "zipped", "0.2")]
