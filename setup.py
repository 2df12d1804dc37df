"""Package list for setuptools: the user's folders (core/, agent/, plugins/) become rport.core,
rport.agent and rport.plugins (see package-dir in pyproject.toml). setuptools' own package finder
cannot rename, so the list is computed here; everything else lives in pyproject.toml."""

from setuptools import find_packages, setup

ROOTS = ("core", "agent", "plugins")

setup(
    packages=[
        f"rport.{name}"
        for root in ROOTS
        for name in find_packages(where=".", include=[root, f"{root}.*"])
    ],
)
