"""Build hook: ship the embedded Planetoid raw files (top-level ``data/Planetoid``) inside the package.

Everything else about the package is declared in ``pyproject.toml``.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EMBEDDED = Path(__file__).resolve().parent / "data" / "Planetoid"


class BuildWithEmbeddedData(build_py):
    """Copy ``data/Planetoid/<Name>/raw/*`` to ``gnnprune/_data/Planetoid/<Name>/raw/`` in the build."""

    def run(self):
        super().run()
        if not EMBEDDED.is_dir():
            raise FileNotFoundError(f"{EMBEDDED} is missing: the package ships Cora and CiteSeer from there")
        target = Path(self.build_lib) / "gnnprune" / "_data" / "Planetoid"
        for raw in sorted(EMBEDDED.glob("*/raw")):
            destination = target / raw.parent.name / "raw"
            destination.mkdir(parents=True, exist_ok=True)
            for file in sorted(raw.iterdir()):
                if file.is_file():
                    shutil.copyfile(file, destination / file.name)


setup(cmdclass={"build_py": BuildWithEmbeddedData})
